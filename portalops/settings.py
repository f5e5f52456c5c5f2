"""``config/ops.yaml``: how we operate. Every section is optional with safe defaults.

Each package owns the models of its section (backup.config, monitors.config, oncall.config);
this module only assembles them and checks what spans sections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import model_validator

from portalops.backup.config import Backup, Drill
from portalops.backup.sources import database_kinds
from portalops.core.metrics_config import Metrics
from portalops.core.validate import LocatedError, Strict, parse_model
from portalops.core.yamlsrc import load_yaml
from portalops.monitors.config import Monitor
from portalops.oncall.config import Oncall


class Settings(Strict):
    """The whole of ops.yaml."""

    state_dir: Path = Path("/var/lib/portal-ops")
    """Where portal-ops keeps its state: the backup status JSON and run lock, file caches,
    check state, drill reports, the prober's page baselines, the on-call database and its
    secrets."""
    metrics: Metrics = Metrics()
    """Prometheus metrics files (node_exporter's textfile collector)."""
    backup: Backup = Backup()
    """Article 11 backups: keys, repositories, retention, schedule and what is backed up."""
    monitor: Monitor = Monitor()
    """Article 19 probes of the portals (``ops monitor``, docs/monitoring.md)."""
    drill: Drill = Drill()
    """Restore drills (``ops drill``): where they restore, as whom, and what they check."""
    oncall: Oncall = Oncall()
    """Article 19.3 paging (``ops oncall``, docs/oncall.md): people, rotations, escalation,
    delivery and the Alertmanager config."""

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


REFERENCE_TITLE = "Configuration reference: ops.yaml"
REGENERATE = "ops config schema --markdown > docs/configuration.md"
_INTRO = """\
Every key of the operations config, generated from the models that validate it (the same
text as the JSON Schema of `ops config schema`). Every section is optional, with the
defaults below; unknown keys are errors (usually typos). `config/ops.example.yaml` shows
every key with an example value; check a file with `ops config check`. A command validates
only the sections it reads (`ops backup list` the top-level keys and `backup`, `ops backup
run` those, `backup` and `metrics`, `ops oncall who` the top-level keys and `oncall`), so
`ops config check` is the one that checks every section.

Durations are seconds or Prometheus-style text: `30s`, `5m`, `2h`, `3d`, `1h30m`. Times of
day are written `"HH:MM"`, quoted (YAML reads an unquoted 12:30 as a number). Passwords
never go in this file (PGPASSFILE, option files, the environment); on-call channels hold
secrets, so keep the file mode 0600 where it has them.
"""


def settings_schema() -> dict[str, Any]:
    """The JSON Schema of ops.yaml (``ops config schema``)."""
    from portalops.core import schemadoc  # noqa: PLC0415 - the schema's, not every load's

    return schemadoc.json_schema(Settings)


def settings_reference() -> str:
    """docs/configuration.md: every key of ops.yaml, with its type, default and description."""
    from portalops.core import schemadoc  # noqa: PLC0415 - the schema's, not every load's

    return schemadoc.markdown(settings_schema(), REFERENCE_TITLE, _INTRO, REGENERATE)


def load_settings(path: Path | None) -> Settings:
    """Load ``path``; ``None`` means no file: every section at its default."""
    if path is None:
        return Settings()
    return parse_model(Settings, load_yaml(path))
