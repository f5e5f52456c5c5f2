"""After ``ops backup run``: the status file, the Prometheus metrics rendered from it, and the
host-wide run lock, all through the real CLI (in-process, see BackupEnv.ops) on a local
repository; the lock holders that must die without cleaning up are real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from portalops.backup.jobs.status import FAMILIES, METRICS_NAME, STATUS_NAME
from portalops.core.runlock import LOCK_NAME, run_lock
from tests.fixtures.backup_env import BackupEnv
from tests.fixtures.paths import PROJECT

pytestmark = pytest.mark.integration

LABELS = {"source", "category", "repository", "host"}


def metrics(env: BackupEnv, textfile: Path) -> dict[str, dict[str, float]]:
    """family -> source -> value, checking every sample carries exactly the four labels."""
    text = (textfile / METRICS_NAME).read_text()
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert set(sample.labels) == LABELS, sample
            assert sample.labels["repository"] == "main"
            out.setdefault(sample.name, {})[sample.labels["source"]] = sample.value
    return out


def status(env: BackupEnv) -> dict[tuple[str, str], Any]:
    doc = json.loads((env.state_dir / STATUS_NAME).read_text())
    return {(e["source"], e["repository"]): e for e in doc["entries"]}


def configure(env: BackupEnv, tmp_path: Path, **sources: Path) -> Path:
    for name, path in sources.items():
        env.add_source(name, path, category="config" if name == "etc" else "code")
    textfile = tmp_path / "textfile"
    textfile.mkdir(exist_ok=True)
    env.write_config(metrics={"textfile_dir": str(textfile)})
    return textfile


def tree(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "index.html").write_text("<h1>Cổng thông tin điện tử</h1>\n")
    (root / "data.bin").write_bytes(os.urandom(200_000))
    return root


def test_good_and_failed_sources(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    env = local_backup_env
    textfile = configure(env, tmp_path, etc=tree(tmp_path / "etc"), web=tmp_path / "missing")
    result = env.ops("--json", "backup", "run")
    assert result.returncode == 1, result.stderr  # a source failed; the repository is fine
    run = json.loads(result.stdout)
    assert run["recorded"]["problems"] == []
    assert run["recorded"]["metrics_file"] == str(textfile / METRICS_NAME)

    values = metrics(env, textfile)
    assert set(values) == set(FAMILIES)
    for family in FAMILIES:
        assert set(values[family]) == {"etc", "web"}, family
    assert values["portalops_backup_last_run_success"] == {"etc": 1.0, "web": 0.0}
    assert values["portalops_backup_last_success_timestamp_seconds"]["web"] == 0.0
    assert values["portalops_backup_bytes"]["etc"] == 200_000 + len(
        "<h1>Cổng thông tin điện tử</h1>\n".encode()
    )
    assert values["portalops_backup_added_bytes"]["etc"] > 0
    # the deprecated name (until 0.3.0) carries the same values
    assert values["portalops_backup_bytes_added"] == values["portalops_backup_added_bytes"]
    good = next(r for r in run["results"] if r["source"] == "etc")
    assert values["portalops_backup_duration_seconds"]["etc"] == pytest.approx(
        good["duration_seconds"], abs=0.001
    )
    now = time.time()
    for source in ("etc", "web"):
        assert now - 60 < values["portalops_backup_last_run_timestamp_seconds"][source] <= now

    entries = status(env)
    assert set(entries) == {("etc", "main"), ("web", "main")}
    etc, web = entries["etc", "main"], entries["web", "main"]
    assert etc["category"] == "config"
    assert web["category"] == "code"
    assert etc["last_run"]["ok"]
    assert etc["last_run"]["snapshot"] == good["snapshot"]
    assert etc["last_success"]["snapshot"] == good["snapshot"]
    assert etc["last_success_time"] == good["time"]
    assert not web["last_run"]["ok"]
    assert web["last_success"] is None
    assert "no such file or directory" in web["last_run"]["error"]
    assert stat.S_IMODE((env.state_dir / STATUS_NAME).stat().st_mode) == 0o644
    # Nothing half-written is left beside the files others read.
    assert sorted(p.name for p in textfile.iterdir()) == [METRICS_NAME]
    assert not [p for p in env.state_dir.iterdir() if p.name.endswith(".tmp")]


def test_failed_run_keeps_the_last_success(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    env = local_backup_env
    site = tree(tmp_path / "site")
    textfile = configure(env, tmp_path, site=site, other=tree(tmp_path / "other"))
    first = env.ops_json("backup", "run")
    snapshot = next(r for r in first["results"] if r["source"] == "site")["snapshot"]
    before = metrics(env, textfile)
    assert before["portalops_backup_last_run_success"]["site"] == 1.0
    success_ts = before["portalops_backup_last_success_timestamp_seconds"]["site"]
    assert success_ts > 0

    shutil.rmtree(site)
    time.sleep(0.05)  # so the second run's time differs measurably from the first's
    assert env.ops("backup", "run", "--source", "site").returncode == 1
    after = metrics(env, textfile)
    assert after["portalops_backup_last_run_success"]["site"] == 0.0
    assert after["portalops_backup_last_success_timestamp_seconds"]["site"] == success_ts
    assert after["portalops_backup_bytes"]["site"] == before["portalops_backup_bytes"]["site"]
    assert (
        after["portalops_backup_last_run_timestamp_seconds"]["site"]
        > before["portalops_backup_last_run_timestamp_seconds"]["site"]
    )
    # The source not in this run (--source narrowed it) keeps its series unchanged.
    for family in FAMILIES:
        assert after[family]["other"] == before[family]["other"], family

    entry = status(env)["site", "main"]
    assert entry["last_success"]["snapshot"] == snapshot
    assert not entry["last_run"]["ok"]
    assert entry["last_run"]["snapshot"] is None
    assert str(site) in entry["last_run"]["error"]

    # A source removed from the config loses its series at the next run.
    env.sources = [s for s in env.sources if s["name"] != "other"]
    env.write_config(metrics={"textfile_dir": str(textfile)})
    env.ops("backup", "run")
    assert set(metrics(env, textfile)["portalops_backup_bytes"]) == {"site"}
    assert set(status(env)) == {("site", "main")}


def test_metrics_that_cannot_be_written(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    env = local_backup_env
    env.add_source("site", tree(tmp_path / "site"))
    missing = tmp_path / "no-such-dir"
    env.write_config(metrics={"textfile_dir": str(missing)})
    result = env.ops("backup", "run")
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert f"cannot write the metrics file {missing / METRICS_NAME}" in result.stderr
    assert "metrics.textfile_dir" in result.stderr
    assert "the backups themselves ran (1 of 1 ok" in result.stderr
    # ... and they did: the snapshot exists and the status file records it.
    assert [s["source"] for s in env.ops_json("backup", "list")] == ["site"]
    assert status(env)["site", "main"]["last_run"]["ok"]


def test_a_damaged_status_file_is_replaced(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    env = local_backup_env
    textfile = configure(env, tmp_path, site=tree(tmp_path / "site"))
    env.state_dir.mkdir(parents=True, exist_ok=True)
    (env.state_dir / STATUS_NAME).write_text('{"format": 1, "entries": [{"sou')
    result = env.ops("backup", "run")
    assert result.returncode == 0, result.stderr
    assert "ignoring unreadable backup status file" in result.stderr
    assert metrics(env, textfile)["portalops_backup_last_run_success"] == {"site": 1.0}


def test_run_lock_names_the_holder(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    env = local_backup_env
    env.add_source("site", tree(tmp_path / "site"))
    lock = env.state_dir / LOCK_NAME
    with run_lock(lock, "ops backup run"):
        assert stat.S_IMODE(lock.stat().st_mode) == 0o644
        holder = json.loads(lock.read_text())
        assert holder["pid"] == os.getpid()
        result = env.ops("backup", "run")
        assert result.returncode == 3, result.stderr
        assert (
            f"another 'ops backup run' (pid {os.getpid()}, started {holder['started']}) "
            "is still running" in result.stderr
        )
        assert "Traceback" not in result.stderr
        assert env.ops_json("backup", "list") == []  # the second run did nothing
    env.ops("backup", "run", check=True)


def test_a_killed_run_does_not_block_the_next(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    env = local_backup_env
    env.add_source("site", tree(tmp_path / "site"))
    lock = env.state_dir / LOCK_NAME
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path\n"
            "from portalops.core.runlock import run_lock\n"
            "with run_lock(Path(sys.argv[1]), 'ops backup run'):\n"
            "    print('locked', flush=True); time.sleep(600)\n",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        blocked = env.ops("backup", "run")
        assert blocked.returncode == 3
        assert f"pid {holder.pid}," in blocked.stderr
        holder.send_signal(signal.SIGKILL)  # no cleanup at all: the kernel drops the flock
        holder.wait(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    env.ops("backup", "run", check=True)
    assert [s["source"] for s in env.ops_json("backup", "list")] == ["site"]
