"""Tree decoding keeps a hostile writer's entries aside: the rules of FORMAT.md, "Trees".

Also: the emergency restore script's BLAKE3 (the b3sum program) agrees with the ``blake3``
package the project hashes with, in the keyed and derive_key modes FORMAT.md uses.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import blake3
import pytest

from portalops.backup.repo.tree import (
    Node,
    NodeType,
    Tree,
    TreeFormatError,
    name_problem,
    show_name,
)

ID = "ab" * 32


def entry(name: str | bytes, kind: str = "file", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": kind, "mode": 0o644, "uid": 0, "gid": 0, "mtime_ns": 0}
    if isinstance(name, bytes):
        doc["name_b64"] = base64.b64encode(name).decode()
    else:
        doc["name"] = name
    if kind == "file":
        doc.update(size=0, content=[])
    if kind == "dir":
        doc["subtree"] = ID
    if kind == "symlink":
        doc["target"] = "/etc/passwd"
    doc.update(extra)
    return doc


def decode(*nodes: dict[str, Any]) -> Tree:
    return Tree.decode(json.dumps({"version": 1, "nodes": list(nodes)}).encode())


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "the name '' is not a file name"),
        (".", "the name . is not a file name"),
        ("..", "the name .. is not a file name"),
        ("../../../escaped.txt", "the name holds '/'"),
        ("/etc/cron.d/x", "the name holds '/'"),
        ("a/b", "the name holds '/'"),
        (b"a\0b", "the name holds a NUL byte"),
        ("x" * 256, "the name is longer than 255 bytes"),
    ],
)
def test_names_no_directory_can_hold_are_refused(name: str | bytes, reason: str) -> None:
    tree = decode(entry("ok.txt"), entry(name, "dir"))
    assert [n.name for n in tree.nodes] == [b"ok.txt"]
    [refused] = tree.refused
    assert refused.reason == reason
    assert refused.name == (name if isinstance(name, bytes) else name.encode())


def test_real_names_pass() -> None:
    for name in ("index.html", "Thông báo.html", "...", ".hidden", "x" * 255, "a\\b", " "):
        assert name_problem(name.encode()) is None, name
    assert name_problem(b"\xff\xfe not utf-8") is None


def test_two_entries_of_one_name_are_both_refused() -> None:
    tree = decode(entry("a", "symlink"), entry("a", "dir"), entry("b"))
    assert [n.name for n in tree.nodes] == [b"b"]
    [refused] = tree.refused
    assert refused.name == b"a"
    assert refused.reason == "2 entries of this directory have this name"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"mode": -1}, "mode -1 is out of range"),
        ({"mode": 0o170755}, "out of range"),
        ({"uid": 2**32 - 1}, "out of range"),
        ({"mtime_ns": 2**63}, "out of range"),
        ({"mode": "0644"}, "mode is not an integer"),
        ({"mode": True}, "mode is not an integer"),
        ({"type": "socket"}, "socket"),
        ({"content": ["zz"]}, "not 64 hex digits"),
        ({"content": "ab"}, "content is not a list"),
        ({"name": 7}, "name is not a string"),
        ({"link_group": 3}, "link_group is not a string"),
    ],
)
def test_malformed_entries_are_refused_not_fatal(change: dict[str, Any], reason: str) -> None:
    tree = decode(entry("ok.txt"), {**entry("bad.txt"), **change})
    assert [n.name for n in tree.nodes] == [b"ok.txt"]
    [refused] = tree.refused
    assert refused.reason.startswith("malformed entry")
    assert reason in refused.reason


def test_symlink_targets_must_be_usable() -> None:
    tree = decode(entry("empty", "symlink", target=""), entry("nul", "symlink", target="a\0b"))
    assert not tree.nodes
    assert [r.name for r in tree.refused] == [b"empty", b"nul"]
    missing = {k: v for k, v in entry("none", "symlink").items() if k != "target"}
    assert decode(missing).refused[0].name == b"none"


@pytest.mark.parametrize(
    "data",
    [b"not json", b"[1, 2]", b'{"nodes": 3}', b'{"version": 1}', b"[" * 100_000, b"\xff"],
)
def test_what_is_no_tree_at_all_is_a_format_error(data: bytes) -> None:
    with pytest.raises(TreeFormatError):
        Tree.decode(data)


def test_a_genuine_tree_round_trips() -> None:
    nodes = [
        Node(b"\xff raw", NodeType.FILE, 0o600, 33, 33, 5, size=3, content=(bytes(32),)),
        Node(b"d", NodeType.DIR, 0o755, 0, 0, -5, subtree=bytes(32)),
        Node(b"l", NodeType.SYMLINK, 0o777, 0, 0, 0, target=b"../x"),
        Node(b"p", NodeType.FIFO, 0o600, 0, 0, 0, link_group=None, user="www-data"),
    ]
    tree = Tree.decode(Tree(nodes).encode())
    assert tree.nodes == sorted(nodes, key=lambda n: n.name)
    assert tree.refused == []


def test_show_name_escapes_what_cannot_be_read() -> None:
    assert show_name(b"index.html") == "index.html"
    assert show_name(b"") == "''"
    assert show_name(b"a\0b") == "'a\\x00b'"
    assert show_name(b"line\nbreak") == "'line\\nbreak'"


# -- the emergency script's BLAKE3 ---------------------------------------------------------


def emergency_module() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "backup" / "emergency_restore.py"
    spec = importlib.util.spec_from_file_location("emergency_restore", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 64 * 1024 + 7, 3 * 1024 * 1024])
def test_emergency_keyed_hash_is_blake3(size: int) -> None:
    script = emergency_module()
    key, data = os.urandom(32), os.urandom(size)
    assert script.keyed_hash(key, data) == blake3.blake3(data, key=key).digest()


def test_emergency_derive_key_is_blake3() -> None:
    script = emergency_module()
    id_key = os.urandom(32)
    got = script.tool(["b3sum", "--derive-key", script.MAC_CONTEXT, "--raw"], id_key)
    assert got == blake3.blake3(id_key, derive_key_context=script.MAC_CONTEXT).digest()
