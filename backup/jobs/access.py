"""Open the configured repositories with whatever keys this host holds; pick the sources,
repositories and snapshots a command names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portalops.backup.config import Backup
from portalops.backup.config import Repository as RepoSettings
from portalops.backup.repo.backends import open_storage
from portalops.backup.repo.keys import Identity, WriterKey, load_identity, load_writer_key
from portalops.backup.repo.repository import DamagedObject, Repository
from portalops.backup.repo.snapshot import SnapshotRef
from portalops.backup.sources import Source
from portalops.core.errors import BadInput


@dataclass(frozen=True)
class Keys:
    writer: WriterKey | None
    identity: Identity | None
    recipients: tuple[str, ...] = ()  # backup.recipients: keys an identity-only host may use


def load_keys(backup: Backup) -> Keys:
    writer = load_writer_key(backup.writer_key) if backup.writer_key else None
    identity = load_identity(backup.identity) if backup.identity else None
    return Keys(writer, identity, tuple(backup.recipients))


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
    return [known[n] for n in dict.fromkeys(names)]  # each once, as first named


def open_repository(settings: RepoSettings, keys: Keys) -> Repository:
    return Repository.open(
        open_storage(settings), keys.writer, keys.identity, settings, keys.recipients
    )


def select_sources(
    backup: Backup, names: list[str] | None, config_file: Path | None, job: str
) -> list[Source]:
    """The sources named (all configured ones if none), in config order; ``job`` says what
    an empty list would leave undone ("back up", "drill")."""
    where = config_file or "the config"
    known = [s.name for s in backup.sources]
    if not known:
        raise BadInput(f"{where}: backup.sources is empty: nothing to {job}")
    unknown = [n for n in names or () if n not in known]
    if unknown:
        raise BadInput(
            f"unknown source {', '.join(map(repr, unknown))}; {where} defines {', '.join(known)}"
        )
    return [s for s in backup.sources if not names or s.name in names]


def resolve_snapshot(repo: Repository, wanted: str, source: str | None) -> SnapshotRef:
    """``latest`` (of ``source``; never a future-dated snapshot) or an id prefix of at least
    four characters, in ``repo``; anything else is bad input naming what there is."""
    refs = repo.snapshots(source)
    if wanted == "latest":
        every = refs
        refs = [r for r in refs if not r.future_dated]
        if not refs:
            raise BadInput(
                f"repository {repo.name} has no snapshot"
                + (f" of source '{source}'" if source else "")
                + (
                    f" but {len(every)} future-dated one(s), which 'latest' never picks "
                    "('ops backup check' names them; give an id to restore one anyway)"
                    if every
                    else ""
                )
            )
        sources = {r.source for r in refs}
        if source is None and len(sources) > 1:
            raise BadInput(
                f"'latest' of which source? repository {repo.name} has "
                f"{', '.join(sorted(sources))}; add --source"
            )
        return refs[-1]
    matches = [r for r in refs if r.id.startswith(wanted.lower())]
    if len(wanted) < 4 or not matches:
        raise BadInput(
            f"no snapshot {wanted!r} in repository {repo.name}; 'ops backup list' shows them"
        )
    if len(matches) > 1:
        raise BadInput(f"snapshot id {wanted!r} is ambiguous in {repo.name}; give more characters")
    return matches[0]


@dataclass(frozen=True)
class Initialised:
    repository: str
    location: str
    id: str
    created: bool  # False: it existed already, nothing was written
    protection: str | None  # S3: the bucket's retention and write mode, as checked


def init_repositories(
    backup: Backup, names: list[str] | None, config_file: Path | None
) -> list[Initialised]:
    """Create each named repository (all if none) that does not exist yet, with the writer
    key; on S3, check the bucket's protection against ``object_lock_days`` first."""
    if backup.writer_key is None:
        raise BadInput(
            f"{config_file or 'the config'}: backup.writer_key is not set; "
            "'ops backup keygen' writes one"
        )
    writer = load_writer_key(backup.writer_key)
    done = []
    for settings in select(backup, names, config_file):
        storage = open_storage(settings)
        repo, created = Repository.init(storage, writer)
        protection = getattr(storage, "protection", None)
        guard = protection() if protection is not None else None
        done.append(Initialised(settings.name, storage.describe(), repo.config.id, created, guard))
    return done


def list_snapshots(
    repositories: list[Repository], keys: Keys, source: str | None
) -> list[dict[str, Any]]:
    """Every snapshot (of ``source``, or all) in each repository, in the ``--json`` shape of
    ``ops backup list``. Without the identity only what object names say is known; with it,
    a snapshot that cannot be read is listed with the reason under ``unreadable``."""
    docs: list[dict[str, Any]] = []
    for repo in repositories:
        for ref in repo.snapshots(source):
            doc: dict[str, Any] = {
                "id": ref.id,
                "short_id": ref.short_id,
                "source": ref.source,
                "time": ref.time,
                "stored": ref.stored,
                "future_dated": ref.future_dated,
                "repository": repo.name,
                "category": None,
                "host": None,
                "files": None,
                "bytes": None,
                "tree": None,
                "run": None,
                "unreadable": None,
            }
            if keys.identity is not None:
                try:
                    snapshot = repo.read_snapshot(ref)
                except DamagedObject as exc:  # named; the rest are still listed
                    doc["unreadable"] = f"{repo.name}: {ref.key}: {exc.args[2]}"
                else:
                    doc.update(
                        category=snapshot.category,
                        host=snapshot.host,
                        files=snapshot.summary.get("files"),
                        bytes=snapshot.summary.get("bytes"),
                        tree=snapshot.tree.hex(),
                        run=snapshot.run,
                    )
            docs.append(doc)
    return docs
