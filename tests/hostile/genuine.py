"""The genuine side of a hostile-writer test: one real backup of a small portal webroot, made
through the real CLI, and what restoring it must give back byte for byte."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.fixtures.backup_env import PROJECT, BackupEnv
from tests.hostile.forge import Forger

FILES = {
    "index.html": "<h1>Cổng thông tin điện tử xã Đạo Trù</h1>\n".encode(),
    "css/site.css": b"body { font-family: sans-serif }\n" * 50,
    "img/banner.bin": bytes(range(256)) * 2000,
}


def genuine_backup(env: BackupEnv, tmp_path: Path) -> tuple[str, Path]:
    """One genuine snapshot of FILES, source ``webroot``: its id and the source directory."""
    src = tmp_path / "www"
    for rel, data in FILES.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    env.add_source("webroot", src)
    env.ops("backup", "run", check=True)
    [genuine] = env.ops_json("backup", "list")
    return str(genuine["id"]), src


def files_under(root: Path) -> dict[str, bytes]:
    """Every regular file below ``root``, by its path relative to it."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def forged_id(key: str) -> str:
    """The id of the snapshot object stored under ``key``."""
    return key.rsplit("-", 1)[1]


def an_hour_ago() -> datetime:
    """A stated time a forged snapshot can carry without being future-dated."""
    return datetime.now(UTC) - timedelta(hours=1)


def assert_no_internal_error(text: str) -> None:
    assert "Traceback" not in text, text
    assert "internal error" not in text, text


def restored_files(env: BackupEnv, target: Path, snapshot: str = "latest") -> dict[str, bytes]:
    """Restore ``snapshot`` (default: the latest of ``webroot``) and read the webroot back."""
    args = ["backup", "restore", snapshot, "--target", str(target)]
    if snapshot == "latest":
        args += ["--source", "webroot"]
    env.ops(*args, check=True)
    [root] = [p for p in target.rglob("www") if p.is_dir()]
    return files_under(root)


def forger(env: BackupEnv) -> Forger:
    """An attacker holding this environment's writer key and write access to its store."""
    return Forger(env.writer_key, env.write_object)


def genuine_index_records(env: BackupEnv) -> list[dict[str, object]]:
    """Every pack record of the index objects in the store (before any forgery)."""
    return [
        record
        for key in env.object_keys("index/")
        for record in Forger.read_index(env.read_object(key))
    ]


EMERGENCY = PROJECT / "backup" / "emergency_restore.py"


def emergency(env: BackupEnv, key: str, target: Path) -> subprocess.CompletedProcess[str]:
    """``backup/emergency_restore.py`` (the system's python3, age, zstd, b3sum) restoring the
    snapshot object ``key`` of the env's local repository into ``target``."""
    return subprocess.run(
        ["/usr/bin/python3", str(EMERGENCY), env.repo_url, str(env.identity), key, str(target)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
