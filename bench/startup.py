#!/usr/bin/env python3
"""The fixed cost of an ``ops`` command line: how long ``ops --help``, ``ops backup list`` (a
tiny repository), ``ops oncall who`` and ``ops inventory check`` take from exec to exit, with
references beside them: ``restic version`` for scale, the interpreter alone, and the floor of
a command that reads YAML (the command line's modules, PyYAML, pydantic and one model, run
from the checkout of this bench); and which imports the time goes to.

Each command runs ``--warmup`` times unmeasured (page cache, .pyc files), then ``--runs`` times;
the table shows the median wall and CPU time (user + system of the process and whatever it
waited for, from wait4) with min–max, the bar and pass/FAIL, then each command's ten slowest
imports by cumulative time (``python -X importtime``). Exit status 1 when a bar is missed.

The tiny repository (keygen, init, one backup of a few small files) and the config that names
it are made in a temporary directory, removed afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchlib import REPO_ROOT, git_revision, log, machine_info, tool_version

HELP_BAR = 0.2
COMMAND_BAR = 0.3
TOP_IMPORTS = 10


@dataclass
class Command:
    """One measured command line and its bar (seconds of wall time, median)."""

    label: str
    argv: list[str]
    bar: float | None  # None: a reference, never a FAIL
    python: bool = True  # an ops command: its imports are listed


@dataclass
class Figures:
    label: str
    argv: list[str]
    bar: float | None
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    imports: list[tuple[str, float]] = field(default_factory=list)  # (module, cumulative s)

    @property
    def wall_median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    @property
    def ok(self) -> bool | None:
        return None if self.bar is None else self.wall_median <= self.bar


def run_once(argv: list[str], cwd: Path) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system, the child and what it waited for) and the
    exit status of one run; output discarded."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env()
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


def _env() -> dict[str, str]:
    """The caller's environment without what would change what ops does or prints."""
    dropped = {"PORTAL_OPS_CONFIG", "FORCE_COLOR", "TTY_COMPATIBLE", "PYTHONDONTWRITEBYTECODE"}
    return {k: v for k, v in os.environ.items() if k not in dropped}


def import_times(argv: list[str], cwd: Path) -> list[tuple[str, float]]:
    """The slowest imports of one run by cumulative time: ``python -X importtime``."""
    python, *rest = argv
    done = subprocess.run(
        [python, "-X", "importtime", *rest],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    found: list[tuple[str, float]] = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = [p.strip() for p in line[len("import time:") :].split("|")]
        if len(parts) != 3 or not parts[1].isdigit():
            continue  # the header line
        found.append((parts[2], int(parts[1]) / 1e6))
    found.sort(key=lambda item: item[1], reverse=True)
    return found[:TOP_IMPORTS]


def measure(command: Command, cwd: Path, runs: int, warmup: int) -> Figures:
    figures = Figures(command.label, command.argv, command.bar)
    for i in range(warmup + runs):
        wall, cpu, code = run_once(command.argv, cwd)
        if code != 0:
            raise SystemExit(f"{command.label}: exit status {code}: {' '.join(command.argv)}")
        if i >= warmup:
            figures.wall.append(wall)
            figures.cpu.append(cpu)
    if command.python:
        figures.imports = import_times(command.argv, cwd)
    return figures


def q(text: str) -> str:
    """A YAML scalar for any path: a JSON string is one."""
    return json.dumps(text)


def write_config(root: Path) -> Path:
    """ops.yaml for the tiny repository and a rotation that covers every hour."""
    config = root / "ops.yaml"
    config.write_text(
        "# written by bench/startup.py\n"
        f"state_dir: {q(str(root / 'state'))}\n"
        "backup:\n"
        f"  writer_key: {q(str(root / 'writer.key'))}\n"
        f"  identity: {q(str(root / 'identity.txt'))}\n"
        f"  repositories: [{{name: local, url: {q(str(root / 'repo'))}}}]\n"
        "  sources: [{name: site, kind: files, category: code, "
        f"paths: [{q(str(root / 'site'))}]}}]\n"
        "oncall:\n"
        "  timezone: Asia/Ho_Chi_Minh\n"
        "  team_lead: an\n"
        "  people:\n"
        "    - {id: an, name: An, channels: ['mailto://an@example.org']}\n"
        "    - {id: binh, name: Binh, channels: ['mailto://binh@example.org']}\n"
        "  rotations:\n"
        "    primary: {people: [an, binh], every: week, handover: '08:00', start: 2026-01-05}\n"
        "    secondary: {people: [binh, an], every: week, handover: '08:00', start: 2026-01-05}\n",
        encoding="utf-8",
    )
    return config


def prepare(root: Path, ops: list[str]) -> Path:
    """The config, keys and a repository holding one snapshot of a few small files."""
    site = root / "site"
    site.mkdir()
    for i in range(5):
        (site / f"page{i}.html").write_text(f"<p>page {i}</p>\n" * 50, encoding="utf-8")
    config = write_config(root)
    base = [*ops, "--config", str(config), "backup"]
    keys = ["--identity", str(root / "identity.txt"), "--writer-key", str(root / "writer.key")]
    for step in (["keygen", *keys], ["init"], ["run"]):
        done = subprocess.run([*base, *step], cwd=root, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"setup: ops backup {step[0]} failed:\n{done.stderr}")
    return config


def commands(ops: list[str], config: Path) -> list[Command]:
    with_config = [*ops, "--config", str(config)]
    found = [
        Command("ops --help", [*ops, "--help"], HELP_BAR),
        Command("ops backup list", [*with_config, "backup", "list"], COMMAND_BAR),
        Command("ops oncall who", [*with_config, "oncall", "who"], COMMAND_BAR),
        Command("ops inventory check", [*ops, "inventory", "check"], COMMAND_BAR),
    ]
    python = ops[0]
    found += [
        # The floor under the three config-reading commands: the interpreter alone, then
        # what any of them needs before its own work (the command line's modules, PyYAML,
        # pydantic and one model validated).
        Command("python (nothing)", [python, "-c", "pass"], None, python=False),
        Command("floor: cli+pydantic", [python, "-c", FLOOR], None, python=False),
    ]
    restic = shutil.which("restic")
    if restic is not None:
        found.append(Command("restic version", [restic, "version"], None, python=False))
    return found


#: What every command that reads a YAML file pays before its own models and work.
FLOOR = """\
import portalops.cli.main
import portalops.core.validate as v
import portalops.core.yamlsrc
class A(v.Strict):
    x: int = 0
A.model_validate({"x": 1})
"""


def table(results: list[Figures]) -> str:
    lines = [
        f"{'command':<22} {'wall median (min-max)':<24} {'CPU median (min-max)':<24} "
        f"{'bar':<8} verdict",
    ]
    for r in results:
        wall = f"{r.wall_median:.3f} ({min(r.wall):.3f}-{max(r.wall):.3f})"
        cpu = f"{r.cpu_median:.3f} ({min(r.cpu):.3f}-{max(r.cpu):.3f})"
        bar = "-" if r.bar is None else f"<={r.bar:.1f} s"
        verdict = {None: "reference", True: "pass", False: "FAIL"}[r.ok]
        lines.append(f"{r.label:<22} {wall:<24} {cpu:<24} {bar:<8} {verdict}")
    for r in results:
        if not r.imports:
            continue
        lines += ["", f"{r.label}: slowest imports (cumulative, -X importtime)"]
        lines += [f"  {seconds * 1000:7.1f} ms  {module}" for module, seconds in r.imports]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="measured runs per command")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured runs first")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    parser.add_argument(
        "--ops",
        type=Path,
        default=REPO_ROOT / "ops.py",
        help="the ops script run with this python (default: the checkout's ops.py)",
    )
    parser.add_argument("--workdir", type=Path, help="parent of the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be at least 1 and --warmup not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ops = [sys.executable, str(args.ops.resolve())]
    root = Path(tempfile.mkdtemp(prefix="ops-startup-", dir=args.workdir))
    try:
        config = prepare(root, ops)
        results = []
        for command in commands(ops, config):
            log(f"measuring {command.label} ({args.warmup} + {args.runs} runs)")
            results.append(measure(command, root, args.runs, args.warmup))
    finally:
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(table(results))
    if args.json is not None:
        document: dict[str, Any] = {
            "machine": machine_info(),
            "revision": git_revision(),
            "restic": tool_version(["restic", "version"]),
            "runs": args.runs,
            "warmup": args.warmup,
            "results": [
                {
                    **asdict(r),
                    "wall_median": r.wall_median,
                    "cpu_median": r.cpu_median,
                    "ok": r.ok,
                }
                for r in results
            ],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 1 if any(r.ok is False for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
