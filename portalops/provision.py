"""Run the playbooks (``ops provision``): ansible-playbook with the project's ansible.cfg and
the estate inventory, its output streamed as it comes, its PLAY RECAP parsed.

The inventory is the script ``inventory/estate`` (``ops inventory ansible``); which units and
servers files it reads travels in the environment (PORTALOPS_UNITS, PORTALOPS_SERVERS), so the
inventory's ``group_vars/`` stay those of the checkout whatever estate is provisioned.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO, cast

from portalops.core.errors import BadInput, ExitCode, OpsError

PLAYBOOKS = "playbooks"
SITE = "site.yml"
ANSIBLE_CFG = "ansible.cfg"
INVENTORY_SCRIPT = Path("inventory") / "estate"

# "web1   : ok=12   changed=0    unreachable=0    failed=0    skipped=3    rescued=0 ..."
_RECAP_LINE = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$")
_COUNT = re.compile(r"(\w+)=(\d+)")

#: What ansible-playbook's exit codes mean (ansible.errors.ExitCode; 2 and 4 are bit flags).
ANSIBLE_EXIT_CODES = {
    1: "an error",
    2: "a task failed on at least one host",
    4: "a host was unreachable, or a playbook, inventory or variable file did not parse",
    6: "tasks failed on some hosts and others were unreachable",
    5: "bad or incomplete options",
    99: "interrupted",
    250: "an unexpected error inside Ansible",
}


class AnsibleMissing(OpsError):
    """ansible-playbook not found beside {} nor on PATH: 'ops provision' needs the provision
    extra (ansible-core and the collections the roles use); install it into this environment
    with: pip install 'portal-ops[provision]' (in a checkout: scripts/setup-python dev)"""


class PlaybookFailed(OpsError):
    """ansible-playbook {} exited with {}: {}{}"""

    def __init__(self, playbook: str, code: int, failed_hosts: Sequence[str]) -> None:
        meaning = ANSIBLE_EXIT_CODES.get(code, "an error")
        hosts = f" (hosts: {', '.join(failed_hosts)})" if failed_hosts else ""
        super().__init__(playbook, code, meaning, hosts)
        # ops exits with ansible-playbook's own code, whichever it is (docs/provisioning.md).
        self.exit_code = cast(ExitCode, code)


@dataclass(frozen=True)
class HostRecap:
    """One host's line of the PLAY RECAP."""

    ok: int = 0
    changed: int = 0
    unreachable: int = 0
    failed: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0

    @property
    def problem(self) -> bool:
        return self.unreachable > 0 or self.failed > 0


@dataclass
class RunResult:
    """A finished ansible-playbook run."""

    playbook: Path
    argv: list[str]
    returncode: int
    recap: dict[str, HostRecap] = field(default_factory=dict)


def parse_recap(output: str) -> dict[str, HostRecap]:
    """Per-host counts of the last PLAY RECAP in ``output`` (empty if there is none)."""
    recap: dict[str, HostRecap] = {}
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("PLAY RECAP")]
    if not starts:
        return recap
    for line in lines[starts[-1] + 1 :]:
        match = _RECAP_LINE.match(line.strip())
        if match is None:
            if recap and line.strip():
                break  # the recap block ended (profile_tasks' timings follow it)
            continue
        counts = {k: int(v) for k, v in _COUNT.findall(match["counts"])}
        known = {k: v for k, v in counts.items() if k in HostRecap.__dataclass_fields__}
        recap[match["host"]] = HostRecap(**known)
    return recap


def find_ansible_playbook() -> str:
    """The ansible-playbook of our own environment first (the venv's, beside this Python),
    else the one on PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("ansible-playbook")
    if found is None:
        raise AnsibleMissing(Path(sys.executable).parent)
    return found


def resolve_playbook(root: Path, name: str | None) -> Path:
    """``site`` by default; ``web`` or ``web.yml`` -> playbooks/web.yml."""
    directory = root / PLAYBOOKS
    if name is None:
        return directory / SITE
    candidate = Path(name)
    if candidate.suffix not in {".yml", ".yaml"}:
        candidate = candidate.with_suffix(".yml")
    path = candidate if candidate.is_absolute() else directory / candidate.name
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.yml"))
        raise BadInput(f"{path}: no such playbook; the playbooks are: {', '.join(known)}")
    return path


def build_argv(
    binary: str,
    root: Path,
    playbook: Path,
    *,
    limit: str | None = None,
    check: bool = False,
    diff: bool = False,
    extra: Sequence[str] = (),
) -> list[str]:
    """ansible-playbook's arguments: the estate inventory first, then whatever ``extra`` adds
    (more ``-i`` sources, ``-e``, ``--vault-password-file``, ``--tags``)."""
    limits = ["--limit", limit] if limit else []
    modes = [flag for flag, wanted in (("--check", check), ("--diff", diff)) if wanted]
    return [binary, "-i", str(root / INVENTORY_SCRIPT), str(playbook), *limits, *modes, *extra]


def ansible_env(root: Path, units: Path, servers: Path) -> dict[str, str]:
    """The environment ansible-playbook runs in: our ansible.cfg, our estate files."""
    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = str(root / ANSIBLE_CFG)
    env["PORTALOPS_UNITS"] = str(units.resolve())
    env["PORTALOPS_SERVERS"] = str(servers.resolve())
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_playbook(
    argv: list[str],
    env: dict[str, str],
    playbook: Path,
    *,
    out: TextIO,
    cwd: Path,
) -> RunResult:
    """Run ansible-playbook, copying its output line by line to ``out`` as it comes."""
    captured: list[str] = []
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        bufsize=1,
        env=env,
        cwd=cwd,
    ) as proc:
        assert proc.stdout is not None  # noqa: S101 - stdout=PIPE above
        for line in proc.stdout:
            out.write(line)
            out.flush()
            captured.append(line)
        returncode = proc.wait()
    return RunResult(playbook, argv, returncode, parse_recap("".join(captured)))
