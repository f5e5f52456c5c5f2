"""The index: blob id -> pack, offset, length. Readable by writers (it holds no content),
authenticated with a MAC keyed by the id-key, written only after the packs it names."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import blake3
import zstandard

from backup.pack import BlobEntry

MAC_LENGTH = 32


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
    # Further places a blob is said to be. Two writers racing store one blob twice, which is
    # harmless; a forged index naming a known blob elsewhere is not, so no location is ever
    # dropped: restore tries each, and prune stops until they are confirmed.
    others: dict[bytes, list[Location]] = field(default_factory=dict)
    conflicting_packs: set[str] = field(default_factory=set)  # described differently twice

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
            if first != location and location not in self.others.get(entry.id, ()):
                self.others.setdefault(entry.id, []).append(location)

    def locations(self, blob_id: bytes) -> list[Location]:
        """Every place the index says holds ``blob_id``, the first-read one first."""
        first = self.blobs.get(blob_id)
        if first is None:
            return []
        return [first, *self.others.get(blob_id, ())]

    def __contains__(self, blob_id: object) -> bool:
        return blob_id in self.blobs

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


def decode(data: bytes, mac_key: bytes) -> Iterator[PackRecord]:
    body, mac = data[:-MAC_LENGTH], data[-MAC_LENGTH:]
    if len(data) <= MAC_LENGTH or not hmac.compare_digest(
        blake3.blake3(body, key=mac_key).digest(), mac
    ):
        raise IndexFormatError("MAC mismatch: not written with this repository's key, or damaged")
    try:
        doc = json.loads(zstandard.ZstdDecompressor().decompress(body, max_output_size=1 << 30))
        for pack in doc["packs"]:
            yield PackRecord(
                str(pack["key"]),
                int(pack["size"]),
                tuple(BlobEntry.from_row(row) for row in pack["blobs"]),
            )
    except (ValueError, KeyError, TypeError, zstandard.ZstdError) as exc:
        raise IndexFormatError(f"unreadable: {exc}") from None


def index_key(data: bytes) -> str:
    return f"index/{hashlib.sha256(data).hexdigest()}"
