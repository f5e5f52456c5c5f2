#!/usr/bin/env python3
"""Restore a portal-ops snapshot with the Python standard library and the age, zstd and
b3sum programs only, for the day portal-ops itself is gone (backup/FORMAT.md).

It trusts nothing a backup host wrote (FORMAT.md, "What a reader must not trust"): the keys
object used is the one matching the config's key_fingerprint; index objects must pass their
MAC; every blob must match its id, and one failing at a location is read from the next; tree
entries follow the rules of "Trees" (refused ones are listed, not restored, and the exit code
is 1); trees are read once each, and refused before anything is written when they would
expand beyond MAX_ENTRIES entries or MAX_DEPTH levels; every entry is created relative to an
open directory descriptor and no symlink is followed, whether the snapshot holds it or the
target did. Files, directories, symlinks, FIFOs and hard links come back with their modes
and times (and owners, as root).

BLAKE3 is not in the standard library: this script runs the b3sum program (Debian 12
package b3sum) for the keyed hash and derive_key, rather than carrying a BLAKE3 written in
Python, which would hash well under 1 MB/s and turn the restore of a few gigabytes into hours.

usage: emergency_restore.py REPO_DIR IDENTITY_FILE SNAPSHOT_KEY TARGET_DIR
exit: 0 restored; 1 restored but for the refused entries listed; 3 failed
"""

import base64
import contextlib
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import tempfile
from collections import Counter
from typing import Any, TypeGuard

MAC_CONTEXT = "portal-ops 2026 index mac v1"
KEY_CHECK_CONTEXT = "portal-ops 2026 key check v1"
PACKS_KEPT = 4  # decrypted packs in memory (16 MiB each, as a writer makes them)
MAX_ENTRIES = 10_000_000
MAX_DEPTH = 2048
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
BLOB_ID = re.compile(r"[0-9a-f]{64}")
PACK_KEY = re.compile(r"packs/[0-9a-f]{2}/[0-9a-f]{64}")
RANGES = {"mode": (0, 0o7777), "uid": (0, 2**32 - 2), "gid": (0, 2**32 - 2),
          "mtime_ns": (-(2**63), 2**63 - 1)}  # fmt: skip
Node = dict[str, Any]


class Failed(Exception):
    """The restore cannot go on (exit 3)."""


def tool(argv: list[str], data: bytes, **kw: Any) -> bytes:
    try:
        done = subprocess.run(argv, input=data, capture_output=True, check=False, **kw)
    except FileNotFoundError:
        raise Failed(f"{argv[0]} not found: install the Debian package {argv[0]}") from None
    if done.returncode != 0:
        raise Failed(f"{argv[0]}: {done.stderr.decode(errors='replace').strip()}")
    return bytes(done.stdout)


def keyed_hash(key: bytes, data: bytes) -> bytes:
    with tempfile.TemporaryFile() as handle:  # stdin carries the key, so the data is a file
        handle.write(data)
        handle.flush()
        fd = handle.fileno()
        return tool(["b3sum", "--keyed", "--raw", f"/dev/fd/{fd}"], key, pass_fds=(fd,))


def read(repo: str, key: str) -> bytes:
    with open(os.path.join(repo, key), "rb") as handle:
        return handle.read()


def is_id(value: Any) -> bool:
    return isinstance(value, str) and BLOB_ID.fullmatch(value) is not None


class Repo:
    def __init__(self, path: str, identity: str) -> None:
        self.path, self.identity = path, identity
        self.id_key = self._id_key(json.loads(read(path, "config"))["key_fingerprint"])
        mac_key = tool(["b3sum", "--derive-key", MAC_CONTEXT, "--raw"], self.id_key)
        # every location, in order: (pack, offset, length, compression, a delta's bases, type)
        self.blobs: dict[str, list[tuple[str, int, int, str, list[str], str]]] = {}
        self.packs: dict[str, bytes] = {}
        for name in sorted(os.listdir(os.path.join(path, "index"))):
            data = read(path, "index/" + name)
            try:
                if len(data) <= 32 or keyed_hash(mac_key, data[:-32]) != data[-32:]:
                    raise Failed("fails its MAC")
                self._add_index(json.loads(tool(["zstd", "-d", "-c", "-q"], data[:-32])))
            except (Failed, ValueError, KeyError, TypeError) as exc:
                print(f"index/{name} not used: {exc}", file=sys.stderr)

    def _id_key(self, fingerprint: str) -> bytes:
        for name in sorted(os.listdir(os.path.join(self.path, "keys"))):
            try:
                doc = json.loads(self.decrypt(read(self.path, "keys/" + name)))
                id_key = bytes.fromhex(doc["id_key"])
            except (Failed, ValueError, KeyError, TypeError):
                continue
            check = tool(["b3sum", "--derive-key", KEY_CHECK_CONTEXT, "--no-names"], id_key)
            if check.decode()[:32] == fingerprint:
                return id_key
        raise Failed("no object under keys/ holds the id-key the config names")

    def _add_index(self, doc: dict[str, Any]) -> None:
        found = []
        for pack in doc["packs"]:
            for blob_id, kind, offset, length, _raw, compression, *more in pack["blobs"]:
                bases = more[0] if more and isinstance(more[0], list) else []
                delta = compression == "zstd-delta"
                if not (
                    is_id(blob_id)
                    and isinstance(offset, int)
                    and isinstance(length, int)
                    and len(more) == (1 if delta else 0)
                    and (not delta or 1 <= len(set(bases)) == len(bases) <= 2)
                    and all(is_id(base) and base != blob_id for base in bases)
                ):
                    raise ValueError("a malformed record")
                where = (str(pack["key"]), offset, length, str(compression), bases, kind)
                found.append((blob_id, where))
        for blob_id, where in found:
            self.blobs.setdefault(blob_id, []).append(where)

    def undelta(self, data: bytes, dictionary: bytes) -> bytes:
        with tempfile.NamedTemporaryFile() as handle:
            handle.write(dictionary)
            handle.flush()
            return tool(["zstd", "-d", "-c", "-q", "--long=27", "-D", handle.name], data)

    def decrypt(self, data: bytes) -> bytes:
        return tool(["age", "-d", "-i", self.identity], data)

    def blob(self, blob_id: str, *, base: bool = False) -> bytes:
        """The blob from the first location that gives it intact (a delta's ``base``: from
        a location that is not a delta itself)."""
        reasons = []
        for pack, offset, length, compression, bases, kind in self.blobs.get(blob_id, []):
            try:
                if base and (compression == "zstd-delta" or kind != "data"):
                    raise Failed("only a whole data blob can be a base")
                if not PACK_KEY.fullmatch(pack):
                    raise Failed("not a pack name")
                if pack not in self.packs:
                    stored = read(self.path, pack)
                    if hashlib.sha256(stored).hexdigest() != pack[-64:]:
                        raise Failed("content does not match its name")
                    # A few packs in memory: a delta's pack and its bases' packs alternate.
                    while len(self.packs) >= PACKS_KEPT:
                        del self.packs[next(iter(self.packs))]
                    self.packs[pack] = self.decrypt(stored)
                data = self.packs[pack][offset : offset + length]
                if compression == "zstd":
                    data = tool(["zstd", "-d", "-c", "-q"], data)
                elif compression == "zstd-delta":  # its bases' bytes joined: the dictionary
                    data = self.undelta(data, b"".join(self.blob(b, base=True) for b in bases))
                if keyed_hash(self.id_key, data).hex() != blob_id:
                    raise Failed("fails its id")
                return data
            except (Failed, OSError) as exc:
                reasons.append(f"{pack}: {exc}")
        raise Failed(f"blob {blob_id}: {'; '.join(reasons) or 'in no index'}")


def name_of(node: Node, key: str) -> bytes:
    if key in node:
        return str(node[key]).encode()
    return base64.b64decode(node[key + "_b64"], validate=True)


def readable_name(node: Any) -> bytes:
    try:
        return name_of(node, "name")
    except (KeyError, ValueError, TypeError):
        return b"?"


def problem(node: Any) -> str | None:
    """Why a tree entry must not be restored (FORMAT.md, "Trees"), or None."""
    try:
        name, kind = name_of(node, "name"), node["type"]
        target = name_of(node, "target") if kind == "symlink" else b"-"
        well_formed = (
            kind in ("file", "dir", "symlink", "fifo")
            and all(type(node[k]) is int and lo <= node[k] <= hi for k, (lo, hi) in RANGES.items())
            and (kind != "file" or all(is_id(blob) for blob in node.get("content", [])))
            and (kind != "dir" or is_id(node["subtree"]))
            and target != b""
            and b"\0" not in target
        )
    except (KeyError, ValueError, TypeError):
        well_formed = False
    if not well_formed:
        return "malformed entry"
    if name in (b"", b".", b".."):
        return f"the name {name!r} is not a file name"
    if b"/" in name or b"\0" in name or len(name) > 255:
        return "the name holds '/' or NUL, or is longer than 255 bytes"
    return None


Entries = list[tuple[bytes, Node | str]]  # (name, node) or (name, why it is refused)


def read_trees(repo: Repo, root: str) -> dict[str, Entries]:
    """Every distinct tree, read once and checked against the bounds."""
    trees: dict[str, Entries] = {}
    stack = [root]
    while stack:
        tree_id = stack.pop()
        if tree_id in trees:
            continue
        nodes = json.loads(repo.blob(tree_id))["nodes"]
        named = [(problem(node), readable_name(node), node) for node in nodes]
        counts = Counter(name for why, name, _ in named if not why)
        trees[tree_id] = [
            (name, why or (counts[name] > 1 and "the name is twice in one directory") or node)
            for why, name, node in named
        ]
        stack += [n["subtree"] for _, n in trees[tree_id] if is_dir(n)]
    bounds: dict[str, tuple[int, int]] = {}  # tree -> (entries it expands to, depth)
    todo = [(root, False)]
    while todo:
        tree_id, ready = todo.pop()
        subtrees = [n["subtree"] for _, n in trees[tree_id] if is_dir(n)]
        if tree_id in bounds:
            continue
        if not ready:
            todo += [(tree_id, True)] + [(s, False) for s in subtrees if s not in bounds]
            continue
        count = len(trees[tree_id]) + sum(bounds[s][0] for s in subtrees)
        depth = 1 + max((bounds[s][1] for s in subtrees), default=0)
        if count > MAX_ENTRIES or depth > MAX_DEPTH:
            raise Failed(f"trees expand beyond {MAX_ENTRIES} entries or {MAX_DEPTH} levels")
        bounds[tree_id] = (count, depth)
    return trees


def is_dir(node: Node | str) -> TypeGuard[Node]:
    return isinstance(node, dict) and node["type"] == "dir"


def open_dir(root_fd: int, parts: list[bytes]) -> int:
    """The directory ``parts`` below the root, reached without following any symlink."""
    fd = os.dup(root_fd)
    for part in parts:
        try:
            child = os.open(part, DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = child
    return fd


def write_all(fd: int, data: bytes) -> None:
    """All of ``data``: a write may be short (a full disk, a file-size limit)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(28, "no byte could be written")  # ENOSPC
        view = view[written:]


def set_meta(fd: int, node: Node) -> None:
    if os.geteuid() == 0:
        os.fchown(fd, node["uid"], node["gid"])
    os.fchmod(fd, node["mode"])  # after chown, which clears set-id bits
    os.utime(fd, ns=(node["mtime_ns"], node["mtime_ns"]))


class Restorer:
    def __init__(self, repo: Repo, target: str) -> None:
        os.makedirs(target, exist_ok=True)
        self.repo, self.root = repo, os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        self.links: dict[str, tuple[list[bytes], bytes]] = {}  # link_group -> first file

    def run(self, trees: dict[str, Entries], root: str) -> list[str]:
        refused, dirs = [], []
        stack: list[tuple[str, list[bytes]]] = [(root, [])]
        while stack:
            tree_id, parts = stack.pop()
            fd = open_dir(self.root, parts)
            try:
                for name, node in trees[tree_id]:
                    if isinstance(node, str):
                        path = b"/".join([*parts, name]).decode(errors="backslashreplace")
                        refused.append(f"{path!r}: {node}")
                    elif node["type"] == "dir":
                        self.make_dir(fd, name)
                        stack.append((node["subtree"], [*parts, name]))
                        dirs.append(([*parts, name], node))
                    else:
                        with contextlib.suppress(FileNotFoundError):  # replace what is there
                            os.unlink(name, dir_fd=fd)
                        getattr(self, node["type"])(fd, parts, name, node)
            finally:
                os.close(fd)
        for parts, node in reversed(dirs):  # children first: their entries changed the mtimes
            fd = open_dir(self.root, parts)
            try:
                set_meta(fd, node)
            finally:
                os.close(fd)
        return refused

    def make_dir(self, fd: int, name: bytes) -> None:
        try:
            os.mkdir(name, 0o700, dir_fd=fd)
        except FileExistsError:  # a directory is reused; a symlink is replaced, not followed
            if stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                os.unlink(name, dir_fd=fd)
                os.mkdir(name, 0o700, dir_fd=fd)

    def file(self, fd: int, parts: list[bytes], name: bytes, node: Node) -> None:
        group = node.get("link_group")
        if group in self.links:
            first_parts, first_name = self.links[group]
            source = open_dir(self.root, first_parts)
            try:
                os.link(first_name, name, src_dir_fd=source, dst_dir_fd=fd, follow_symlinks=False)
            finally:
                os.close(source)
            return
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        out = os.open(name, flags, 0o600, dir_fd=fd)
        try:
            for blob_id in node.get("content", []):
                write_all(out, self.repo.blob(blob_id))
            set_meta(out, node)
        finally:
            os.close(out)
        if group:
            self.links[group] = (parts, name)

    def symlink(self, fd: int, parts: list[bytes], name: bytes, node: Node) -> None:
        os.symlink(name_of(node, "target"), name, dir_fd=fd)
        if os.geteuid() == 0:
            os.chown(name, node["uid"], node["gid"], dir_fd=fd, follow_symlinks=False)
        os.utime(name, ns=(node["mtime_ns"],) * 2, dir_fd=fd, follow_symlinks=False)

    def fifo(self, fd: int, parts: list[bytes], name: bytes, node: Node) -> None:
        os.mkfifo(name, 0o600, dir_fd=fd)
        fifo = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW, dir_fd=fd)
        try:
            set_meta(fifo, node)
        finally:
            os.close(fifo)


def main(repo_dir: str, identity: str, snapshot_key: str, target: str) -> int:
    try:
        stored = read(repo_dir, snapshot_key)
        if hashlib.sha256(stored).hexdigest() != snapshot_key[-64:]:
            raise Failed(f"{snapshot_key}: content does not match its name")
        repo = Repo(repo_dir, identity)
        root = json.loads(repo.decrypt(stored))["tree"]
        trees = read_trees(repo, root)  # before anything is written
        restorer = Restorer(repo, target)
        refused = restorer.run(trees, root)
    except (Failed, OSError, ValueError, KeyError, TypeError) as exc:
        print(f"emergency_restore: failed: {exc}", file=sys.stderr)
        return 3
    for line in refused:
        print(f"refused, not restored: {line}", file=sys.stderr)
    return 1 if refused else 0


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
