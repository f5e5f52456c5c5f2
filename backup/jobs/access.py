"""Open the configured repositories with whatever keys this host holds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from portalops.backup.config import Backup
from portalops.backup.config import Repository as RepoSettings
from portalops.backup.repo.backends import open_storage
from portalops.backup.repo.keys import Identity, WriterKey, load_identity, load_writer_key
from portalops.backup.repo.repository import Repository
from portalops.core.errors import BadInput


@dataclass(frozen=True)
class Keys:
    writer: WriterKey | None
    identity: Identity | None


def load_keys(backup: Backup) -> Keys:
    writer = load_writer_key(backup.writer_key) if backup.writer_key else None
    identity = load_identity(backup.identity) if backup.identity else None
    return Keys(writer, identity)


def select(backup: Backup, names: list[str] | None, config_file: Path | None) -> list[RepoSettings]:
    """The repositories named (all configured ones if none), in config order."""
    where = str(config_file) if config_file else "the config"
    if not backup.repositories:
        raise BadInput(
            f"{where}: backup.repositories is empty; add one, e.g. "
            "{name: local, url: /var/backups/portal-ops}"
        )
    if not names:
        return list(backup.repositories)
    known = {r.name: r for r in backup.repositories}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadInput(
            f"unknown repository {', '.join(map(repr, unknown))}; {where} defines "
            f"{', '.join(known)}"
        )
    return [known[n] for n in names]


def open_repository(settings: RepoSettings, keys: Keys) -> Repository:
    return Repository.open(open_storage(settings), keys.writer, keys.identity, settings)
