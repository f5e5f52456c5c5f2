"""The index: blob id -> pack, offset, length. Readable by writers (it holds no content),
authenticated with a MAC keyed by the id-key, written only after the packs it names."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import blake3
import zstandard

from portalops.backup.repo.pack import BlobEntry, unzstd

MAC_LENGTH = 32
# Places one blob may be said to be: racing writers make two or three, never more than a few.
MAX_LOCATIONS = 16


class IndexFormatError(ValueError):
    """An index object that fails its MAC or does not parse."""


@dataclass(frozen=True)
class Location:
    pack: str  # the pack's object key
    entry: BlobEntry


@dataclass(frozen=True)
class PackRecord:
    key: str
    size: int  # stored (encrypted) size
    blobs: tuple[BlobEntry, ...]


@dataclass
class Index:
    """Every blob the repository holds, merged from all index objects."""

    blobs: dict[bytes, Location] = field(default_factory=dict)  # the first location of each
    packs: dict[str, PackRecord] = field(default_factory=dict)
    objects: list[str] = field(default_factory=list)  # index object keys it was read from
    # Further places a blob is said to be (an ordered set per blob). Two writers racing store
    # one blob twice, which is harmless; a forged index naming a known blob elsewhere is not,
    # so no location is dropped silently: restore tries each, and prune stops until the packs'
    # headers confirm them. Past MAX_LOCATIONS a blob is ``crowded``: prune stops on that too.
    others: dict[bytes, dict[Location, None]] = field(default_factory=dict)
    crowded: set[bytes] = field(default_factory=set)
    conflicting_packs: set[str] = field(default_factory=set)  # described differently twice
    # Blobs this process stored, known by id only. Their rows are in the index objects it
    # wrote, which the next command reads; a backup only asks whether a blob exists, and a
    # full row per new blob grew its memory by ~1 KB each (35 MiB more peak memory for a
    # first backup of 1.4 GB of small files than of 0.7 GB).
    written: set[bytes] = field(default_factory=set)

    def add(self, record: PackRecord) -> None:
        known = self.packs.get(record.key)
        if known == record:
            return  # the same pack in two index objects (a prune that crashed midway)
        if known is not None:
            # Two different blob lists for one pack: at most one can match its header.
            self.conflicting_packs.add(record.key)
        else:
            self.packs[record.key] = record
        for entry in record.blobs:
            location = Location(record.key, entry)
            first = self.blobs.setdefault(entry.id, location)
            if first == location:
                continue
            others = self.others.setdefault(entry.id, {})
            if len(others) < MAX_LOCATIONS - 1:
                others[location] = None
            elif location not in others:
                self.crowded.add(entry.id)

    def note_written(self, record: PackRecord) -> None:
        """Remember that ``record``'s blobs exist (:attr:`written`), not where: a command that
        reads them back loads the index again."""
        self.written.update(entry.id for entry in record.blobs)

    def forget(self, blob_id: bytes) -> None:
        """Drop every location of a blob the caller found unbacked (its packs are gone), so
        that a writer stores it again."""
        self.blobs.pop(blob_id, None)
        self.others.pop(blob_id, None)
        self.written.discard(blob_id)

    def locations(self, blob_id: bytes) -> list[Location]:
        """Every place the index says holds ``blob_id``, the first-read one first."""
        first = self.blobs.get(blob_id)
        if first is None:
            return []
        return [first, *self.others.get(blob_id, ())]

    def __contains__(self, blob_id: object) -> bool:
        return blob_id in self.blobs or blob_id in self.written

    def get(self, blob_id: bytes) -> Location | None:
        return self.blobs.get(blob_id)


def encode(records: Iterable[PackRecord], mac_key: bytes) -> bytes:
    doc = {
        "version": 1,
        "packs": [
            {"key": r.key, "size": r.size, "blobs": [e.to_row() for e in r.blobs]} for r in records
        ],
    }
    body = zstandard.ZstdCompressor(level=3).compress(
        json.dumps(doc, separators=(",", ":")).encode()
    )
    return body + blake3.blake3(body, key=mac_key).digest()


# The most JSON one index object may decompress to. Prune writes one index naming every pack
# it keeps, so this bounds the repository too: some 5 million blobs (a row is ~100 bytes),
# whose index in memory already takes gigabytes; a forged object can cost no more than that.
MAX_INDEX_JSON = 512 * 1024 * 1024
_PACK_KEY = re.compile(r"packs/([0-9a-f]{2})/(\1[0-9a-f]{62})")


def decode(data: bytes, mac_key: bytes) -> Iterator[PackRecord]:
    """The pack records of one index object; IndexFormatError, naming what is wrong, when
    it fails its MAC, decompresses to more than ``MAX_INDEX_JSON`` or has any malformed
    field (a writer holds the MAC key, so an authentic index can still be hostile)."""
    body, mac = data[:-MAC_LENGTH], data[-MAC_LENGTH:]
    if len(data) <= MAC_LENGTH or not hmac.compare_digest(
        blake3.blake3(body, key=mac_key).digest(), mac
    ):
        raise IndexFormatError("MAC mismatch: not written with this repository's key, or damaged")
    try:
        doc = json.loads(unzstd(body, MAX_INDEX_JSON))
        if not isinstance(doc, dict) or doc.get("version") != 1:
            raise ValueError("not a version 1 index document")
        packs = doc["packs"]
        if not isinstance(packs, list):
            raise TypeError("'packs' is not a list")
        for pack in packs:
            yield _record(pack)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise IndexFormatError(f"unreadable: {exc}") from None


def _record(pack: object) -> PackRecord:
    if not isinstance(pack, dict):
        raise TypeError("a pack record is not an object")
    key, size, rows = pack["key"], pack["size"], pack["blobs"]
    if not isinstance(key, str) or not _PACK_KEY.fullmatch(key):
        raise ValueError(f"pack key {key!r:.80} is not packs/<xx>/<sha256>")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"{key}: size {size!r:.40} is not a size")
    if not isinstance(rows, list):
        raise TypeError(f"{key}: 'blobs' is not a list")
    return PackRecord(key, size, tuple(BlobEntry.from_row(row) for row in rows))


def index_key(data: bytes) -> str:
    return f"index/{hashlib.sha256(data).hexdigest()}"
