"""Delta bases: the local copy of yesterday's dump that makes today's a set of small deltas.

A database dump changes a little each day, but everywhere: pg_dump writes rows in physical
order, an updated row moves to the end of its table, and a day on which 0.5 % of the rows
changed leaves hardly a 1 MiB chunk untouched, so deduplication alone stores the whole dump
again (``docs/benchmarks.md``, "Daily database dumps"). So a stream's new chunk is also
compressed with the chunk it replaces as zstd's dictionary, and stored as that *delta* when
it is smaller (FORMAT.md, compression ``zstd-delta``): a day of scattered updates then adds
about what changed.

A backup host holds the writer key and cannot read packs, so the bases' bytes are kept here,
beside the files cache: ``<source>.bases/`` holds ``manifest.json`` (per stream, each chunk
of the last dump in order: an anchor, its blob id, its base's id, and the delta bytes stored
against that base so far) and one ``<base id>.zst`` per base (a zstd frame of its bytes).
They are the plaintext of the dump the host just made, so root-only, like the dump's source.

Nothing here is trusted for the repository's sake: a base is used only when its bytes hash
to its id (keyed BLAKE3, as every blob) and every repository written holds it whole; a
missing, damaged or foreign cache only means the chunks are stored whole that day, and the
next run starts a new one. Which old chunk a new one replaces: the old chunk that began with
the same bytes (chunk edges are content-defined, so most survive scattered edits), else the
one after the previous match (the first: a dump's header holds its time); and the old chunk
after that one too, as an edit that removed a cut point makes the new chunk run on into it.

Chains are one step deep: a delta's base is always a whole blob, so a restore reads at most
two blobs for one. Each day's delta is taken against the same base, so it grows with the
changes since then; a chunk is stored whole again (and becomes the base) once the deltas
stored against its base would add up to more than the chunk whole, which keeps the stored
total within twice the best choice of rebase day (the ski-rental bound).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import zstandard

from portalops.backup.repo.pack import CompressedDataError, unzstd
from portalops.backup.repo.writer import BlobWriter, DeltaHint
from portalops.core.atomic import write_atomic

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
ZSTD_DICT_MAGIC = b"\x37\xa4\x30\xec"
VERSION = 1
ANCHOR_BYTES = 256  # an old and a new chunk starting with these bytes alike: the same place
MAX_MANIFEST = 64 * 1024 * 1024  # ~120 bytes a chunk: a 500 GiB dump
BASE_LEVEL = 1  # the local copy is compressed for space, fast: it is written every night


@dataclass(frozen=True)
class _Entry:
    anchor: bytes
    blob: bytes
    base: bytes
    spent: int


@dataclass
class _Seen:
    """One chunk of tonight's stream: kept as it was (``entry``), or pending on what
    compression decides for it (``hint``; none: stored whole, its own base tomorrow)."""

    anchor: bytes
    blob: bytes
    entry: _Entry | None = None
    hint: DeltaHint | None = None


@dataclass
class DeltaBases:
    """One source's bases: read at the start of a backup, replaced by :meth:`commit` once
    its snapshot is written."""

    directory: Path
    writer: BlobWriter
    max_blob: int
    old: dict[str, list[_Entry]] = field(default_factory=dict)
    new: dict[str, list[_Seen]] = field(default_factory=dict)
    broken: bool = False  # a chunk could not be kept: tonight's manifest is not written

    @classmethod
    def open(cls, directory: Path, writer: BlobWriter, max_blob: int) -> DeltaBases:
        bases = cls(directory, writer, max_blob)
        try:
            bases.old = _read_manifest(directory / MANIFEST)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, RecursionError) as exc:  # damaged: start again
            log.warning("%s: ignored (%s); tonight's dumps are stored whole", directory, exc)
        return bases

    def stream(self, name: str) -> StreamBases:
        return StreamBases(self, self.old.get(name, []), self.new.setdefault(name, []))

    def base_bytes(self, base: bytes) -> bytes | None:
        """A base's bytes from the local copy, if they are there and hash to its id."""
        path = self.directory / f"{base.hex()}.zst"
        try:
            with path.open("rb") as handle:
                frame = handle.read(self.max_blob * 2 + 1024)
            data = unzstd(frame, self.max_blob)
        except (OSError, CompressedDataError):
            return None
        return data if self.writer.blob_id(data) == base else None

    def keep(self, blob: bytes, data: bytes | memoryview) -> None:
        """Keep a chunk's bytes, as it may be tomorrow's base. A cache that cannot be
        written (a full disk) costs tomorrow's deltas, never tonight's backup."""
        if self.broken:
            return
        try:
            self._keep(blob, data)
        except OSError as exc:
            self.broken = True
            log.warning(
                "%s: cannot keep tonight's chunks (%s); tomorrow's go whole", self.directory, exc
            )

    def _keep(self, blob: bytes, data: bytes | memoryview) -> None:
        path = self.directory / f"{blob.hex()}.zst"
        if path.exists():
            return
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        frame = zstandard.ZstdCompressor(level=BASE_LEVEL).compress(data)
        # Renamed into place, not synced: a file a crash tears fails its id check tomorrow
        # (one chunk stored whole); an fsync per chunk cost a day-2 dump a tenth of its time.
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(frame)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def commit(self) -> None:
        """Tonight's chunks become tomorrow's: the manifest is replaced, bases no chunk names
        any more are deleted. Called once every chunk's compression is decided. A cache that
        cannot be written (a full disk) costs tomorrow's deltas, not tonight's backup."""
        try:
            self._commit()
        except OSError as exc:
            log.warning(
                "%s: not updated (%s); tomorrow's dumps are stored whole", self.directory, exc
            )

    def _commit(self) -> None:
        if self.broken:  # it would name bases that are not there
            return
        streams: dict[str, list[list[object]]] = {}
        for name, seen in self.new.items():
            streams[name] = [_row(_decided(chunk)) for chunk in seen]
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        body = {"version": VERSION, "streams": streams}
        write_atomic(self.directory / MANIFEST, json.dumps(body).encode(), mode=0o600)
        named = {row[2] for rows in streams.values() for row in rows}
        for path in [*self.directory.glob("*.zst"), *self.directory.glob(".*.tmp")]:
            if path.stem not in named:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


@dataclass
class StreamBases:
    """The bases of one stream (one dump file) of a source."""

    bases: DeltaBases
    old: list[_Entry]
    seen: list[_Seen]
    _by_anchor: dict[bytes, int] = field(default_factory=dict)
    _last: int | None = None  # the old chunk the previous new one matched

    def __post_init__(self) -> None:
        for position, entry in enumerate(self.old):
            self._by_anchor.setdefault(entry.anchor, position)

    def hint(self, chunk: bytes | memoryview, blob: bytes) -> DeltaHint | None:
        """What to hand ``BlobWriter.add`` with this chunk: the base it may be a delta of."""
        bases, writer = self.bases, self.bases.writer
        anchor = blake3.blake3(chunk[:ANCHOR_BYTES]).digest(16)
        position = self._by_anchor.get(anchor)
        if position is None:  # the stream's first chunk holds the dump's time: no anchor
            following = 0 if self._last is None else self._last + 1
            position = following if following < len(self.old) else None
        self._last = position
        old = self.old[position] if position is not None else None
        if writer.known(blob):  # stored already: tomorrow's base stays what it was
            if old is not None and old.blob == blob:
                self.seen.append(_Seen(anchor, blob, entry=old))
            elif writer.whole_everywhere(blob) is not None:
                bases.keep(blob, chunk)
                self.seen.append(_Seen(anchor, blob, entry=_Entry(anchor, blob, blob, 0)))
            return None
        bases.keep(blob, chunk)
        hint = None
        if old is not None and position is not None:
            # The chunk it replaces, and the one after: an edit that removed a cut point
            # makes tonight's chunk run on into what was the next one.
            after = self.old[position + 1].base if position + 1 < len(self.old) else None
            chosen: list[bytes] = []
            contents: list[bytes] = []
            ratio = None
            for base in (old.base, after):
                if base is None or base in chosen:
                    break
                stored = writer.whole_everywhere(base)
                content = bases.base_bytes(base) if stored is not None else None
                if content is None:
                    break
                ratio = stored if ratio is None else ratio
                chosen.append(base)
                contents.append(content)
            # `zstd -D` (as backup/emergency_restore.py runs it) would take a dictionary that
            # starts with the trained-dictionary magic for one, and fail: no delta then.
            if chosen and ratio is not None and not contents[0].startswith(ZSTD_DICT_MAGIC):
                hint = DeltaHint(tuple(chosen), tuple(contents), old.spent, ratio)
        self.seen.append(_Seen(anchor, blob, hint=hint))
        return hint


def _decided(chunk: _Seen) -> _Entry:
    if chunk.entry is not None:
        return chunk.entry
    hint = chunk.hint
    if hint is not None and hint.delta_length is not None:
        return _Entry(chunk.anchor, chunk.blob, hint.bases[0], hint.spent + hint.delta_length)
    return _Entry(chunk.anchor, chunk.blob, chunk.blob, 0)


def _row(entry: _Entry) -> list[object]:
    return [entry.anchor.hex(), entry.blob.hex(), entry.base.hex(), entry.spent]


def _read_manifest(path: Path) -> dict[str, list[_Entry]]:
    with path.open("rb") as handle:
        data = handle.read(MAX_MANIFEST + 1)
    if len(data) > MAX_MANIFEST:
        raise ValueError(f"manifest over {MAX_MANIFEST} bytes")
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise ValueError("not a version 1 manifest")
    streams = doc.get("streams")
    if not isinstance(streams, dict):
        raise ValueError("'streams' is not an object")
    if not all(isinstance(rows, list) for rows in streams.values()):
        raise ValueError("a stream's chunks are not a list")
    return {str(name): [_entry(row) for row in rows] for name, rows in streams.items()}


def _entry(row: object) -> _Entry:
    if not (isinstance(row, list) and len(row) == 4):
        raise ValueError("a chunk row is not [anchor, blob, base, spent]")
    *ids, spent = row
    if not (type(spent) is int and spent >= 0):
        raise ValueError("a chunk's spent bytes are not a count")
    if not all(isinstance(value, str) for value in ids):
        raise ValueError("a chunk row's ids are not text")
    try:
        anchor, blob, base = (bytes.fromhex(str(value)) for value in ids)
    except ValueError:
        raise ValueError("a chunk row holds something other than hex digits") from None
    entry = _Entry(anchor, blob, base, spent)
    if len(entry.anchor) != 16 or len(entry.blob) != 32 or len(entry.base) != 32:
        raise ValueError("a chunk row's ids have the wrong length")
    return entry


def bases_dir(cache_file: Path) -> Path:
    """Where a source's bases live: beside its files cache (``<source>.sqlite``)."""
    return cache_file.with_suffix(".bases")
