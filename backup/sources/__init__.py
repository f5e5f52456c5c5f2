"""Source kinds besides plain files (Art. 11.2: databases, device and OS configuration).

Each module has ``produce(source, sink) -> stats``: it writes its streams into the sink and
returns what the snapshot records in ``stats`` (e.g. table row counts).
"""

from __future__ import annotations

import importlib
from typing import Any, cast

from portalops.backup.archive.streams import Producer

_MODULES = {
    "postgres": "portalops.backup.sources.postgres",
    "mariadb": "portalops.backup.sources.mariadb",
    "command": "portalops.backup.sources.command",
    "ssh": "portalops.backup.sources.ssh",
}


def producer_for(kind: str) -> Producer:
    # Imported on use: a host backing up only files never loads the database clients.
    module = importlib.import_module(_MODULES[kind])
    return cast(Producer, module.produce)


def describe_source(source: Any) -> str:
    """What a snapshot lists under ``paths`` for a stream source: where it came from."""
    kind = str(source.kind)
    if kind == "postgres":
        databases = source.databases
        names = ",".join(databases) if isinstance(databases, list) else "all"
        return f"postgres:{source.dsn or 'local'} {names}"
    if kind == "mariadb":
        where = source.socket or f"{source.host}:{source.port}"
        return f"mariadb:{where}"
    if kind == "command":
        return "command:" + " ".join(source.command)
    if kind == "ssh":
        return f"ssh:{source.user}@{source.host}:{source.port} {source.command}"
    return kind
