"""A repository on one storage backend: its config, keys, index, packs, trees and snapshots.

Write order makes crashes harmless (FORMAT.md): packs first, then the index objects naming
them, then the snapshot last. A crash leaves at most packs no index names, which ``check``
reports as harmless and ``prune`` removes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from portalops.backup.repo import index as index_codec
from portalops.backup.repo.age import AgeError, identity_string
from portalops.backup.repo.backends import RepositoryLike
from portalops.backup.repo.index import Index, IndexFormatError, Location, PackRecord
from portalops.backup.repo.keys import (
    IDENTITIES,
    MAX_KEY_CANDIDATES,
    MAX_KEYS_OBJECT,
    MAX_NOTICE_OBJECT,
    MAX_NOTICES,
    MAX_WRAP_OBJECT,
    MAX_WRAPPED,
    MAX_WRAPS,
    NOTICES,
    Identity,
    IdentityMissing,
    RecipientsRetired,
    WriterKey,
    decode_notice,
    parse_keys_object,
    parse_wrap,
)
from portalops.backup.repo.pack import (
    MAX_DATA_BLOB,
    MAX_PACK_SIZE,
    BlobEntry,
    BlobFormatError,
    BlobType,
    Compression,
    blob_view,
    pack_key,
    read_header,
)
from portalops.backup.repo.snapshot import Snapshot, SnapshotFormatError, SnapshotRef
from portalops.backup.repo.storage import (
    ObjectInfo,
    ObjectMissing,
    ObjectTooLarge,
    Storage,
    StorageError,
)
from portalops.backup.repo.tree import Tree
from portalops.core.errors import OpsError
from portalops.core.timefmt import utc_now_z

log = logging.getLogger(__name__)

REPO_KIND = "portal-ops repository"
FORMAT_VERSION = 1
CHUNKER = {
    "algorithm": "fastcdc2020",
    "min": 256 * 1024,
    "avg": 1024 * 1024,
    "max": 4 * 1024 * 1024,
}
# A snapshot body is a few hundred bytes, plus its stats (a database source's row counts per
# table): anything larger under snapshots/ was not written by this tool.
MAX_SNAPSHOT_OBJECT = 16 * 1024 * 1024
INDEX_READS = 8  # index objects fetched ahead of the one being decoded
INDEX_READ_AHEAD_SIZE = 1024 * 1024  # larger ones are fetched alone, when due
_Listed = tuple[str, int, datetime | None]  # an index object's key, size and time, as listed
BASES_KEPT = 4  # decoded delta bases kept by a reader (data blobs: at most 4 MiB each)


# Where the bases of some delta blobs are, by base id (a worker process holds no index).
Bases = dict[bytes, list[Location]]


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
            _chunker(doc["chunker"]),
            doc["created"],
        )


def _chunker(stated: object) -> dict[str, object]:
    """The config's chunker parameters, which writers cut by and readers bound blobs by:
    FastCDC 2020 with plain integer sizes, min <= avg <= max <= 16 x 4 MiB. The config is
    not authenticated: "+4194304", Arabic-Indic digits or "4_194_304" once made backups that
    reported ok and could not be restored (readers took the default maximum)."""
    if not isinstance(stated, dict) or stated.get("algorithm") != CHUNKER["algorithm"]:
        raise ValueError(f"chunker: {CHUNKER['algorithm']} parameters expected")
    low, avg, high = (stated.get(name) for name in ("min", "avg", "max"))
    if not (type(low) is int and type(avg) is int and type(high) is int):
        raise ValueError("chunker: min, avg and max must be integers")
    if not 64 <= low <= avg <= high <= 16 * MAX_DATA_BLOB:
        raise ValueError(f"chunker: sizes {low}, {avg}, {high} out of bounds")
    return dict(stated)


@dataclass
class Repository:
    storage: Storage
    config: RepoConfig
    writer: WriterKey
    identity: Identity | None = None
    index: Index = field(default_factory=Index)
    index_problems: list[str] = field(default_factory=list)
    # the config entry it was opened from: lets worker processes reopen the storage
    settings: RepositoryLike | None = None
    _packs: OrderedDict[str, bytes] = field(default_factory=OrderedDict)
    _bad_packs: dict[str, str] = field(default_factory=dict)  # missing or damaged: why
    # Bases read lately, and whether each was checked against its id: consecutive deltas of
    # one dump share bases (a base is also the chunk before's second base, now and then).
    _bases: OrderedDict[bytes, tuple[bytes, bool]] = field(default_factory=OrderedDict)
    _bad_bases: set[tuple[bytes, str]] = field(default_factory=set)  # (base, pack) failing its id
    # Index objects read, by (key, size, time listed): their records, or what is wrong.
    _index_objects: dict[_Listed, list[PackRecord] | str] = field(default_factory=dict)

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
            created=utc_now_z(),
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
        cls,
        storage: Storage,
        writer: WriterKey | None,
        identity: Identity | None,
        settings: RepositoryLike | None = None,
        trusted_recipients: tuple[str, ...] = (),
    ) -> Repository:
        config = cls.read_config(storage)
        if identity is not None:
            identity = unwrap_identities(storage, identity)
        if writer is None:
            if identity is None:
                raise RepositoryError(
                    storage.name, "needs backup.writer_key or backup.identity in the config"
                )
            writer = cls._recover_writer(storage, config, identity, trusted_recipients)
        if writer.fingerprint != config.key_fingerprint:
            raise RepositoryError(
                storage.name,
                f"the writer key does not belong to this repository (key {writer.fingerprint}, "
                f"repository expects {config.key_fingerprint})",
            )
        if writer.untrusted is None:
            retired = _retired(storage, writer)
            if retired is not None:  # reading goes on; nothing is encrypted with it
                writer = replace(writer, untrusted=retired)
        return cls(storage, config, writer, identity, settings=settings)

    @staticmethod
    def read_config(storage: Storage) -> RepoConfig:
        try:
            raw = storage.get("config")
        except ObjectMissing:
            raise NotARepository(storage.name, storage.describe()) from None
        try:
            return RepoConfig.decode(raw)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise DamagedObject(storage.name, "config", exc) from None

    @staticmethod
    def _recover_writer(
        storage: Storage, config: RepoConfig, identity: Identity, trusted: tuple[str, ...]
    ) -> WriterKey:
        """The writer key from the keys object whose id-key has the config's fingerprint.
        Writers can add objects under keys/ too: the others are skipped and reported.

        Its recipients are the config's, which a backup host can rewrite: nothing is
        encrypted to them (prune's repacks, copy) unless each is this host's own identity
        or listed in ``trusted`` (backup.recipients), or old backups could be repacked for
        an attacker's key."""
        writer, problems = _search_keys(storage, config, identity, examine_all=False)
        for key, what in problems[:5]:
            log.warning("repository %s: %s skipped: %s", storage.name, key, what)
        if len(problems) > 5:
            log.warning(
                "repository %s: %d more objects under keys/ skipped",
                storage.name,
                len(problems) - 5,
            )
        if writer is None:
            raise RepositoryError(
                storage.name,
                "no object under keys/ holds this repository's key (fingerprint "
                f"{config.key_fingerprint}) for this identity ({identity.public}); if it "
                f"reads through a wrap, none under {IDENTITIES}{identity.public}/ opened: "
                "ask the holder of the repository's identity to run 'ops backup key add "
                f"--recipient {identity.public}'"
                + (": " + "; ".join(f"{k}: {w}" for k, w in problems[:3]) if problems else ""),
            )
        if trusted:  # backup.recipients: what this host encrypts to, whatever config says
            return replace(writer, recipients=trusted)
        strangers = [r for r in config.recipients if r != identity.public]
        if strangers or not config.recipients:
            writer = replace(
                writer,
                untrusted=f"repository {storage.name}: its config asks for data to be "
                f"encrypted to {', '.join(strangers) or 'no key'}, which is not this host's "
                "identity, and a backup host can write that config: nothing is encrypted to "
                "it. If the key is genuine (the repository's recipient, read here through a "
                "wrap, or the new one after 'ops backup key rotate'), set backup.recipients "
                "to the keys to encrypt to; if not, someone changed the config (docs/"
                "backup.md, 'What a compromised backup host can and cannot do')",
            )
        return writer

    def key_problems(self) -> list[tuple[str, str]]:
        """(object, what is wrong) for every object under keys/ that is not this
        repository's keys object; needs the identity. For ``check``."""
        identity = self.identity
        if identity is None:
            raise IdentityMissing("the config")
        writer, problems = _search_keys(self.storage, self.config, identity, examine_all=True)
        if writer is None:
            problems.append(("keys/", "no object here holds this repository's key"))
        return problems

    # -- index ---------------------------------------------------------------------------

    def load_index(self) -> Index:
        """Read every index object; ones failing their MAC are set aside and reported.

        An object this repository object read before is not fetched again: its key is the
        SHA-256 of its bytes and writes are create-only, so the same key, size and time
        listed again hold the same records (a backup re-reads the index for each source,
        under its lock, and on S3 that was one GET per object per source). What a prune
        removed in between is no longer listed, so it is not read; the index is rebuilt from
        what is listed now. Small objects are fetched a few ahead of the one being decoded
        (an offsite's latency, not its bandwidth, is what a long list of them costs); they
        are decoded one at a time, so a forged object costs no more memory than before.
        """
        listed = sorted(
            ((info.key, info.size, info.modified) for info in self.storage.list("index/")),
            key=lambda item: item[0],
        )
        known = self._index_objects
        for item, data in self._index_bytes([item for item in listed if item not in known]):
            if isinstance(data, bytes):
                try:
                    known[item] = list(index_codec.decode(data, self.writer.mac_key))
                except IndexFormatError as exc:
                    known[item] = str(exc)
            elif data is not None:
                known[item] = data  # what is wrong with it
        self._index_objects = {item: known[item] for item in listed if item in known}
        merged = Index()
        problems: list[str] = []
        for (key, _, _), got in self._index_objects.items():
            if isinstance(got, str):
                problems.append(f"{key}: {got}")
                continue
            for record in got:
                merged.add(record)
            merged.objects.append(key)
        for problem in problems:
            log.warning("repository %s: index %s", self.name, problem)
        self.index = merged
        self.index_problems = problems
        return merged

    def _index_bytes(self, items: list[_Listed]) -> Iterator[tuple[_Listed, bytes | str | None]]:
        """Each object's bytes in order, what is wrong with it (too large), or None if it is
        gone (removed by a prune that finished after the listing). Objects of at most
        INDEX_READ_AHEAD_SIZE are fetched up to INDEX_READS ahead; larger ones when due."""

        def fetch(key: str) -> bytes | str | None:
            try:
                return self.storage.get(key, max_size=index_codec.MAX_INDEX_JSON)
            except ObjectTooLarge as exc:
                return _too_large(exc, "an index object")
            except ObjectMissing:
                return None

        if len(items) < 2:
            yield from ((item, fetch(item[0])) for item in items)
            return
        todo = iter(items)
        ahead: deque[tuple[_Listed, Future[bytes | str | None] | None]] = deque()
        with ThreadPoolExecutor(INDEX_READS, "index") as pool:
            while True:
                while len(ahead) < INDEX_READS and (item := next(todo, None)) is not None:
                    small = item[1] <= INDEX_READ_AHEAD_SIZE
                    ahead.append((item, pool.submit(fetch, item[0]) if small else None))
                if not ahead:
                    return
                item, future = ahead.popleft()
                yield item, future.result() if future is not None else fetch(item[0])

    def write_index(self, records: list[PackRecord]) -> str:
        data = index_codec.encode(records, self.writer.mac_key)
        key = index_codec.index_key(data)
        self.storage.put(key, data)
        return key

    # -- writing -------------------------------------------------------------------------

    def write_pack(
        self, plaintext: bytes | list[bytes | memoryview], buffer: bytearray | None = None
    ) -> tuple[str, int]:
        """Encrypt and store a pack; ``buffer``: where to encrypt it, reused by the caller
        once this returns (the storage has written or sent it by then)."""
        stored = self.writer.encrypt_pack(plaintext, buffer)
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
        """The snapshot's body; DamagedObject naming it if it is too large, does not match
        its name, does not decrypt, or any field is malformed or disagrees with the name."""
        try:
            stored = self.storage.get(ref.key, max_size=MAX_SNAPSHOT_OBJECT)
        except ObjectTooLarge as exc:
            raise DamagedObject(self.name, ref.key, _too_large(exc, "a snapshot")) from None
        if hashlib.sha256(stored).hexdigest() != ref.id:
            raise DamagedObject(self.name, ref.key, "content does not match its name")
        try:
            snapshot = Snapshot.decode(self._decrypt(ref.key, stored))
        except SnapshotFormatError as exc:
            raise DamagedObject(self.name, ref.key, f"unreadable snapshot: {exc}") from None
        if snapshot.source != ref.source or snapshot.time != ref.time:
            raise DamagedObject(
                self.name,
                ref.key,
                f"its body says source {snapshot.source!r:.40} at "
                f"{snapshot.time:%Y-%m-%d %H:%M:%S.%fZ}, which its name does not",
            )
        return snapshot

    def fetch_pack(self, key: str) -> bytes:
        """A pack's stored (encrypted) bytes; thread-safe, for prefetching. A pack larger
        than any a writer builds (``MAX_PACK_SIZE``) is refused before it is read."""
        try:
            return self.storage.get(key, max_size=MAX_PACK_SIZE)
        except ObjectTooLarge as exc:
            raise DamagedObject(self.name, key, _too_large(exc, "a pack")) from None

    @property
    def max_data_blob(self) -> int:
        """The most bytes a data blob may hold: the chunker maximum the config states (a
        config stating something odd gets the default)."""
        stated = self.config.chunker.get("max")
        if isinstance(stated, int) and 0 < stated <= 16 * MAX_DATA_BLOB:
            return stated
        return MAX_DATA_BLOB

    def unpack_blob(self, pack: str, plaintext: bytes, blob_id: bytes, entry: BlobEntry) -> bytes:
        """Blob ``blob_id`` out of ``pack``'s plaintext, bounded and checked against its id;
        DamagedObject naming the pack otherwise."""
        return bytes(self.unpack_view(pack, plaintext, blob_id, entry))

    def unpack_view(
        self,
        pack: str,
        plaintext: bytes,
        blob_id: bytes,
        entry: BlobEntry,
        bases: Bases | None = None,
    ) -> bytes | memoryview:
        """:meth:`unpack_blob`, checked alike, but a blob stored uncompressed is a view into
        ``plaintext`` (no copy; for writing it out, not for keeping). A delta blob's bases are
        read from ``bases`` (their locations; by default the index's)."""
        if entry.compression is not Compression.DELTA:
            return self._unpack(pack, plaintext, blob_id, entry, None, check=True)
        # The bases are first taken as their first location gives them, unchecked: the
        # delta's own id check covers them (a wrong base cannot decode to the right bytes),
        # and checking each base again cost a day-2 dump restore a tenth of its time. Only
        # when the delta fails are its bases read checked, from every location (a writer may
        # have named a forged copy of a base first).
        try:
            base = self.dictionary(entry, bases, pack, checked=False)
            return self._unpack(pack, plaintext, blob_id, entry, base, check=True)
        except DamagedObject:
            unchecked = [b for b in entry.bases if not self._bases.get(b, (b"", False))[1]]
            if not unchecked:  # its bases were checked already: the delta itself is bad
                raise
            for base_id in unchecked:
                self._bases.pop(base_id, None)
        base = self.dictionary(entry, bases, pack, checked=True)
        return self._unpack(pack, plaintext, blob_id, entry, base, check=True)

    def _unpack(
        self,
        pack: str,
        plaintext: bytes,
        blob_id: bytes,
        entry: BlobEntry,
        base: bytes | None,
        *,
        check: bool,
    ) -> bytes | memoryview:
        stored = memoryview(plaintext)[entry.offset : entry.offset + entry.length]
        try:
            data = blob_view(stored, entry, max_data=self.max_data_blob, base=base)
        except BlobFormatError as exc:
            raise DamagedObject(self.name, pack, f"blob {blob_id.hex()[:16]}: {exc}") from None
        if check and self.writer.blob_id(data) != blob_id:
            raise DamagedObject(self.name, pack, f"blob {blob_id.hex()[:16]} fails its id")
        return data

    def decrypt_pack(self, key: str, stored: bytes) -> bytes:
        return self._decrypt(key, stored)

    def read_pack(self, key: str) -> bytes:
        """A pack's plaintext; kept in a small cache since restores read packs in runs."""
        cached = self._packs.get(key)
        if cached is not None:
            self._packs.move_to_end(key)
            return cached
        plaintext = self._decrypt(key, self.fetch_pack(key))
        self._packs[key] = plaintext
        while len(self._packs) > 4:
            self._packs.popitem(last=False)
        return plaintext

    def forget_packs(self) -> None:
        """Drop the cached pack plaintexts (before memory goes to other work)."""
        self._packs.clear()

    def read_blob(self, blob_id: bytes) -> bytes:
        """The blob from the first location any index gives that holds it intact (a forged
        index may name a missing pack, or a pack where the blob fails its id)."""
        reasons: list[str] = []
        for location in self.index.locations(blob_id):
            plaintext = self._pack_or_why(location.pack, reasons)
            if plaintext is None:
                continue
            try:
                return self.unpack_blob(location.pack, plaintext, blob_id, location.entry)
            except DamagedObject as exc:
                reasons.append(_reason(exc))
        what = "; ".join(reasons) or "not in the index"
        raise DamagedObject(self.name, f"blob {blob_id.hex()[:16]}", what)

    def base_locations(self, base_id: bytes) -> list[Location]:
        """Where a delta's base may be read: its locations that are not deltas themselves
        (a chain is one step deep, so reading a blob never recurses further)."""
        return [
            location
            for location in self.index.locations(base_id)
            if _whole_data(location.entry, self.max_data_blob)
        ]

    def by_base(self, entries: list[BlobEntry], bases: Bases | None = None) -> list[BlobEntry]:
        """Whole blobs first, then deltas in the order of their bases' packs (``bases``, or
        the index): a reader keeps a few packs' plaintext, and deltas in a pack's random
        order would read every base pack once per delta."""
        if not any(entry.bases for entry in entries):
            return entries
        return sorted(entries, key=lambda entry: self.base_order(entry, bases))

    def base_order(
        self, entry: BlobEntry, bases: Bases | None = None
    ) -> tuple[tuple[str, int], ...]:
        """Where a delta's bases first are (empty for a whole blob), to sort by."""
        return tuple(
            _first_place(self.base_locations(b) if bases is None else bases.get(b, []))
            for b in entry.bases
        )

    def dictionary(
        self, entry: BlobEntry, bases: Bases | None, pack: str, *, checked: bool = True
    ) -> bytes:
        """A delta's dictionary: its bases' bytes, joined in order (``checked``: each base
        checked against its id, else as its first readable location gives it)."""
        parts = [
            self.read_base(
                base,
                None if bases is None else bases.get(base, []),
                needed_by=(pack, entry.id),
                checked=checked,
            )
            for base in entry.bases
        ]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read_base(
        self,
        base_id: bytes,
        locations: list[Location] | None = None,
        *,
        needed_by: tuple[str, bytes],
        checked: bool = True,
    ) -> bytes:
        """A delta's base, from the first of ``locations`` (default: the index's) holding it
        intact (``checked``: against its id) and stored whole; DamagedObject naming the
        delta's pack and blob otherwise."""
        cached = self._bases.get(base_id)
        if cached is not None and (cached[1] or not checked):
            self._bases.move_to_end(base_id)
            return cached[0]
        data = self._read_base(base_id, locations, needed_by, checked)
        self._bases[base_id] = (data, checked)
        self._bases.move_to_end(base_id)
        while len(self._bases) > BASES_KEPT:
            self._bases.popitem(last=False)
        return data

    def _read_base(
        self,
        base_id: bytes,
        locations: list[Location] | None,
        needed_by: tuple[str, bytes],
        checked: bool,
    ) -> bytes:
        pack, blob_id = needed_by
        reasons: list[str] = []
        wanted = self.base_locations(base_id) if locations is None else locations
        for location in wanted:
            if not _whole_data(location.entry, self.max_data_blob) or location.entry.id != base_id:
                continue
            if (base_id, location.pack) in self._bad_bases:
                continue
            plaintext = self._pack_or_why(location.pack, reasons)
            if plaintext is None:
                continue
            try:
                data = self._unpack(
                    location.pack, plaintext, base_id, location.entry, None, check=checked
                )
                return bytes(data)
            except DamagedObject as exc:
                if checked:  # not tried again for every delta made against it
                    self._bad_bases.add((base_id, location.pack))
                reasons.append(_reason(exc))
        what = "; ".join(reasons) or "not in the index as a whole blob"
        raise DamagedObject(
            self.name, pack, f"blob {blob_id.hex()[:16]}: its base {base_id.hex()[:16]}: {what}"
        )

    def _pack_or_why(self, pack: str, reasons: list[str]) -> bytes | None:
        """The pack's plaintext, or None with why not added to ``reasons``. A missing or
        undecryptable pack is remembered, not fetched again for every blob a forged index
        puts there; an unreachable storage is worth another try later."""
        known_bad = self._bad_packs.get(pack)
        if known_bad is not None:
            reasons.append(known_bad)
            return None
        try:
            return self.read_pack(pack)
        except (DamagedObject, ObjectMissing) as exc:
            self._bad_packs[pack] = reason = _reason(exc)
            reasons.append(reason)
        except OpsError as exc:
            reasons.append(str(exc))
        return None

    def read_tree(self, tree_id: bytes) -> Tree:
        return Tree.decode(self.read_blob(tree_id))

    def verify_pack(self, key: str, record: PackRecord, bases: Bases | None = None) -> list[str]:
        """Decrypt a pack and check every blob against its id; return what is wrong. A delta
        is decoded with its base, read from ``bases`` (its locations; default: the index)."""
        try:
            plaintext = self._decrypt(key, self.fetch_pack(key))
        except DamagedObject as exc:
            return [str(exc.args[2])]
        try:
            header = {e.id: e for e in read_header(plaintext)}
        except ValueError as exc:
            return [str(exc)]
        problems = []
        view = memoryview(plaintext)
        for entry in self.by_base(list(record.blobs), bases):
            if header.get(entry.id) != entry:
                problems.append(f"blob {entry.id.hex()[:16]}: index and pack header disagree")
                continue
            stored = view[entry.offset : entry.offset + entry.length]
            try:
                base = self.dictionary(entry, bases, key) if entry.bases else None
                data = blob_view(stored, entry, max_data=self.max_data_blob, base=base)
            except BlobFormatError as exc:
                problems.append(f"blob {entry.id.hex()[:16]}: cannot decompress: {exc}")
                continue
            except DamagedObject as exc:
                problems.append(str(exc.args[2]))
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


def _whole_data(entry: BlobEntry, max_data: int) -> bool:
    """Whether a location may serve as a delta's base: a whole data blob, no larger than a
    data blob may be (a forged tree "base" would make a 64 MiB dictionary)."""
    return (
        entry.compression is not Compression.DELTA
        and entry.type is BlobType.DATA
        and entry.raw_length <= max_data
    )


def _first_place(locations: list[Location]) -> tuple[str, int]:
    return (locations[0].pack, locations[0].entry.offset) if locations else ("", 0)


def _reason(exc: OpsError) -> str:
    """A damaged object as "KEY: what is wrong", anything else as its message."""
    if isinstance(exc, DamagedObject):
        return f"{exc.args[1]}: {exc.args[2]}"
    return str(exc)


def _too_large(exc: ObjectTooLarge, what: str) -> str:
    _, _, size, limit = exc.args
    return f"{size} bytes, more than {what} written by this tool can be ({limit}); not read"


def _search_keys(
    storage: Storage, config: RepoConfig, identity: Identity, *, examine_all: bool
) -> tuple[WriterKey | None, list[tuple[str, str]]]:
    """The writer key of the keys object whose id-key has the config's fingerprint, and what
    is wrong with the objects under keys/ looked at. Oldest first by the storage's time (the
    genuine one was written at init, before any writer could add its own), at most
    MAX_KEY_CANDIDATES of them, each at most MAX_KEYS_OBJECT bytes; with ``examine_all``
    it goes on past the match, to report the rest."""
    infos = sorted(storage.list("keys/"), key=_oldest_first)
    found: WriterKey | None = None
    found_in = ""
    problems: list[tuple[str, str]] = []
    for info in infos[:MAX_KEY_CANDIDATES]:
        try:
            writer = _read_keys_object(storage, config, identity, info)
        except ValueError as exc:
            problems.append((info.key, str(exc)))
            continue
        if found is None:
            found, found_in = writer, info.key
            if not examine_all:
                break
        elif writer.chunker_seed != found.chunker_seed:
            # One of the two is forged (a writer holds the id-key); reads need only the id-key.
            problems.append(
                (
                    info.key,
                    f"holds this repository's id-key with another chunker seed than {found_in}",
                )
            )
    if len(infos) > MAX_KEY_CANDIDATES and (found is None or examine_all):
        problems.insert(
            0,
            (
                "keys/",
                f"{len(infos)} objects, of which only the oldest {MAX_KEY_CANDIDATES} were read",
            ),
        )
    return found, problems


def _retired(storage: Storage, writer: WriterKey) -> str | None:
    """Why ``writer`` must not encrypt: the newest recipients notice (``ops backup key
    rotate``) names other recipients than it encrypts to; None if not. Notices whose MAC
    fails are logged and passed over; at most MAX_NOTICES, newest first by storage time."""
    notices = sorted(storage.list(NOTICES), key=_oldest_first, reverse=True)
    for info in notices[:MAX_NOTICES]:
        try:
            if info.size > MAX_NOTICE_OBJECT:
                raise ValueError(f"{info.size} bytes, larger than a notice")
            recipients, when = decode_notice(
                storage.get(info.key, max_size=MAX_NOTICE_OBJECT), writer
            )
        except (StorageError, ValueError) as exc:
            log.warning("repository %s: %s not used: %s", storage.name, info.key, exc)
            continue
        if set(recipients) != set(writer.recipients):
            return str(
                RecipientsRetired(
                    storage.name, ", ".join(writer.recipients), when, ", ".join(recipients)
                )
            )
        return None
    return None


def unwrap_identities(storage: Storage, identity: Identity) -> Identity:
    """``identity`` and the repository identities wrapped for it under
    ``identities/<its public key>/`` (``ops backup key add``). A wrap that cannot be read is
    logged and passed over: the identity still opens what it opens alone."""
    also: list[X25519PrivateKey] = []
    held = set(identity.secrets)
    # Newest first: junk a backup host planted earlier does not hide a wrap written since.
    wraps = sorted(storage.list(f"{IDENTITIES}{identity.public}/"), key=_oldest_first)[::-1]
    for info in wraps[:MAX_WRAPS]:
        if len(also) >= MAX_WRAPPED:
            break
        try:
            if info.size > MAX_WRAP_OBJECT:
                raise ValueError(f"{info.size} bytes, larger than a wrap ({MAX_WRAP_OBJECT})")
            found = parse_wrap(identity.decrypt(storage.get(info.key, max_size=MAX_WRAP_OBJECT)))
        except (StorageError, AgeError, ValueError) as exc:
            log.warning("repository %s: %s not used: %s", storage.name, info.key, exc)
            continue
        for secret in found:
            text = identity_string(secret)
            if text not in held:
                held.add(text)
                also.append(secret)
    if len(wraps) > MAX_WRAPS:
        log.warning("repository %s: only the newest %d of %d wraps for %s read", storage.name,
                    MAX_WRAPS, len(wraps), identity.public)  # fmt: skip
    if not also:
        return identity
    return Identity(identity.secret, (*identity.also, *also), local=identity.local)


def _oldest_first(info: ObjectInfo) -> tuple[bool, float, str]:
    return (info.modified is None, info.modified.timestamp() if info.modified else 0.0, info.key)


def _read_keys_object(
    storage: Storage, config: RepoConfig, identity: Identity, info: ObjectInfo
) -> WriterKey:
    """ValueError saying why the object is not this repository's keys object."""
    if info.size > MAX_KEYS_OBJECT:
        raise ValueError(f"{info.size} bytes, larger than a keys object ({MAX_KEYS_OBJECT})")
    try:
        stored = storage.get(info.key, max_size=MAX_KEYS_OBJECT)
        writer = parse_keys_object(identity.decrypt(stored), config.recipients)
    except (StorageError, AgeError) as exc:
        raise ValueError(f"cannot be read: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"not a keys object: {exc}") from None
    if writer.fingerprint != config.key_fingerprint:
        raise ValueError(
            f"holds another id-key (fingerprint {writer.fingerprint}, the repository's is "
            f"{config.key_fingerprint})"
        )
    return writer
