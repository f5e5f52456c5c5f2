"""Trees: one directory's entries and their metadata, stored as an encrypted blob.

A tree is canonical JSON (sorted keys, entries sorted by name bytes), so an unchanged directory
produces the same tree blob, and so the same id, every day: deduplication covers metadata too.
File names are bytes on Linux and may be NFC or NFD, or not UTF-8 at all; they are stored
exactly: as text when they decode as UTF-8, else base64 under ``name_b64``.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class NodeType(StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    FIFO = "fifo"


@dataclass(frozen=True)
class Node:
    name: bytes
    type: NodeType
    mode: int  # permission bits (st_mode & 0o7777)
    uid: int
    gid: int
    mtime_ns: int
    size: int = 0
    content: tuple[bytes, ...] = ()  # data blob ids, in order (files)
    subtree: bytes | None = None  # tree blob id (directories)
    target: bytes | None = None  # symlink target
    link_group: str | None = None  # "dev:inode" shared by hard links to one file
    user: str | None = None
    group: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": self.type.value,
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
            "mtime_ns": self.mtime_ns,
        }
        doc.update(_encode_bytes("name", self.name))
        if self.type is NodeType.FILE:
            doc["size"] = self.size
            doc["content"] = [blob.hex() for blob in self.content]
        if self.subtree is not None:
            doc["subtree"] = self.subtree.hex()
        if self.target is not None:
            doc.update(_encode_bytes("target", self.target))
        for key in ("link_group", "user", "group"):
            if getattr(self, key) is not None:
                doc[key] = getattr(self, key)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Node:
        subtree = doc.get("subtree")
        target = _decode_bytes("target", doc)
        return cls(
            name=_decode_bytes("name", doc) or b"",
            type=NodeType(doc["type"]),
            mode=int(doc["mode"]),
            uid=int(doc["uid"]),
            gid=int(doc["gid"]),
            mtime_ns=int(doc["mtime_ns"]),
            size=int(doc.get("size", 0)),
            content=tuple(bytes.fromhex(b) for b in doc.get("content", ())),
            subtree=bytes.fromhex(subtree) if subtree else None,
            target=target,
            link_group=doc.get("link_group"),
            user=doc.get("user"),
            group=doc.get("group"),
        )

    @property
    def display_name(self) -> str:
        return os.fsdecode(self.name)


@dataclass
class Tree:
    nodes: list[Node] = field(default_factory=list)

    def encode(self) -> bytes:
        ordered = sorted(self.nodes, key=lambda n: n.name)
        doc = {"version": 1, "nodes": [n.to_json() for n in ordered]}
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def decode(cls, data: bytes) -> Tree:
        doc = json.loads(data)
        return cls([Node.from_json(n) for n in doc["nodes"]])

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)


def _encode_bytes(key: str, value: bytes) -> dict[str, str]:
    try:
        return {key: value.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{key}_b64": base64.b64encode(value).decode()}


def _decode_bytes(key: str, doc: dict[str, Any]) -> bytes | None:
    if key in doc:
        return str(doc[key]).encode("utf-8")
    if f"{key}_b64" in doc:
        return base64.b64decode(doc[f"{key}_b64"])
    return None
