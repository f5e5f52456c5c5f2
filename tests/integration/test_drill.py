"""Restore drills (Art. 11.3) through the real CLI, on a local and an S3 repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.backup_env import BackupEnv
from tests.fixtures.nginx import nginx_tree

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def setup_env(
    env: BackupEnv, tmp_path: Path, scratch: Path, *, rto: float = 3600, broken: bool = False
) -> Path:
    web = tmp_path / "www"
    web.mkdir()
    (web / "index.html").write_text("<h1>Cổng thông tin điện tử xã Đạo Trù</h1>\n")
    (web / "banner.jpg").write_bytes(bytes(range(256)) * 40000)
    etc = nginx_tree(tmp_path / "host", broken=broken)
    env.add_source("webroot", web)
    env.add_source("nginx", etc, category="config")
    env.write_config(
        drill={"rto_seconds": rto, "scratch_dir": str(scratch)},
        metrics={"textfile_dir": str(tmp_path / "textfile")},
    )
    (tmp_path / "textfile").mkdir()
    env.ops("backup", "run", check=True)
    return scratch


def test_healthy_drill_passes(backup_env: BackupEnv, tmp_path: Path, scratch: Path) -> None:
    setup_env(backup_env, tmp_path, scratch)
    result = backup_env.ops("--json", "drill")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    by_source = {r["source"]: r for r in doc["results"]}
    assert set(by_source) == {"webroot", "nginx"}
    nginx_steps = {s["name"]: s for s in by_source["nginx"]["steps"]}
    assert nginx_steps["nginx -t"] == {
        **nginx_steps["nginx -t"],
        "ok": True,
        "detail": "configuration OK (tested as portal-ops-drill)",
    }
    assert by_source["webroot"]["files"] == 2
    assert by_source["webroot"]["restore_seconds"] > 0
    assert list(scratch.iterdir()) == []  # scratch space is gone
    metrics = (tmp_path / "textfile" / "portal_ops_drill.prom").read_text()
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    success = families["portalops_drill_last_run_success"].samples
    assert {s.labels["source"]: s.value for s in success} == {"webroot": 1.0, "nginx": 1.0}
    assert {s.labels["category"] for s in success} == {"code", "config"}
    assert "portalops_drill_last_success_timestamp_seconds" in families
    assert "portalops_drill_restore_seconds" in families
    latest = json.loads((backup_env.state_dir / "drills" / "latest.json").read_text())
    assert all(e["last_run_ok"] for e in latest["sources"].values())


def test_broken_nginx_config_fails_the_drill(
    local_backup_env: BackupEnv, tmp_path: Path, scratch: Path
) -> None:
    setup_env(local_backup_env, tmp_path, scratch, broken=True)
    result = local_backup_env.ops("--json", "drill", "--source", "nginx")
    assert result.returncode == 1
    [entry] = json.loads(result.stdout)["results"]
    assert entry["source"] == "nginx"
    assert any("nginx -t" in r and "servr" in r for r in entry["reasons"]), entry["reasons"]
    assert list(scratch.iterdir()) == []
    human = local_backup_env.ops("drill", "--source", "nginx")
    assert "FAILED" in human.stdout


def test_damage_fails_the_drill_naming_source_and_fault(
    backup_env: BackupEnv, tmp_path: Path, scratch: Path
) -> None:
    setup_env(backup_env, tmp_path, scratch)
    data_packs = [k for k in backup_env.object_keys("packs/")]
    biggest = max(data_packs, key=lambda k: len(backup_env.read_object(k)))
    damaged = bytearray(backup_env.read_object(biggest))
    damaged[len(damaged) // 2] ^= 0x40
    backup_env.write_object(biggest, bytes(damaged))
    result = backup_env.ops("--json", "drill")
    assert result.returncode == 1
    failed = [r for r in json.loads(result.stdout)["results"] if not r["ok"]]
    assert failed
    assert any(biggest in reason for r in failed for reason in r["reasons"]), failed
    assert list(scratch.iterdir()) == []

    backup_env.delete_object(biggest)
    result = backup_env.ops("--json", "drill")
    assert result.returncode == 1
    reasons = [x for r in json.loads(result.stdout)["results"] for x in r["reasons"]]
    assert any(biggest in x and ("missing" in x or "does not exist" in x) for x in reasons)
    metrics = (tmp_path / "textfile" / "portal_ops_drill.prom").read_text()
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    failed_sources = {r["source"] for r in json.loads(result.stdout)["results"] if not r["ok"]}
    for sample in families["portalops_drill_last_run_success"].samples:
        assert sample.value == (0.0 if sample.labels["source"] in failed_sources else 1.0)


def test_restore_over_the_objective_fails(
    local_backup_env: BackupEnv, tmp_path: Path, scratch: Path
) -> None:
    setup_env(local_backup_env, tmp_path, scratch, rto=0.000001)
    result = local_backup_env.ops("--json", "drill", "--source", "webroot")
    assert result.returncode == 1
    [entry] = json.loads(result.stdout)["results"]
    assert any("over the objective" in r and "drill.rto_seconds" in r for r in entry["reasons"])


def test_drill_needs_the_identity_and_known_sources(
    local_backup_env: BackupEnv, tmp_path: Path, scratch: Path
) -> None:
    setup_env(local_backup_env, tmp_path, scratch)
    bad = local_backup_env.ops("drill", "--source", "webrot")
    assert bad.returncode == 2
    assert "webrot" in bad.stderr
    local_backup_env.write_config(identity=False)
    no_key = local_backup_env.ops("drill")
    assert no_key.returncode == 3
    assert "backup.identity" in no_key.stderr
