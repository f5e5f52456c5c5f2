"""A hostile backup host: forges repository objects from ``backup/FORMAT.md`` and the writer key.

This module deliberately imports nothing from portal-ops. It knows only what the format
document says (object names, pack layout, index MAC, tree and snapshot JSON) and holds only
what a compromised portal server holds: the writer key file. Every object it makes is one a
real attacker with root on a backup host could write, so the tests that use it prove two
things at once: that the admin host contains what a writer forges, and that FORMAT.md is
complete enough to forge (and so to restore) without the project's code.

Encryption to the repository's recipients uses pyrage, an independent age implementation.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import blake3
import pyrage
import zstandard

INDEX_MAC_CONTEXT = "portal-ops 2026 index mac v1"  # FORMAT.md, "Keys"


@dataclass
class Blob:
    """One blob as a pack stores it: ``stored`` bytes, decompressing to ``raw_length``."""

    id: bytes
    type: str  # "data" or "tree"
    stored: bytes
    raw_length: int
    compression: str = "none"
    bases: list[bytes] = field(default_factory=list)  # a "zstd-delta" blob's bases


@dataclass
class Forger:
    """Writes forged objects with ``put(key, bytes)``: a backup host's write access."""

    writer_key: Path
    put: Callable[[str, bytes], None]
    pending: list[Blob] = field(default_factory=list)
    packs: list[dict[str, Any]] = field(default_factory=list)  # index records written so far

    def __post_init__(self) -> None:
        doc = json.loads(self.writer_key.read_text())
        self.id_key = bytes.fromhex(doc["id_key"])
        self.recipients = [pyrage.x25519.Recipient.from_str(r) for r in doc["recipients"]]
        self.mac_key = blake3.blake3(self.id_key, derive_key_context=INDEX_MAC_CONTEXT).digest()

    # -- primitives ---------------------------------------------------------------------

    def blob_id(self, data: bytes) -> bytes:
        return blake3.blake3(data, key=self.id_key).digest()

    def encrypt(self, data: bytes) -> bytes:
        return pyrage.encrypt(data, self.recipients)

    def add_blob(self, data: bytes, kind: str = "data") -> bytes:
        """Queue a blob (stored uncompressed) for the next pack; return its id."""
        blob_id = self.blob_id(data)
        self.pending.append(Blob(blob_id, kind, data, len(data)))
        return blob_id

    def add_delta(self, data: bytes, bases: list[bytes], dictionary: bytes) -> bytes:
        """Queue ``data`` as a delta blob (FORMAT.md): a zstd frame made with ``dictionary``
        (meant to be the bases' bytes joined) as raw content; return its id."""
        frame = zstandard.ZstdCompressor(
            dict_data=zstandard.ZstdCompressionDict(
                dictionary, dict_type=zstandard.DICT_TYPE_RAWCONTENT
            )
        ).compress(data)
        blob_id = self.blob_id(data)
        self.pending.append(Blob(blob_id, "data", frame, len(data), "zstd-delta", bases))
        return blob_id

    def add_raw_blob(self, blob: Blob) -> bytes:
        """Queue a blob exactly as given (any id, any compression, any claimed length)."""
        self.pending.append(blob)
        return blob.id

    # -- trees and snapshots ------------------------------------------------------------

    def file_node(self, name: str | bytes, content: bytes, **extra: Any) -> dict[str, Any]:
        node = self._node(name, "file", 0o644, **extra)
        node["size"] = len(content)
        node["content"] = [self.add_blob(content).hex()] if content else []
        return node

    def dir_node(
        self, name: str | bytes, nodes: list[dict[str, Any]], **extra: Any
    ) -> dict[str, Any]:
        node = self._node(name, "dir", 0o755, **extra)
        node["subtree"] = self.tree(nodes).hex()
        return node

    def symlink_node(self, name: str | bytes, target: str, **extra: Any) -> dict[str, Any]:
        node = self._node(name, "symlink", 0o777, **extra)
        node["target"] = target
        return node

    def subtree_node(self, name: str | bytes, subtree: bytes, **extra: Any) -> dict[str, Any]:
        """A directory whose tree is ``subtree`` (an id already queued or stored): one tree
        may be named by any number of directories."""
        node = self._node(name, "dir", 0o755, **extra)
        node["subtree"] = subtree.hex()
        return node

    def reuse_bomb(self, levels: int, *, leaf: bytes = b"x") -> bytes:
        """A tree ``levels`` deep whose every directory holds the one below it twice (as
        ``a`` and ``b``): a few hundred bytes per level, 2**levels paths. Returns its id."""
        tree = self.tree([self.file_node("leaf", leaf)])
        for _ in range(levels):
            tree = self.tree([self.subtree_node("a", tree), self.subtree_node("b", tree)])
        return tree

    def tree(self, nodes: list[dict[str, Any]]) -> bytes:
        """Queue a tree blob holding ``nodes`` (kept in the given order); return its id."""
        doc = {"version": 1, "nodes": nodes}
        data = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return self.add_blob(data.encode(), "tree")

    @staticmethod
    def _node(name: str | bytes, kind: str, mode: int, **extra: Any) -> dict[str, Any]:
        node: dict[str, Any] = {"type": kind, "mode": mode, "uid": 0, "gid": 0, "mtime_ns": 0}
        if isinstance(name, bytes):
            import base64

            node["name_b64"] = base64.b64encode(name).decode()
        else:
            node["name"] = name
        node.update(extra)
        return node

    # -- packs, index, snapshots --------------------------------------------------------

    def seal_pack(
        self, *, shuffle: bool = True, transform: Callable[[bytes], bytes] | None = None
    ) -> dict[str, Any]:
        """Write the queued blobs as one pack; return its index record (not yet indexed).
        ``transform`` rewrites the stored (encrypted) bytes before they are named and put,
        e.g. to damage the age header."""
        blobs = list(self.pending)
        self.pending.clear()
        if shuffle:
            random.Random(0).shuffle(blobs)
        rows, parts, offset = [], [], 0
        for blob in blobs:
            rows.append(
                [blob.id.hex(), blob.type, offset, len(blob.stored), blob.raw_length,
                 blob.compression]
            )  # fmt: skip
            if blob.compression == "zstd-delta":
                rows[-1].append([base.hex() for base in blob.bases])
            parts.append(blob.stored)
            offset += len(blob.stored)
        header = json.dumps({"version": 1, "blobs": rows}, separators=(",", ":")).encode()
        plaintext = b"".join([*parts, header, struct.pack("<I", len(header)), b"POPK"])
        stored = self.encrypt(plaintext)
        if transform is not None:
            stored = transform(stored)
        digest = hashlib.sha256(stored).hexdigest()
        key = f"packs/{digest[:2]}/{digest}"
        self.put(key, stored)
        record = {"key": key, "size": len(stored), "blobs": rows}
        self.packs.append(record)
        return record

    def index_bytes(self, records: list[dict[str, Any]], pad: int = 0) -> bytes:
        doc: dict[str, Any] = {"version": 1, "packs": records}
        if pad:
            doc["pad"] = pad  # readers ignore unknown keys: a free knob for the object's name
        body = zstandard.ZstdCompressor().compress(json.dumps(doc).encode())
        return body + blake3.blake3(body, key=self.mac_key).digest()

    def write_index(
        self,
        records: list[dict[str, Any]] | None = None,
        *,
        sort_first: bool = False,
        before: str | None = None,
    ) -> str:
        """Index ``records`` (default: every pack sealed so far) in one authentic index;
        ``sort_first``: pad it until its name sorts before most genuine indexes' (its digest
        starts with "00": a few hundred tries), so a reader that lets the first location win
        reads it first; ``before``: until it sorts before that index key for certain."""
        records = self.packs if records is None else records
        pad = 0
        while True:
            data = self.index_bytes(records, pad)
            digest = hashlib.sha256(data).hexdigest()
            if before is not None:
                if f"index/{digest}" < before:
                    break
            elif not sort_first or digest.startswith("00"):
                break
            pad += 1
        key = f"index/{digest}"
        self.put(key, data)
        return key

    def write_raw_index(self, document: bytes) -> str:
        """An authentic index object around any JSON text (or none): the MAC is a writer's."""
        body = zstandard.ZstdCompressor().compress(document)
        data = body + blake3.blake3(body, key=self.mac_key).digest()
        key = f"index/{hashlib.sha256(data).hexdigest()}"
        self.put(key, data)
        return key

    @staticmethod
    def read_index(data: bytes) -> list[dict[str, Any]]:
        """A genuine index object's records (a writer reads these to deduplicate)."""
        body = zstandard.ZstdDecompressor().decompress(data[:-32], max_output_size=1 << 26)
        packs: list[dict[str, Any]] = json.loads(body)["packs"]
        return packs

    def snapshot(
        self,
        source: str,
        when: datetime,
        tree: bytes,
        *,
        paths: list[str] | None = None,
        category: str = "code",
        body: dict[str, Any] | None = None,
    ) -> str:
        """Write a snapshot object for ``source`` stated at ``when``; return its key."""
        doc: dict[str, Any] = {
            "version": 1,
            "source": source,
            "category": category,
            "host": "web1",
            "time": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "tree": tree.hex(),
            "paths": paths or ["/srv/www"],
            "tool": "portal-ops 0.1.0",
            "summary": {"files": 1, "dirs": 0, "bytes": 0},
            "stats": {},
        }
        if body is not None:
            doc.update(body)
        return self.snapshot_bytes(source, when, json.dumps(doc).encode())

    def snapshot_bytes(self, source: str, when: datetime, plaintext: bytes) -> str:
        """Write any ``plaintext`` (JSON or not) as a snapshot body; return its key."""
        stored = self.encrypt(plaintext)
        key = snapshot_key(source, when, stored)
        self.put(key, stored)
        return key

    def commit(self, source: str, when: datetime, nodes: list[dict[str, Any]], **kw: Any) -> str:
        """The whole write order a backup uses: root tree, pack, index, then the snapshot."""
        root = self.tree(nodes)
        self.seal_pack()
        self.write_index([self.packs[-1]])
        return self.snapshot(source, when, root, **kw)


def snapshot_key(source: str, when: datetime, stored: bytes) -> str:
    stamp = when.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"snapshots/{source}/{stamp}-{hashlib.sha256(stored).hexdigest()}"
