"""``config/ops.yaml``: how we operate. Every section is optional with safe defaults."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from portalops.validate import Strict, parse_model
from portalops.yamlsrc import load_yaml

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class Category(StrEnum):
    """Art. 11.2: what must be backed up every day."""

    CONFIG = "config"
    LOGS = "logs"
    CODE = "code"
    DATABASE = "database"


class Repository(Strict):
    name: Name
    url: str  # a local directory, or s3://bucket/prefix
    endpoint: str | None = None  # S3-compatible stores
    region: str | None = None
    object_lock_days: Annotated[int, Field(ge=0)] = 0
    attempts: Annotated[int, Field(ge=1, le=20)] = 8  # S3: tries per request before giving up


class Retention(Strict):
    last: Annotated[int, Field(ge=0)] = 3
    daily: Annotated[int, Field(ge=0)] = 14
    weekly: Annotated[int, Field(ge=0)] = 8
    monthly: Annotated[int, Field(ge=0)] = 12
    yearly: Annotated[int, Field(ge=0)] = 3


class FilesSource(Strict):
    name: Name
    kind: Literal["files"]
    category: Category
    paths: Annotated[list[Path], Field(min_length=1)]
    exclude: list[str] = []

    @field_validator("paths")
    @classmethod
    def _absolute(cls, paths: list[Path]) -> list[Path]:
        for path in paths:
            if not path.is_absolute():
                raise ValueError(f"'{path}' is not an absolute path")
        return paths


Source = FilesSource  # the daily-backup issue adds postgres, mariadb, command and ssh


class Backup(Strict):
    writer_key: Path | None = None
    identity: Path | None = None
    repositories: list[Repository] = []
    retention: Retention = Retention()
    sources: list[Source] = []

    @model_validator(mode="after")
    def _unique_names(self) -> Backup:
        for what, names in (
            ("repositories", [r.name for r in self.repositories]),
            ("sources", [s.name for s in self.sources]),
        ):
            seen = set()
            for name in names:
                if name in seen:
                    raise ValueError(f"two {what} are named '{name}'; names must be unique")
                seen.add(name)
        return self


class Metrics(Strict):
    textfile_dir: Path | None = None  # node_exporter's textfile collector directory


class Monitor(Strict):
    resolve: list[str] = []  # curl-style "host:port:address" pins
    ca_file: Path | None = None


class Drill(Strict):
    rto_seconds: Annotated[float, Field(gt=0)] = 4 * 3600


class Oncall(Strict):
    pass


class Settings(Strict):
    """The whole of ops.yaml."""

    state_dir: Path = Path("/var/lib/portal-ops")
    metrics: Metrics = Metrics()
    backup: Backup = Backup()
    monitor: Monitor = Monitor()
    drill: Drill = Drill()
    oncall: Oncall = Oncall()


def load_settings(path: Path | None) -> Settings:
    """Load ``path``; ``None`` means no file: every section at its default."""
    if path is None:
        return Settings()
    return parse_model(Settings, load_yaml(path))
