"""Packs: many compressed blobs in one age-encrypted object of about 16 MiB.

Plaintext layout (FORMAT.md): blob bytes back to back, then a JSON header listing every blob,
then the header's length as 4 bytes little-endian, then the magic ``POPK``. The whole
plaintext is encrypted as one age file, so nothing about the blobs shows from outside but the
pack's size; the index (readable by writers) holds offsets, so blobs are shuffled within a pack
to keep a file's chunks from sitting in order.

Every size here is also a bound on what the admin host reads: packs, index rows and blob
lengths can be written by a compromised backup host, so a pack larger than any this module
builds, a blob claiming more bytes than a chunk or tree can hold, and a zstd frame declaring
more than its blob claims are refused before anything of that size is allocated.
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

MiB = 1024 * 1024
MAGIC = b"POPK"
TARGET_SIZE = 16 * MiB
# The largest blobs this tool writes. A data blob is one chunk, so at most the chunker's
# maximum (the repository config's ``chunker.max``; this is its value since version 1). A tree
# blob is one directory's listing, about 200 bytes an entry: 64 MiB is some 300,000 entries in
# one directory, and its JSON already costs several hundred MiB to decode.
MAX_DATA_BLOB = 4 * MiB
MAX_TREE_BLOB = 64 * MiB
# A header row takes at most this many bytes (64 hex digits, a type, three numbers, a
# compression); the builder counts it, so tiny blobs cannot swell a pack's header past the
# target either.
HEADER_ROW = 128
# A delta blob's row also names its bases: a list of at most MAX_BASES ids in quotes.
MAX_BASES = 2
BASE_FIELD = 4 + 67 * MAX_BASES
# The largest pack a genuine writer makes: a builder seals once blobs and header reach the
# target, so a pack is the target plus at most one blob (a tree blob at most) and its row;
# 1 MiB covers that row, the trailer and age's overhead (16 bytes per 64 KiB, one stanza per
# recipient). Anything larger under packs/ is refused before it is read into memory.
MAX_PACK_SIZE = TARGET_SIZE + MAX_TREE_BLOB + MiB
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
    DELTA = "zstd-delta"  # a zstd frame made with another blob (the base) as its dictionary


@dataclass(frozen=True)
class BlobEntry:
    """Where one blob sits inside a pack's plaintext."""

    id: bytes
    type: BlobType
    offset: int
    length: int  # stored length (after compression)
    raw_length: int
    compression: Compression
    # A delta's bases: the blobs whose bytes, in this order, are its dictionary (else empty).
    bases: tuple[bytes, ...] = ()

    def to_row(self) -> list[object]:
        row: list[object] = [
            self.id.hex(),
            self.type.value,
            self.offset,
            self.length,
            self.raw_length,
            self.compression.value,
        ]
        if self.bases:
            row.append([base.hex() for base in self.bases])
        return row

    @classmethod
    def from_row(cls, row: object) -> BlobEntry:
        """A header or index row, every field checked (ValueError naming the field): rows
        come from objects a writer may have forged.

        Run once per blob of every index and pack header read (a restore of 30,000 small
        files: twice 30,000 times), so the common case takes no regex, enum call or
        dataclass ``__init__``; the checks are the same on every path."""
        if not isinstance(row, list) or len(row) != 6:
            return cls._delta_row(row)
        blob_id, kind, offset, length, raw_length, comp = row
        raw_id = _hex64(blob_id)
        blob_type = _TYPES.get(kind) if isinstance(kind, str) else None
        if blob_type is None:
            raise ValueError(f"blob {blob_id[:16]}: type {_shown(kind)} is not data or tree")
        compression = _COMPRESSIONS.get(comp) if isinstance(comp, str) else None
        if compression is None or compression is Compression.DELTA:
            raise ValueError(f"blob {blob_id[:16]}: compression {_shown(comp)} is not none or zstd")
        # type() is int: neither bool nor any other int subclass, as _size checks.
        if not (
            type(offset) is int
            and type(length) is int
            and type(raw_length) is int
            and offset >= 0
            and length >= 0
            and raw_length >= 0
        ):
            _size(blob_id, "offset", offset)
            _size(blob_id, "length", length)
            _size(blob_id, "raw_length", raw_length)
        # The frozen dataclass's __init__ sets each field through object.__setattr__; filling
        # the instance dict directly makes an equal, equally hashable entry at half the cost.
        entry = _new(cls)
        entry.__dict__.update(
            id=raw_id,
            type=blob_type,
            offset=offset,
            length=length,
            raw_length=raw_length,
            compression=compression,
            bases=(),
        )
        return entry

    @classmethod
    def _delta_row(cls, row: object) -> BlobEntry:
        """A delta blob's row: the six fields, compression ``zstd-delta``, then the list of its
        bases' ids (1 to MAX_BASES, distinct). A data blob only, never its own base (chain
        depth 1 is checked where a base is read: its own row must not be a delta)."""
        if not isinstance(row, list) or len(row) != 7:
            raise ValueError(f"a blob row has 6 fields (7 for a delta), not {_shown(row)}")
        *fields, listed = row
        if fields[5] != Compression.DELTA.value:
            raise ValueError(f"a blob row of 7 fields is a delta's, not {_shown(fields[5])}")
        fields[5] = Compression.ZSTD.value
        entry = cls.from_row(fields)
        if entry.type is not BlobType.DATA:
            raise ValueError(f"blob {entry.id.hex()[:16]}: a delta must be a data blob")
        if not isinstance(listed, list) or not 0 < len(listed) <= MAX_BASES:
            raise ValueError(f"blob {entry.id.hex()[:16]}: bases {_shown(listed)} is not a list")
        bases = tuple(_hex64(base) for base in listed)
        if entry.id in bases or len(set(bases)) != len(bases):
            raise ValueError(f"blob {entry.id.hex()[:16]}: a delta's bases repeat or name itself")
        entry.__dict__.update(compression=Compression.DELTA, bases=bases)
        return entry


_new = object.__new__
_TYPES: dict[str, BlobType] = {t.value: t for t in BlobType}
_COMPRESSIONS: dict[str, Compression] = {c.value: c for c in Compression}


def _hex64(blob_id: object) -> bytes:
    """The 32 bytes of a blob id written as 64 lowercase hex digits, nothing else (no
    uppercase, no spaces, which ``bytes.fromhex`` alone would take); ValueError otherwise."""
    if isinstance(blob_id, str) and len(blob_id) == 64:
        try:
            raw = bytes.fromhex(blob_id)
        except ValueError:
            raw = b""
        if len(raw) == 32 and raw.hex() == blob_id:
            return raw
    raise ValueError(f"blob id {_shown(blob_id)} is not 64 hex digits")


def _size(blob_id: str, name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"blob {blob_id[:16]}: {name} {_shown(value)} is not a size")
    return value


def _shown(value: object) -> str:
    """A writer-chosen value in a message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class PackFormatError(ValueError):
    """A pack's plaintext is not in the expected layout."""


class BlobFormatError(PackFormatError):
    """A blob's stored bytes do not match what its header row says of them."""


class CompressedDataError(ValueError):
    """Not one zstd frame, or one that would decompress to more than allowed."""


SAMPLE = 64 * 1024
_probe = threading.local()


def _looks_incompressible(raw: bytes | memoryview) -> bool:
    """Media, archives and encrypted files: two 64 KiB samples at zstd's fastest level tell
    for a fraction of the cost of compressing the whole blob."""
    if len(raw) < 4 * SAMPLE:
        return False
    probe = getattr(_probe, "compressor", None)
    if probe is None:
        probe = _probe.compressor = zstandard.ZstdCompressor(level=1)
    middle = len(raw) // 2
    sample = b"".join((raw[:SAMPLE], raw[middle : middle + SAMPLE]))
    return len(probe.compress(sample)) > len(sample) * (1 - MIN_SAVING)


def compress(
    raw: bytes | memoryview, compressor: zstandard.ZstdCompressor
) -> tuple[bytes | memoryview, Compression]:
    """(what to store, how): zstd's output, or ``raw`` itself (not a copy: a view stays a
    view, so it must not change until the blob is sealed, see ``BlobWriter.add``)."""
    if len(raw) < 64 or _looks_incompressible(raw):
        return raw, Compression.NONE
    packed = compressor.compress(raw)
    if len(packed) <= len(raw) * (1 - MIN_SAVING):
        return packed, Compression.ZSTD
    return raw, Compression.NONE


def blob_limit(kind: BlobType, max_data: int = MAX_DATA_BLOB) -> int:
    """The most bytes a blob of ``kind`` may decompress to (``max_data``: the repository's
    chunker maximum)."""
    return MAX_TREE_BLOB if kind is BlobType.TREE else max_data


def decompress(
    stored: bytes | memoryview,
    entry: BlobEntry,
    *,
    max_data: int = MAX_DATA_BLOB,
    base: bytes | None = None,
) -> bytes:
    """The blob's bytes from its ``stored`` slice of the pack plaintext; BlobFormatError when
    the slice, the row or the zstd frame disagree, or claim more than ``blob_limit`` allows.
    A delta blob needs its bases' bytes, joined (``base``). The caller still checks the
    result against the blob's id."""
    return bytes(blob_view(stored, entry, max_data=max_data, base=base))


def blob_view(
    stored: bytes | memoryview,
    entry: BlobEntry,
    *,
    max_data: int = MAX_DATA_BLOB,
    base: bytes | None = None,
) -> bytes | memoryview:
    """:func:`decompress`, checked alike, but a blob stored uncompressed comes back as
    ``stored`` itself, not a copy: media make up most of a restore's or a check's bytes,
    and hashing or writing them needs no copy of their own."""
    limit = blob_limit(entry.type, max_data)
    if entry.raw_length > limit:
        raise BlobFormatError(
            f"claims {entry.raw_length} bytes, more than a {entry.type.value} blob may hold "
            f"({limit})"
        )
    if len(stored) != entry.length:
        raise BlobFormatError(
            f"lies beyond the pack's plaintext (offset {entry.offset}, length {entry.length})"
        )
    if entry.compression is Compression.NONE:
        if entry.length != entry.raw_length:
            raise BlobFormatError(
                f"stored uncompressed in {entry.length} bytes, but claims {entry.raw_length}"
            )
        return stored
    if entry.compression is Compression.DELTA and base is None:
        raise BlobFormatError("is a delta, and its base was not given")
    try:
        return unzstd(stored, entry.raw_length, exact=True, dictionary=base)
    except CompressedDataError as exc:
        raise BlobFormatError(str(exc)) from None


def delta_compress(raw: bytes | memoryview, base: bytes) -> bytes:
    """``raw`` as one zstd frame whose dictionary is ``base``, as raw content (its bases'
    bytes joined; ``zstd -d -D base`` decompresses it). A new dictionary per blob: its tables
    cost about as much as compressing the blob (50-170 MB/s of base per core)."""
    window = max(1 << 20, 1 << (len(raw) + len(base)).bit_length())
    params = zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL,
        window_log=min(window.bit_length() - 1, DELTA_WINDOW_LOG),
        hash_log=DELTA_HASH_LOG,
    )
    dictionary = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    return zstandard.ZstdCompressor(dict_data=dictionary, compression_params=params).compress(raw)


# The window a delta's frame asks for: zstd reaches into the dictionary beyond it anyway.
DELTA_WINDOW_LOG = 23
# Level 3's hash table (2^17 entries) keeps too few of a 2 MiB dictionary's positions: a
# chunk of rows with 48 edits, against its two bases, came to 570 KB (whole: 697 KB); with
# 2^20 entries, 422 bytes at 8.5 ms per 1 MiB chunk (2^22: 418 bytes, 40 ms, the table's
# clearing dominating).
DELTA_HASH_LOG = 20


def unzstd(
    data: bytes | memoryview, limit: int, *, exact: bool = False, dictionary: bytes | None = None
) -> bytes:
    """One zstd frame's content, which must be at most ``limit`` bytes (exactly ``limit``
    with ``exact``); CompressedDataError otherwise.

    python-zstandard honours ``max_output_size`` only for frames that do not declare their
    size: a frame declaring 200 MiB is decompressed in full whatever the cap. So a declared
    size is compared with the limit before anything is decompressed, and a frame without one
    is read through a stream that stops one byte past the limit. The window a frame asks for
    is bounded too (it need never exceed the content).
    """
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError:
        raise CompressedDataError("not a zstd frame") from None
    if declared > limit or (exact and declared not in (-1, limit)):
        raise CompressedDataError(
            f"zstd frame declares {declared} bytes, the row says {limit}"
            if exact
            else f"zstd frame declares {declared} bytes, more than the {limit} allowed"
        )
    # zstd's own default ceiling is 128 MiB; 8 MiB covers frames made by `zstd -19`.
    window = min(1 << 27, max(1 << 23, 1 << max(limit - 1, 1).bit_length()))
    try:
        if dictionary is not None:  # a delta: its frames always declare their size
            if declared < 0:
                raise CompressedDataError("a delta's zstd frame declares no size")
            raw = zstandard.ZstdCompressionDict(
                dictionary, dict_type=zstandard.DICT_TYPE_RAWCONTENT
            )
            out = zstandard.ZstdDecompressor(dict_data=raw, max_window_size=window << 1).decompress(
                data, max_output_size=limit
            )
        elif declared >= 0:
            out = _decompressor(window).decompress(data, max_output_size=limit)
        else:
            out = _stream(zstandard.ZstdDecompressor(max_window_size=window), data, limit)
    except zstandard.ZstdError as exc:
        raise CompressedDataError(f"zstd: {exc}") from None
    if exact and len(out) != limit:
        raise CompressedDataError(f"zstd frame holds {len(out)} bytes, the row says {limit}")
    return out


_decompressors = threading.local()


def _decompressor(window: int) -> zstandard.ZstdDecompressor:
    """This thread's decompressor for frames of at most ``window``: one per thread and window,
    reused (a ZstdDecompressor is not thread-safe). A new one per blob cost more than the
    decompression itself for small blobs (its context and buffers allocated, then freed,
    each time): 25 us against 13 per 3 KiB blob, and 30% more on 1 MiB blobs."""
    cache: dict[int, zstandard.ZstdDecompressor] | None = getattr(_decompressors, "cache", None)
    if cache is None:
        cache = _decompressors.cache = {}
    decompressor = cache.get(window)
    if decompressor is None:
        decompressor = cache[window] = zstandard.ZstdDecompressor(max_window_size=window)
    return decompressor


def _stream(
    decompressor: zstandard.ZstdDecompressor, data: bytes | memoryview, limit: int
) -> bytes:
    out = bytearray()
    reader = decompressor.stream_reader(data, read_across_frames=False)
    while len(out) <= limit:
        piece = reader.read(min(MiB, limit + 1 - len(out)))
        if not piece:
            return bytes(out)
        out += piece
    raise CompressedDataError(f"zstd frame holds more than the {limit} bytes allowed")


@dataclass
class PendingBlob:
    id: bytes
    type: BlobType
    stored: bytes | memoryview  # a view into an immutable buffer (BlobWriter.add)
    raw_length: int
    compression: Compression
    bases: tuple[bytes, ...] = ()  # a delta's bases


class PackBuilder:
    """Collects blobs until the pack is full, then lays them out in a shuffled order.

    ``size`` counts each blob's header row too, so a pack never passes the target by more
    than its last blob: ``MAX_PACK_SIZE`` holds for every pack built here.
    """

    def __init__(self) -> None:
        self.blobs: list[PendingBlob] = []
        self.size = 0

    def add(self, blob: PendingBlob) -> None:
        self.blobs.append(blob)
        self.size += len(blob.stored) + HEADER_ROW + (BASE_FIELD if blob.bases else 0)

    def full(self) -> bool:
        return self.size >= TARGET_SIZE

    def __len__(self) -> int:
        return len(self.blobs)

    def build(self) -> tuple[bytes, list[BlobEntry]]:
        """The pack's plaintext and its entries (offsets into that plaintext)."""
        parts, entries = self.build_parts()
        return b"".join(parts), entries

    def build_parts(self) -> tuple[list[bytes | memoryview], list[BlobEntry]]:
        """:meth:`build`'s plaintext as the pieces it joins (the blobs in their shuffled
        order, the header, the trailer): encrypted straight from these, a pack is never held
        both as blobs and as one plaintext (16 MiB less at a seal's peak)."""
        order = list(self.blobs)
        # Seeded from the OS once per pack: SystemRandom would make a syscall per blob.
        random.Random(os.urandom(32)).shuffle(order)  # noqa: S311 - not a secret, an order
        parts: list[bytes | memoryview] = []
        entries: list[BlobEntry] = []
        offset = 0
        for blob in order:
            parts.append(blob.stored)
            entries.append(
                BlobEntry(
                    blob.id,
                    blob.type,
                    offset,
                    len(blob.stored),
                    blob.raw_length,
                    blob.compression,
                    blob.bases,
                )
            )
            offset += len(blob.stored)
        header = json.dumps(
            {"version": 1, "blobs": [e.to_row() for e in entries]}, separators=(",", ":")
        ).encode()
        parts += [header, struct.pack("<I", len(header)), MAGIC]
        return parts, entries


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
        rows = doc["blobs"]
        if not isinstance(rows, list):
            raise TypeError("'blobs' is not a list")
        return [BlobEntry.from_row(row) for row in rows]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise PackFormatError(f"unreadable header: {exc}") from None
