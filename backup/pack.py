"""Packs: many compressed blobs in one age-encrypted object of about 16 MiB.

Plaintext layout (FORMAT.md): blob bytes back to back, then a JSON header listing every blob,
then the header's length as 4 bytes little-endian, then the magic ``POPK``. The whole
plaintext is encrypted as one age file, so nothing about the blobs shows from outside but the
pack's size; the index (readable by writers) holds offsets, so blobs are shuffled within a pack
to keep a file's chunks from sitting in order.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import threading
from dataclasses import dataclass
from enum import StrEnum

import zstandard

MAGIC = b"POPK"
TARGET_SIZE = 16 * 1024 * 1024
ZSTD_LEVEL = 3
# Keep compressed output only when it saves at least this share: media and archives do not
# shrink, and storing them raw saves the decompression on restore.
MIN_SAVING = 0.03


class BlobType(StrEnum):
    DATA = "data"
    TREE = "tree"


class Compression(StrEnum):
    NONE = "none"
    ZSTD = "zstd"


@dataclass(frozen=True)
class BlobEntry:
    """Where one blob sits inside a pack's plaintext."""

    id: bytes
    type: BlobType
    offset: int
    length: int  # stored length (after compression)
    raw_length: int
    compression: Compression

    def to_row(self) -> list[object]:
        return [
            self.id.hex(),
            self.type.value,
            self.offset,
            self.length,
            self.raw_length,
            self.compression.value,
        ]

    @classmethod
    def from_row(cls, row: list[object]) -> BlobEntry:
        blob_id, kind, offset, length, raw_length, comp = row
        return cls(
            bytes.fromhex(str(blob_id)),
            BlobType(str(kind)),
            int(str(offset)),
            int(str(length)),
            int(str(raw_length)),
            Compression(str(comp)),
        )


class PackFormatError(ValueError):
    """A pack's plaintext is not in the expected layout."""


SAMPLE = 64 * 1024
_probe = threading.local()


def _looks_incompressible(raw: bytes) -> bool:
    """Media, archives and encrypted files: two 64 KiB samples at zstd's fastest level tell
    for a fraction of the cost of compressing the whole blob."""
    if len(raw) < 4 * SAMPLE:
        return False
    probe = getattr(_probe, "compressor", None)
    if probe is None:
        probe = _probe.compressor = zstandard.ZstdCompressor(level=1)
    middle = len(raw) // 2
    sample = raw[:SAMPLE] + raw[middle : middle + SAMPLE]
    return len(probe.compress(sample)) > len(sample) * (1 - MIN_SAVING)


def compress(
    data: bytes | memoryview, compressor: zstandard.ZstdCompressor
) -> tuple[bytes, Compression]:
    raw = bytes(data)
    if len(raw) < 64 or _looks_incompressible(raw):
        return raw, Compression.NONE
    packed = compressor.compress(raw)
    if len(packed) <= len(raw) * (1 - MIN_SAVING):
        return packed, Compression.ZSTD
    return raw, Compression.NONE


def decompress(stored: bytes | memoryview, entry: BlobEntry) -> bytes:
    if entry.compression is Compression.NONE:
        return bytes(stored)
    return zstandard.ZstdDecompressor().decompress(stored, max_output_size=entry.raw_length)


@dataclass
class PendingBlob:
    id: bytes
    type: BlobType
    stored: bytes
    raw_length: int
    compression: Compression


class PackBuilder:
    """Collects blobs until the pack is full, then lays them out in a shuffled order."""

    def __init__(self) -> None:
        self.blobs: list[PendingBlob] = []
        self.size = 0

    def add(self, blob: PendingBlob) -> None:
        self.blobs.append(blob)
        self.size += len(blob.stored)

    def full(self) -> bool:
        return self.size >= TARGET_SIZE

    def __len__(self) -> int:
        return len(self.blobs)

    def build(self) -> tuple[bytes, list[BlobEntry]]:
        """The pack's plaintext and its entries (offsets into that plaintext)."""
        order = list(self.blobs)
        # Seeded from the OS once per pack: SystemRandom would make a syscall per blob.
        random.Random(os.urandom(32)).shuffle(order)  # noqa: S311 - not a secret, an order
        parts: list[bytes] = []
        entries: list[BlobEntry] = []
        offset = 0
        for blob in order:
            parts.append(blob.stored)
            entries.append(
                BlobEntry(
                    blob.id, blob.type, offset, len(blob.stored), blob.raw_length, blob.compression
                )
            )
            offset += len(blob.stored)
        header = json.dumps(
            {"version": 1, "blobs": [e.to_row() for e in entries]}, separators=(",", ":")
        ).encode()
        parts += [header, struct.pack("<I", len(header)), MAGIC]
        return b"".join(parts), entries


def pack_key(encrypted: bytes) -> str:
    """Packs are named by the SHA-256 of their stored (encrypted) bytes."""
    digest = hashlib.sha256(encrypted).hexdigest()
    return f"packs/{digest[:2]}/{digest}"


def read_header(plaintext: bytes) -> list[BlobEntry]:
    """The blob list a pack carries, to verify it or rebuild a lost index."""
    if len(plaintext) < 8 or plaintext[-4:] != MAGIC:
        raise PackFormatError("no pack trailer")
    (length,) = struct.unpack("<I", plaintext[-8:-4])
    start = len(plaintext) - 8 - length
    if start < 0:
        raise PackFormatError("header length beyond the pack")
    try:
        doc = json.loads(plaintext[start:-8])
        return [BlobEntry.from_row(row) for row in doc["blobs"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise PackFormatError(f"unreadable header: {exc}") from None
