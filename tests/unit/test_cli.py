"""The ops CLI as a sysadmin runs it: a real process, exit codes, stdout/stderr, no traceback."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from portalops.cli.context import PROJECT_ROOT

OPS = [sys.executable, str(PROJECT_ROOT / "ops.py")]


def ops(*args: str, cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OPS, *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )


def test_domains_json_lists_the_decision_examples() -> None:
    result = ops("--json", "inventory", "domains")
    assert result.returncode == 0, result.stderr
    docs = json.loads(result.stdout)
    by_unit = {d["unit"]: d for d in docs}
    assert by_unit["Tỉnh Vĩnh Phúc"]["domains"][:2] == [
        "www.vinhphuc.gov.vn",
        "english.vinhphuc.gov.vn",
    ]
    assert by_unit["Sở Thông tin và Truyền thông"]["domains"][0] == "sotttt.vinhphuc.gov.vn"
    assert by_unit["Huyện Vĩnh Tường"]["domains"][0] == "vinhtuong.vinhphuc.gov.vn"
    daotru = by_unit["Xã Đạo Trù"]
    assert daotru == {
        "unit": "Xã Đạo Trù",
        "kind": "commune",
        "parent": "Huyện Tam Đảo",
        "domains": ["daotru.tamdao.vinhphuc.gov.vn"],
        "legacy": [],
    }
    assert {d["kind"] for d in docs} == {"province", "department", "district", "commune"}
    assert all(set(d) == {"unit", "kind", "parent", "domains", "legacy"} for d in docs)


def test_shipped_estates_check_clean() -> None:
    result = ops("inventory", "check")
    assert result.returncode == 0, result.stderr
    assert "9" in result.stdout  # nine district-level units
    phutho = ops("--json", "--units", "inventory/examples/phutho-2025.yaml", "inventory", "check")
    assert phutho.returncode == 0, phutho.stderr
    summary = json.loads(phutho.stdout)
    assert summary["levels"] == 2
    assert summary["counts"]["district"] == 0
    assert summary["legacy_redirects"] > 0


def test_shipped_estate_counts() -> None:
    summary = json.loads(ops("--json", "inventory", "check").stdout)
    assert summary["counts"]["province"] == 1
    assert summary["counts"]["district"] == 9
    assert summary["counts"]["department"] >= 15
    assert summary["counts"]["commune"] >= 20


def test_ansible_inventory_script_protocol() -> None:
    """Hosts are the servers of inventory/servers.yaml, groups their roles."""
    listed = ops("inventory", "ansible", "--list")
    assert listed.returncode == 0, listed.stderr
    inv = json.loads(listed.stdout)
    assert set(inv["all"]["children"]) == {"web", "database", "dns", "monitoring", "agent"}
    web_hosts = inv["web"]["hosts"]
    served = {
        site["domain"]: host
        for host in web_hosts
        for site in inv["_meta"]["hostvars"][host]["portal_sites"]
    }
    assert "daotru.tamdao.vinhphuc.gov.vn" in served
    host = ops("inventory", "ansible", "--host", served["sotttt.vinhphuc.gov.vn"])
    assert host.returncode == 0, host.stderr
    assert "sotttt.vinhphuc.gov.vn" in [
        s["domain"] for s in json.loads(host.stdout)["portal_sites"]
    ]
    unknown = ops("inventory", "ansible", "--host", "nope.example.org")
    assert unknown.returncode == 2
    assert "nope.example.org" in unknown.stderr


def test_ansible_inventory_bad_servers_file_exits_2(tmp_path: Path) -> None:
    servers = tmp_path / "servers.yaml"
    servers.write_text("servers:\n  - name: web1\n    address: 10.0.0.1\n    roles: [webserver]\n")
    result = ops("inventory", "ansible", "--list", "--servers", str(servers))
    assert result.returncode == 2
    assert f"{servers}:4: servers[0].roles[0]: expected 'web', 'database'" in result.stderr
    assert "Traceback" not in result.stderr


def test_ansible_inventory_is_accepted_by_ansible(tmp_path: Path) -> None:
    """ansible-inventory parses our --list output through the shipped script inventory."""
    ansible_inventory = Path(sys.executable).parent / "ansible-inventory"
    result = subprocess.run(
        [str(ansible_inventory), "-i", str(PROJECT_ROOT / "inventory/estate"), "--list"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "ANSIBLE_LOCAL_TEMP": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout)
    assert parsed["dns"]["hosts"] == ["ns1"]
    records = parsed["_meta"]["hostvars"]["ns1"]["portal_dns_records"]
    assert {"name": "daotru.tamdao", "ipv4": "203.0.113.12", "ipv6": "2001:db8::12"} in records
    # inventory/group_vars/all.yml beside the script is read too
    assert parsed["_meta"]["hostvars"]["web1"]["portal_security_level"] == 2


@pytest.mark.parametrize(
    ("files", "args", "expect_in_stderr"),
    [
        ({"u.yaml": "province: {name: X, zone: x.vn}\nlevels: five\n"}, ["--units", "u.yaml"],
         "u.yaml:2: levels: expected 2 or 3"),
        ({"u.yaml": "province: [\n"}, ["--units", "u.yaml"], "u.yaml:2: YAML syntax error"),
        ({}, ["--units", "missing.yaml"], "missing.yaml: file not found"),
        ({"c.yaml": "backup: {retention: {daily: seven}}\n"}, ["--config", "c.yaml"],
         "c.yaml:1: backup.retention.daily: expected a whole number, got 'seven'"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_without_traceback(
    tmp_path: Path, files: dict[str, str], args: list[str], expect_in_stderr: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    command = "config-check" if "--config" in args else "check"
    result = ops(*args, "inventory" if command == "check" else "config", "check", cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert expect_in_stderr in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [["frobnicate"], ["inventory"], ["inventory", "ansible"], ["--json"], ["inventory", "nope"]],
)
def test_bad_arguments_exit_2(args: list[str]) -> None:
    result = ops(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "usage:" in result.stderr


def test_config_check_reports_defaults_without_a_file(tmp_path: Path) -> None:
    result = ops("--json", "config", "check", cwd=tmp_path)
    # Without config/ops.yaml here, the project's own default location is used if present,
    # else the built-in defaults: either way the command succeeds.
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert "backup" in doc["settings"]
