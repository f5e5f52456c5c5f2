"""``config/ops.yaml``: how we operate. Every section is optional with safe defaults.

Each package owns the models of its section (backup.config, monitors.config, oncall.config);
this module only assembles them and checks what spans sections."""

from __future__ import annotations

from pathlib import Path

from pydantic import model_validator

from portalops.backup.config import Backup, Drill
from portalops.backup.sources import database_kinds
from portalops.core.validate import LocatedError, Strict, parse_model
from portalops.core.yamlsrc import load_yaml
from portalops.monitors.config import Monitor
from portalops.oncall.config import Oncall


class Metrics(Strict):
    textfile_dir: Path | None = None  # node_exporter's textfile collector directory


class Settings(Strict):
    """The whole of ops.yaml."""

    state_dir: Path = Path("/var/lib/portal-ops")
    metrics: Metrics = Metrics()
    backup: Backup = Backup()
    monitor: Monitor = Monitor()
    drill: Drill = Drill()
    oncall: Oncall = Oncall()

    @model_validator(mode="after")
    def _smoke_sources(self) -> Settings:
        kinds = {s.name: s.kind for s in self.backup.sources}
        for i, query in enumerate(self.drill.smoke):
            kind = kinds.get(query.source)
            where = ("drill", "smoke", i, "source")
            if kind is None:
                raise LocatedError(
                    where,
                    f"names source '{query.source}', which backup.sources does not define "
                    f"({', '.join(kinds) or 'none'})",
                )
            databases = database_kinds()
            if kind not in databases:
                raise LocatedError(
                    where,
                    f"source '{query.source}' is a {kind} source; smoke queries run on "
                    f"{_either(databases)} sources only",
                )
        return self


def _either(kinds: tuple[str, ...]) -> str:
    """'postgres and mariadb', 'a, b and c'."""
    return " and ".join(filter(None, (", ".join(kinds[:-1]), kinds[-1])))


def load_settings(path: Path | None) -> Settings:
    """Load ``path``; ``None`` means no file: every section at its default."""
    if path is None:
        return Settings()
    return parse_model(Settings, load_yaml(path))
