"""``ops provision``: which playbook, which ansible-playbook, the recap, the exit codes.

The converges themselves are integration tests (tests/integration/test_provision_*.py); here
ansible-playbook runs only against hosts it cannot reach, or not at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from portalops.core.errors import BadInput
from portalops.provision import HostRecap, parse_recap, resolve_playbook
from tests.fixtures.cli import run_ops
from tests.fixtures.paths import OPS_PY, PROJECT

FIXTURES = PROJECT / "tests/fixtures/provision"

RECAP = """\
PLAY [Common] ******************************************************************

TASK [Gathering Facts] *********************************************************
ok: [web1]
fatal: [web2]: UNREACHABLE! => changed=false

PLAY RECAP *********************************************************************
web1                       : ok=12   changed=3    unreachable=0    failed=0    skipped=2    rescued=0    ignored=1
web2                       : ok=0    changed=0    unreachable=1    failed=0    skipped=0    rescued=0    ignored=0

TASKS RECAP ********************************************************************
Sunday 29 November 2026  01:15:56 +0000 (0:00:00.694)       0:00:50.332 *******
===============================================================================
common : Set the kernel's hardening parameters ------------------------- 14.96s
"""  # noqa: E501


def test_parse_recap() -> None:
    recap = parse_recap(RECAP)
    assert recap == {
        "web1": HostRecap(ok=12, changed=3, skipped=2, ignored=1),
        "web2": HostRecap(unreachable=1),
    }
    assert recap["web2"].problem
    assert not recap["web1"].problem
    assert parse_recap("no recap here") == {}


def test_resolve_playbook() -> None:
    playbooks = PROJECT / "playbooks"
    assert resolve_playbook(PROJECT, None) == playbooks / "site.yml"
    assert resolve_playbook(PROJECT, "common") == playbooks / "common.yml"
    assert resolve_playbook(PROJECT, "common.yml") == playbooks / "common.yml"
    with pytest.raises(BadInput, match=r"no such playbook; the playbooks are: .*common"):
        resolve_playbook(PROJECT, "nope")


def _provision(*args: str) -> list[str]:
    return [
        "--units",
        str(FIXTURES / "units.yaml"),
        "provision",
        "--servers",
        str(FIXTURES / "servers.yaml"),
        *args,
    ]


def test_missing_ansible_playbook_exits_3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    result = run_ops(*_provision("--playbook", "common"))
    assert result.code == 3
    assert "ansible-playbook not found" in result.stderr
    assert "scripts/setup-python dev" in result.stderr
    assert "pip install 'portal-ops[provision]'" in result.stderr


def test_unknown_playbook_exits_2() -> None:
    result = run_ops(*_provision("--playbook", "frobnicate"))
    assert result.code == 2
    assert "frobnicate.yml: no such playbook" in result.stderr


def test_bad_servers_file_exits_2_before_ansible_runs(tmp_path: Path) -> None:
    servers = tmp_path / "servers.yaml"
    servers.write_text("servers:\n  - {name: a, address: nowhere, roles: [web]}\n")
    argv = ["--units", str(FIXTURES / "units.yaml"), "provision", "--servers", str(servers)]
    result = run_ops(*argv)
    assert result.code == 2
    assert f"{servers}:2: servers[0].address" in result.stderr


def test_unreachable_host_exits_with_ansible_playbooks_code(tmp_path: Path) -> None:
    """A real ansible-playbook run against a port nobody listens on: its exit code (4,
    unreachable) is ops' exit code, its output streams to stdout, ops says what it means."""
    overrides = tmp_path / "overrides.yml"
    overrides.write_text(
        json.dumps(
            {
                "all": {
                    "hosts": {
                        "testhost": {
                            "ansible_port": 1,
                            "ansible_ssh_common_args": "-o ConnectTimeout=3 -o BatchMode=yes "
                            f"-o UserKnownHostsFile={tmp_path}/known_hosts",
                        }
                    }
                }
            }
        )
    )
    # A real process: the run needs a bare environment (PATH, HOME) for ansible-playbook, and
    # ops provision still streams ansible's output to sys.stdout, not the Environment's.
    result = subprocess.run(
        [
            sys.executable,
            str(OPS_PY),
            *_provision("--playbook", "common", "--check", "--", "-i", str(overrides)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ANSIBLE_LOCAL_TEMP": str(tmp_path)},
    )
    assert result.returncode == 4, result.stdout + result.stderr
    assert "PLAY RECAP" in result.stdout
    assert "UNREACHABLE" in result.stdout
    assert "ops: ansible-playbook playbooks/common.yml exited with 4: a host was unreachable" in (
        result.stderr
    )
    assert "(hosts: testhost)" in result.stderr
    assert "Traceback" not in result.stderr
