"""Trees: one directory's entries and their metadata, stored as an encrypted blob.

A tree is canonical JSON (sorted keys, entries sorted by name bytes), so an unchanged directory
produces the same tree blob, and so the same id, every day: deduplication covers metadata too.
File names are bytes on Linux and may be NFC or NFD, or not UTF-8 at all; they are stored
exactly: as text when they decode as UTF-8, else base64 under ``name_b64``.

A tree read back may have been written by a hostile backup host, so decoding checks every
entry: a name no directory can hold (empty, ``.``, ``..``, with ``/`` or NUL, longer than
255 bytes), a name twice in one tree, or malformed metadata makes that entry *refused*: it is
kept aside in :attr:`Tree.refused` with the reason, never among the nodes a restore creates.
Every reader (restore, drill, check) therefore sees the same rules.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

NAME_MAX = 255  # bytes in one file name (Linux, every common filesystem)
ID_LENGTH = 32  # bytes in a blob id
_UINT32_ID_MAX = 2**32 - 2  # (2**32 - 1 is "no change" to chown)
INT64 = (-(2**63), 2**63 - 1)  # mtime_ns and size: signed 64-bit (FORMAT.md; writers clamp mtimes)


class TreeFormatError(ValueError):
    """A tree blob that is not a tree at all (the whole directory is unreadable)."""


def name_problem(name: bytes) -> str | None:
    """Why ``name`` cannot be one directory entry, or None when it can."""
    if name in (b"", b".", b".."):
        return f"the name {show_name(name)} is not a file name"
    if b"/" in name:
        return "the name holds '/'"
    if b"\0" in name:
        return "the name holds a NUL byte"
    if len(name) > NAME_MAX:
        return f"the name is longer than {NAME_MAX} bytes"
    return None


def show_name(name: bytes) -> str:
    """A name as a person should read it in a message: control bytes escaped, quoted then."""
    text = name.decode("utf-8", "backslashreplace")
    return text if text and text.isprintable() else repr(text)


@dataclass(frozen=True)
class Refused:
    """A tree entry that is not restored, and why."""

    name: bytes
    reason: str


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
        """The node ``doc`` describes; ValueError or TypeError when it is malformed (types,
        ranges, ids; names are checked by :meth:`Tree.decode`).

        A restore or check decodes every node of every tree (30,000 files: 30,000 nodes)
        before any pack work starts, so a node in the shape this tool writes is taken by
        :func:`_plain_node`, which checks the same things at a third of the cost; anything
        else (base64 names, odd types, values out of range) goes through the checks below,
        which say what is wrong."""
        if type(doc) is dict:
            node = _plain_node(doc)
            if node is not None:
                return node
        return cls._checked(doc)

    @classmethod
    def _checked(cls, doc: dict[str, Any]) -> Node:
        if not isinstance(doc, dict):
            raise TypeError("an entry is not a JSON object")
        kind = NodeType(doc["type"])
        subtree = doc.get("subtree")
        target = _decode_bytes("target", doc)
        if kind is NodeType.SYMLINK and (not target or b"\0" in target):
            raise ValueError("a symlink needs a target without NUL bytes")
        content = doc.get("content", [])
        if not isinstance(content, list):
            raise TypeError("content is not a list")
        return cls(
            name=_decode_bytes("name", doc) or b"",
            type=kind,
            mode=_int(doc, "mode", 0, 0o7777),
            uid=_int(doc, "uid", 0, _UINT32_ID_MAX),
            gid=_int(doc, "gid", 0, _UINT32_ID_MAX),
            mtime_ns=_int(doc, "mtime_ns", *INT64),
            size=_int(doc, "size", 0, INT64[1], default=0),
            content=tuple(_blob_id(b) for b in content),
            subtree=_blob_id(subtree) if subtree is not None else None,
            target=target,
            link_group=_optional_str(doc, "link_group"),
            user=_optional_str(doc, "user"),
            group=_optional_str(doc, "group"),
        )

    @property
    def display_name(self) -> str:
        return os.fsdecode(self.name)


@dataclass
class Tree:
    nodes: list[Node] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)  # read back, not restorable

    def subtrees(self) -> list[bytes]:
        """The tree ids of its directories."""
        return [n.subtree for n in self.nodes if n.type is NodeType.DIR and n.subtree is not None]

    def encode(self) -> bytes:
        ordered = sorted(self.nodes, key=lambda n: n.name)
        doc = {"version": 1, "nodes": [n.to_json() for n in ordered]}
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def decode(cls, data: bytes) -> Tree:
        """The tree in ``data``; entries that break the rules go to ``refused``.
        TreeFormatError when ``data`` is no tree at all."""
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise TreeFormatError(f"not JSON: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list):
            raise TreeFormatError("not a tree (no list of nodes)")
        nodes: list[Node] = []
        refused: list[Refused] = []
        for raw in doc["nodes"]:
            try:
                node = Node.from_json(raw)
            except (KeyError, ValueError, TypeError) as exc:
                refused.append(Refused(_raw_name(raw), f"malformed entry ({_describe(exc)})"))
                continue
            name = node.name
            if (  # name_problem's checks, without the call for the names that pass them
                name
                and len(name) <= NAME_MAX
                and b"/" not in name
                and b"\0" not in name
                and name not in _DOTS
            ):
                nodes.append(node)
                continue
            problem = name_problem(name)
            if problem is None:
                nodes.append(node)
            else:
                refused.append(Refused(name, problem))
        # Which of two entries named alike is the real one cannot be told: neither is.
        if len({node.name for node in nodes}) == len(nodes):
            return cls(nodes, refused)  # the usual case: no name twice
        counts = Counter(node.name for node in nodes)
        refused += [
            Refused(name, f"{count} entries of this directory have this name")
            for name, count in counts.items()
            if count > 1
        ]
        return cls([node for node in nodes if counts[node.name] == 1], refused)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)


_NODE_TYPES: dict[str, NodeType] = {t.value: t for t in NodeType}
_UINT32_ID_RANGE = range(_UINT32_ID_MAX + 1)
_MODE_RANGE = range(0o7777 + 1)
_new = object.__new__
_ABSENT: Any = object()
_DOTS = frozenset((b".", b".."))


def _plain_node(doc: dict[str, Any]) -> Node | None:
    """The node of an entry in the shape this tool writes (text name and target, exact
    ``int`` and ``str`` values in range, ids of 64 characters), checked as
    :meth:`Node._checked` checks it; None for anything else, which the caller hands to
    :meth:`Node._checked` so that it fails (or passes) with its own message."""
    kind = doc.get("type")
    name = doc.get("name")
    if type(kind) is not str or type(name) is not str or "name_b64" in doc:
        return None
    node_type = _NODE_TYPES.get(kind)
    mode, uid, gid = doc.get("mode"), doc.get("uid"), doc.get("gid")
    mtime_ns, size = doc.get("mtime_ns"), doc.get("size", 0)
    if (
        node_type is None
        or type(mode) is not int
        or type(uid) is not int
        or type(gid) is not int
        or type(mtime_ns) is not int
        or type(size) is not int
        or mode not in _MODE_RANGE
        or uid not in _UINT32_ID_RANGE
        or gid not in _UINT32_ID_RANGE
        or not INT64[0] <= mtime_ns <= INT64[1]
        or not 0 <= size <= INT64[1]
    ):
        return None
    content = doc.get("content", _ABSENT)
    subtree = doc.get("subtree")
    target = doc.get("target", _ABSENT)
    link_group, user, group = doc.get("link_group"), doc.get("user"), doc.get("group")
    if (
        (link_group is not None and type(link_group) is not str)
        or (user is not None and type(user) is not str)
        or (group is not None and type(group) is not str)
        or (target is _ABSENT and "target_b64" in doc)
        or (target is not _ABSENT and type(target) is not str)
        or (subtree is not None and (type(subtree) is not str or len(subtree) != 2 * ID_LENGTH))
    ):
        return None
    try:
        name_bytes = name.encode("utf-8")
        target_bytes = None if target is _ABSENT else target.encode("utf-8")
        if content is _ABSENT:
            blobs: tuple[bytes, ...] = ()
        elif type(content) is list:
            blobs = tuple(map(_blob_id, content))
        else:
            return None
        subtree_id = None if subtree is None else bytes.fromhex(subtree)
    except ValueError:  # a lone surrogate, an id that is not hex: _checked says which
        return None
    if node_type is NodeType.SYMLINK and (not target_bytes or b"\0" in target_bytes):
        return None
    # Node is a frozen dataclass: its __init__ sets each of 13 fields through
    # object.__setattr__. Filling the instance dict makes the same (equal, hashable) node.
    node: Node = _new(Node)
    node.__dict__.update(
        name=name_bytes,
        type=node_type,
        mode=mode,
        uid=uid,
        gid=gid,
        mtime_ns=mtime_ns,
        size=size,
        content=blobs,
        subtree=subtree_id,
        target=target_bytes,
        link_group=link_group,
        user=user,
        group=group,
    )
    return node


def _encode_bytes(key: str, value: bytes) -> dict[str, str]:
    try:
        return {key: value.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{key}_b64": base64.b64encode(value).decode()}


def _decode_bytes(key: str, doc: dict[str, Any]) -> bytes | None:
    if key in doc:
        text = doc[key]
        if not isinstance(text, str):
            raise TypeError(f"{key} is not a string")
        return text.encode("utf-8")  # a lone surrogate: UnicodeEncodeError, a ValueError
    if f"{key}_b64" in doc:
        try:
            return base64.b64decode(doc[f"{key}_b64"], validate=True)
        except (binascii.Error, TypeError):
            raise ValueError(f"{key}_b64 is not base64") from None
    return None


def _int(doc: dict[str, Any], key: str, low: int, high: int, default: int | None = None) -> int:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} is not an integer")
    if not low <= value <= high:
        raise ValueError(f"{key} {value} is out of range")
    return value


def _optional_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    return value


def _blob_id(value: object) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * ID_LENGTH:
        raise ValueError("a blob id is not 64 hex digits")
    return bytes.fromhex(value)


def _raw_name(raw: object) -> bytes:
    """A malformed entry's name as far as it can be read, for the message."""
    if not isinstance(raw, dict):
        return b""
    try:
        return _decode_bytes("name", raw) or b""
    except (ValueError, TypeError):
        return b""


def _describe(exc: Exception) -> str:
    return f"no {exc.args[0]}" if isinstance(exc, KeyError) else str(exc)
