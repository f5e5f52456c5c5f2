"""ansible-lint at the production profile and yamllint over every playbook and role, as CI
runs them (the configuration is the repository's .ansible-lint and .yamllint).

Whatever roles exist under playbooks/roles/ are linted: a new role is covered without
touching this file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.paths import PROJECT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
LINTED = ["playbooks", "inventory/group_vars"]


def _run(argv: list[str], cwd: Path = PROJECT) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = str(PROJECT / "ansible.cfg")
    env["NO_COLOR"] = "1"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=900, check=False
    )


def test_roles_are_there() -> None:
    roles = sorted(p.name for p in (PROJECT / "playbooks/roles").iterdir() if p.is_dir())
    assert "common" in roles
    for role in roles:
        base = PROJECT / "playbooks/roles" / role
        assert (base / "tasks/main.yml").is_file(), role
        assert (base / "meta/argument_specs.yml").is_file(), f"{role}: no meta/argument_specs.yml"


def test_ansible_lint_production_profile() -> None:
    result = _run([str(BIN / "ansible-lint"), "--nocolor", *LINTED])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "Profile 'production' was required, and it passed" in output, output[-2000:]


def test_yamllint() -> None:
    result = _run([str(BIN / "yamllint"), "--strict", "-f", "parsable", *LINTED, ".yamllint"])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr


def test_ansible_lint_catches_what_the_profile_forbids(tmp_path: Path) -> None:
    """The configuration really lints: a short module name and a command with no
    changed_when fail the production profile."""
    (tmp_path / "bad.yml").write_text(
        "---\n"
        "- name: Bad\n"
        "  hosts: all\n"
        "  tasks:\n"
        "    - name: Short module name\n"
        "      copy:\n"
        "        content: x\n"
        "        dest: /tmp/x\n"
        "        mode: '0644'\n"
        "    - name: Command that never says whether it changed anything\n"
        "      ansible.builtin.command: /bin/true\n",
        encoding="utf-8",
    )
    result = _run(
        [
            str(BIN / "ansible-lint"),
            "--nocolor",
            "-c",
            str(PROJECT / ".ansible-lint"),
            "bad.yml",
        ],
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "fqcn[action-core]" in output
    assert "no-changed-when" in output
