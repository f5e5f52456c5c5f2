"""A repository on one storage backend: its config, keys, index, packs, trees and snapshots.

Write order makes crashes harmless (DESIGN.md §4): packs first, then the index objects naming
them, then the snapshot last. A crash leaves at most packs no index names, which ``check``
reports as harmless and ``prune`` removes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from backup import index as index_codec
from backup.age import AgeError
from backup.index import Index, IndexFormatError, PackRecord
from backup.keys import Identity, IdentityMissing, WriterKey
from backup.pack import decompress, pack_key, read_header
from backup.snapshot import Snapshot, SnapshotRef
from backup.storage import ObjectMissing, Storage
from backup.tree import Tree
from portalops.errors import OpsError

log = logging.getLogger(__name__)

REPO_KIND = "portal-ops repository"
FORMAT_VERSION = 1
CHUNKER = {
    "algorithm": "fastcdc2020",
    "min": 256 * 1024,
    "avg": 1024 * 1024,
    "max": 4 * 1024 * 1024,
}


class RepositoryError(OpsError):
    """repository {}: {}"""


class NotARepository(RepositoryError):
    """repository {} ({}) has no portal-ops repository; run 'ops backup init' first"""


class DamagedObject(RepositoryError):
    """repository {}: {} is damaged: {}"""

    exit_code = RepositoryError.exit_code


@dataclass(frozen=True)
class RepoConfig:
    id: str
    recipients: tuple[str, ...]
    key_fingerprint: str
    chunker: dict[str, object]
    created: str

    def encode(self) -> bytes:
        doc = {
            "kind": REPO_KIND,
            "version": FORMAT_VERSION,
            "id": self.id,
            "recipients": list(self.recipients),
            "key_fingerprint": self.key_fingerprint,
            "chunker": self.chunker,
            "created": self.created,
        }
        return (json.dumps(doc, indent=2) + "\n").encode()

    @classmethod
    def decode(cls, data: bytes) -> RepoConfig:
        doc = json.loads(data)
        if doc.get("kind") != REPO_KIND:
            raise ValueError("not a portal-ops repository config")
        if doc.get("version") != FORMAT_VERSION:
            raise ValueError(f"format version {doc.get('version')} (this tool reads 1)")
        return cls(
            doc["id"],
            tuple(doc["recipients"]),
            doc["key_fingerprint"],
            dict(doc["chunker"]),
            doc["created"],
        )


@dataclass
class Repository:
    storage: Storage
    config: RepoConfig
    writer: WriterKey
    identity: Identity | None = None
    index: Index = field(default_factory=Index)
    index_problems: list[str] = field(default_factory=list)
    settings: Any = None  # the config entry it was opened from (lets worker processes reopen it)
    _packs: OrderedDict[str, bytes] = field(default_factory=OrderedDict)

    @property
    def name(self) -> str:
        return self.storage.name

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def init(cls, storage: Storage, writer: WriterKey) -> tuple[Repository, bool]:
        """Create the repository; if it exists with this key, open it. Returns (repo, created)."""
        if storage.size("config") is not None:
            return cls.open(storage, writer, None), False
        config = RepoConfig(
            id=secrets.token_hex(16),
            recipients=writer.recipients,
            key_fingerprint=writer.fingerprint,
            chunker=dict(CHUNKER),
            created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        # The keys object lets the identity alone recover the id-key and seed (a restore on
        # a fresh machine needs nothing but the identity and the repository).
        keys = writer.encrypt(
            json.dumps(
                {"id_key": writer.id_key.hex(), "chunker_seed": writer.chunker_seed}
            ).encode()
        )
        storage.put(f"keys/{hashlib.sha256(keys).hexdigest()}", keys)
        storage.put("config", config.encode())
        return cls(storage, config, writer), True

    @classmethod
    def open(
        cls, storage: Storage, writer: WriterKey | None, identity: Identity | None
    ) -> Repository:
        config = cls.read_config(storage)
        if writer is None:
            if identity is None:
                raise RepositoryError(
                    storage.name, "needs backup.writer_key or backup.identity in the config"
                )
            writer = cls._recover_writer(storage, config, identity)
        if writer.fingerprint != config.key_fingerprint:
            raise RepositoryError(
                storage.name,
                f"the writer key does not belong to this repository (key {writer.fingerprint}, "
                f"repository expects {config.key_fingerprint})",
            )
        return cls(storage, config, writer, identity)

    @staticmethod
    def read_config(storage: Storage) -> RepoConfig:
        try:
            raw = storage.get("config")
        except ObjectMissing:
            raise NotARepository(storage.name, storage.describe()) from None
        try:
            return RepoConfig.decode(raw)
        except (ValueError, KeyError, TypeError) as exc:
            raise DamagedObject(storage.name, "config", exc) from None

    @staticmethod
    def _recover_writer(storage: Storage, config: RepoConfig, identity: Identity) -> WriterKey:
        for info in storage.list("keys/"):
            try:
                doc = json.loads(identity.decrypt(storage.get(info.key)))
                return WriterKey(
                    bytes.fromhex(doc["id_key"]), int(doc["chunker_seed"]), config.recipients
                )
            except (AgeError, ValueError, KeyError):
                continue
        raise RepositoryError(storage.name, "the identity opens none of the objects under keys/")

    # -- index ---------------------------------------------------------------------------

    def load_index(self) -> Index:
        """Read every index object; ones failing their MAC are set aside and reported."""
        merged = Index()
        problems: list[str] = []
        for info in sorted(self.storage.list("index/"), key=lambda i: i.key):
            try:
                records = list(index_codec.decode(self.storage.get(info.key), self.writer.mac_key))
            except IndexFormatError as exc:
                problems.append(f"{info.key}: {exc}")
                continue
            except ObjectMissing:
                continue  # removed by a prune that finished after we listed
            for record in records:
                merged.add(record)
            merged.objects.append(info.key)
        for problem in problems:
            log.warning("repository %s: index %s", self.name, problem)
        self.index = merged
        self.index_problems = problems
        return merged

    def write_index(self, records: list[PackRecord]) -> str:
        data = index_codec.encode(records, self.writer.mac_key)
        key = index_codec.index_key(data)
        self.storage.put(key, data)
        return key

    # -- writing -------------------------------------------------------------------------

    def write_pack(self, plaintext: bytes) -> tuple[str, int]:
        stored = self.writer.encrypt(plaintext)
        key = pack_key(stored)
        self.storage.put(key, stored)
        return key, len(stored)

    def write_snapshot(self, snapshot: Snapshot) -> SnapshotRef:
        stored = self.writer.encrypt(snapshot.encode())
        ref = SnapshotRef.for_object(snapshot.source, snapshot.time, stored)
        self.storage.put(ref.key, stored)
        return ref

    # -- reading -------------------------------------------------------------------------

    def require_identity(self, config_file: str) -> Identity:
        if self.identity is None:
            raise IdentityMissing(config_file)
        return self.identity

    def snapshots(self, source: str | None = None) -> list[SnapshotRef]:
        """Every snapshot (of ``source``), oldest first by stated time, each with the storage's
        time for it; future-dated ones included (``SnapshotRef.future_dated``)."""
        return self.snapshot_listing(source)[0]

    def snapshot_listing(self, source: str | None = None) -> tuple[list[SnapshotRef], list[str]]:
        """:meth:`snapshots`, and the keys under ``snapshots/`` that are no snapshot's name."""
        prefix = f"snapshots/{source}/" if source else "snapshots/"
        refs, strange = [], []
        for info in self.storage.list(prefix):
            ref = SnapshotRef.parse(info.key)
            if ref is None:
                strange.append(info.key)
            else:
                refs.append(ref.with_stored(info.modified))
        return sorted(refs), sorted(strange)

    def read_snapshot(self, ref: SnapshotRef) -> Snapshot:
        stored = self.storage.get(ref.key)
        if hashlib.sha256(stored).hexdigest() != ref.id:
            raise DamagedObject(self.name, ref.key, "content does not match its name")
        return Snapshot.decode(self._decrypt(ref.key, stored))

    def fetch_pack(self, key: str) -> bytes:
        """A pack's stored (encrypted) bytes; thread-safe, for prefetching."""
        return self.storage.get(key)

    def decrypt_pack(self, key: str, stored: bytes) -> bytes:
        return self._decrypt(key, stored)

    def read_pack(self, key: str) -> bytes:
        """A pack's plaintext; kept in a small cache since restores read packs in runs."""
        cached = self._packs.get(key)
        if cached is not None:
            self._packs.move_to_end(key)
            return cached
        plaintext = self._decrypt(key, self.storage.get(key))
        self._packs[key] = plaintext
        while len(self._packs) > 4:
            self._packs.popitem(last=False)
        return plaintext

    def read_blob(self, blob_id: bytes) -> bytes:
        location = self.index.get(blob_id)
        if location is None:
            raise DamagedObject(self.name, f"blob {blob_id.hex()}", "not in the index")
        plaintext = self.read_pack(location.pack)
        entry = location.entry
        data = decompress(plaintext[entry.offset : entry.offset + entry.length], entry)
        if self.writer.blob_id(data) != blob_id:
            raise DamagedObject(self.name, location.pack, f"blob {blob_id.hex()[:16]} fails its id")
        return data

    def read_tree(self, tree_id: bytes) -> Tree:
        return Tree.decode(self.read_blob(tree_id))

    def verify_pack(self, key: str, record: PackRecord) -> list[str]:
        """Decrypt a pack and check every blob against its id; return what is wrong."""
        try:
            plaintext = self._decrypt(key, self.storage.get(key))
        except DamagedObject as exc:
            return [str(exc.args[2])]
        try:
            header = {e.id: e for e in read_header(plaintext)}
        except ValueError as exc:
            return [str(exc)]
        problems = []
        for entry in record.blobs:
            if header.get(entry.id) != entry:
                problems.append(f"blob {entry.id.hex()[:16]}: index and pack header disagree")
                continue
            try:
                data = decompress(plaintext[entry.offset : entry.offset + entry.length], entry)
            except Exception as exc:  # zstd raises its own error types
                problems.append(f"blob {entry.id.hex()[:16]}: cannot decompress: {exc}")
                continue
            if self.writer.blob_id(data) != entry.id:
                problems.append(f"blob {entry.id.hex()[:16]}: content does not match its id")
        return problems

    def _decrypt(self, key: str, stored: bytes) -> bytes:
        identity = self.identity
        if identity is None:
            raise IdentityMissing("the config")
        try:
            return identity.decrypt(stored)
        except AgeError as exc:
            raise DamagedObject(self.name, key, f"decryption failed ({exc})") from None
