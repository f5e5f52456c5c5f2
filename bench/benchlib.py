"""What every peer benchmark reports about its run: the machine, tool versions, the revision;
and the small process helpers they share."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def killpg(pid: int) -> None:
    """SIGKILL a process group that may be gone already (or no longer ours)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    try:
        for text_line in Path("/proc/cpuinfo").read_text().splitlines():
            if text_line.startswith("model name"):
                info["cpu"] = text_line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()
        info["ram_gib"] = round(int(mem[1]) / 1024 / 1024, 1)
        info["debian"] = Path("/etc/debian_version").read_text().strip()
    except (OSError, IndexError, ValueError):
        pass
    return info


def tool_version(argv: Sequence[str], pick: str = "") -> str:
    """The first line ``argv`` prints, plus the first line containing ``pick`` if given."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    if proc.returncode != 0 or not lines:
        return f"unknown (exit {proc.returncode})"
    picked = [" ".join(line.split()) for line in lines if pick and pick in line]
    return lines[0].strip() + (f", {picked[0]}" if picked else "")


def git_revision() -> str:
    try:
        proc = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return proc.stdout.strip() or "unknown"
