#!/usr/bin/env python3
"""Restore a portal-ops snapshot with only age, zstd and the Python standard library.

For the day portal-ops itself is gone (FORMAT.md). Verifies nothing but decrypts and
decompresses everything; use portal-ops's own restore when you can.

usage: emergency_restore.py REPO_DIR IDENTITY_FILE SNAPSHOT_KEY TARGET_DIR
"""

import base64
import json
import os
import subprocess
import sys
from typing import Any


def tool(argv: list[str], data: bytes) -> bytes:
    return subprocess.run(argv, input=data, capture_output=True, check=True).stdout


def age_decrypt(identity: str, data: bytes) -> bytes:
    return tool(["age", "-d", "-i", identity], data)


def zstd_decompress(data: bytes) -> bytes:
    return tool(["zstd", "-d", "-c", "-q"], data)


def read(repo: str, key: str) -> bytes:
    with open(os.path.join(repo, key), "rb") as handle:
        return handle.read()


def load_index(repo: str) -> dict[str, tuple[str, int, int, str]]:
    blobs: dict[str, tuple[str, int, int, str]] = {}
    for name in os.listdir(os.path.join(repo, "index")):
        doc = json.loads(zstd_decompress(read(repo, "index/" + name)[:-32]))
        for pack in doc["packs"]:
            for blob_id, _kind, offset, length, _raw, compression in pack["blobs"]:
                blobs.setdefault(blob_id, (pack["key"], offset, length, compression))
    return blobs


def main(repo: str, identity: str, snapshot_key: str, target: str) -> None:
    snapshot = json.loads(age_decrypt(identity, read(repo, snapshot_key)))
    blobs = load_index(repo)
    packs: dict[str, bytes] = {}

    def blob(blob_id: str) -> bytes:
        pack, offset, length, compression = blobs[blob_id]
        if pack not in packs:
            packs.clear()  # keep one decrypted pack in memory
            packs[pack] = age_decrypt(identity, read(repo, pack))
        data = packs[pack][offset : offset + length]
        return zstd_decompress(data) if compression == "zstd" else data

    def name(node: dict[str, Any], key: str) -> bytes:
        if key in node:
            return str(node[key]).encode()
        return base64.b64decode(node[key + "_b64"])

    def walk(tree_id: str, path: bytes) -> None:
        os.makedirs(path, exist_ok=True)
        for node in json.loads(blob(tree_id))["nodes"]:
            child = os.path.join(path, name(node, "name"))
            if node["type"] == "dir":
                walk(node["subtree"], child)
            elif node["type"] == "file":
                with open(child, "wb") as out:
                    for blob_id in node["content"]:
                        out.write(blob(blob_id))
                os.chmod(child, node["mode"])
            elif node["type"] == "symlink":
                os.symlink(name(node, "target"), child)
            if node["type"] != "symlink":
                os.utime(child, ns=(node["mtime_ns"], node["mtime_ns"]))

    walk(snapshot["tree"], os.fsencode(target))


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
