#!/usr/bin/env python3
"""portal-ops backup vs restic, side by side on the same corpus in the same run.

Generates a deterministic corpus shaped like a portal server (``bench/corpus.py``), then for
each tool, with the page cache dropped before every timed step: first backup, "next day"
backup (after a deterministic mutation of the corpus), full restore of the latest snapshot
into an empty directory (verified against the corpus), ``check --read-data``; plus the
repository size after each day, the peak RSS and the CPU seconds of every step. Prints one
fixed-width table with portal-ops/restic ratios against the bars in docs/benchmarks.md.

Exit codes: 0 every bar met; 1 a bar not met or a step without figures (failed); 2 bad
arguments; 3 cannot run (restic missing, not enough disk space, unusable --workdir).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import corpus
import measure_child
from benchlib import git_revision, killpg, log, machine_info, tool_version

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OPS = REPO_ROOT / "ops.py"
DEFAULT_OPS_PYTHON = REPO_ROOT / ".venv/bin/python"
MEASURE_CHILD = Path(__file__).resolve().parent / "measure_child.py"
DEFAULT_WORKDIR_PARENT = Path("/var/tmp")  # noqa: S108 - big, disk-backed, not tmpfs
MARKER = ".portalops-bench"
BENCH_PASSWORD = "portal-ops-bench-password-not-a-secret"  # noqa: S105
DEFAULT_TIMEOUT = 30 * 60
RSS_BAR_MIB = 256
RATIO_BAR = 0.8  # first backup, next-day backup, restore, check: median ratio to restic
SCALING_BAR = 1.15  # peak RSS of the first backup at 2x the corpus / at 1x
SMALL_REPO_BAR = 0.7  # check --read-data on a ~10 MB repository
SMALL_REPO_GB = 0.01
TAIL_LINES = 15
HASH_SAMPLE = 200
MiB = 1024 * 1024

TOOLS = ("portal-ops", "restic")
STEPS = (  # (key, label)
    ("backup1", "first backup"),
    ("backup2", "next-day backup"),
    ("restore", "restore latest"),
    ("check", "check --read-data"),
)
STEP_LABEL = dict(STEPS)
# A step runs only when the step it names succeeded (so a "next-day backup" is never
# silently a first backup, and a restore always restores day 2).
NEEDS = {"backup2": "backup1", "restore": "backup2", "check": "backup1"}


# --------------------------------------------------------------------------- running steps


@dataclass
class StepResult:
    status: str  # ok | failed | timeout | skipped
    seconds: float | None = None
    cpu_seconds: float | None = None
    max_rss_mib: float | None = None
    exit_code: int | None = None
    argv: list[str] = field(default_factory=list)
    stdout_tail: str = ""
    stderr_tail: str = ""
    note: str = ""
    usage: dict[str, Any] = field(default_factory=dict)  # measure_child's raw figures

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


class CacheDropper:
    """``sync; echo 3 > /proc/sys/vm/drop_caches``; when not permitted, says so once, goes on."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.drops = 0
        self.note = (
            "dropped before every timed step"
            if enabled
            else ("NOT dropped (--no-drop-caches): timings are warm-cache")
        )

    def drop(self) -> None:
        if not self.enabled:
            return
        os.sync()
        try:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        except OSError as exc:
            self.enabled = False
            self.note = (
                f"NOT dropped ({type(exc).__name__}: {exc.strerror or exc}; needs root): "
                "timings are warm-cache"
            )
            log(f"NOTE: page cache {self.note}")
        else:
            self.drops += 1


class Runner:
    """Runs one command at a time with a timeout; wall time and rusage come from measure_child."""

    def __init__(self, logdir: Path, timeout: float, cache: CacheDropper) -> None:
        self.logdir = logdir
        self.timeout = timeout
        self.cache = cache

    def run(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        timed: bool = True,
    ) -> StepResult:
        """Run ``argv``; stdout and stderr go to files under logdir (``name``.out / .err)."""
        if timed:
            self.cache.drop()
        self.logdir.mkdir(parents=True, exist_ok=True)
        out_path, err_path = self.logdir / f"{name}.out", self.logdir / f"{name}.err"
        usage_path = self.logdir / f"{name}.rusage.json"
        usage_path.unlink(missing_ok=True)
        launcher = [sys.executable, "-I", "-S", str(MEASURE_CHILD), str(usage_path)]
        timed_out = False
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            try:
                proc = subprocess.Popen(
                    [*launcher, *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    env=env,
                    start_new_session=True,  # its own process group: a timeout kills it all
                )
            except OSError as exc:
                return StepResult(
                    "failed", argv=list(argv), stderr_tail=str(exc), note="could not start"
                )
            try:
                code = proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                killpg(proc.pid)
                code = proc.wait()
                measure_child.cleanup_cgroups(proc.pid)  # anything that left the group
            except BaseException:  # Ctrl-C: take the command down with us
                killpg(proc.pid)
                proc.wait()
                measure_child.cleanup_cgroups(proc.pid)
                raise
        result = StepResult(
            "ok" if code == 0 else "failed",
            exit_code=code,
            argv=list(argv),
            stdout_tail=_tail(out_path, 6),
            stderr_tail=_tail(err_path),
        )
        try:
            usage = json.loads(usage_path.read_text())
        except (OSError, ValueError):
            usage = None  # killed before the launcher could write it
        if usage is not None:
            result.usage = usage
            result.seconds = round(usage["seconds"], 3)
            result.cpu_seconds = round(usage["cpu_seconds"], 3)  # the whole process tree
            result.max_rss_mib = round(usage["max_rss_kib"] / 1024, 1)  # the whole tree
        elif code == 0:
            result.status = "failed"
            result.note = "no resource usage recorded"
        if timed_out:
            result.status = "timeout"
            result.note = f"killed after the {self.timeout:.0f} s timeout"
        return result


# --------------------------------------------------------------------------- the two tools


class Tool:
    name = ""

    def __init__(self, rundir: Path, corpus_dir: Path, runner: Runner) -> None:
        self.rundir = rundir
        self.corpus_dir = corpus_dir
        self.runner = runner
        self.restore_dir = rundir / f"restore-{self.name}"

    @property
    def repo(self) -> Path:
        raise NotImplementedError

    def setup_commands(self) -> list[tuple[str, list[str]]]:
        raise NotImplementedError

    def step_argv(self, step: str) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def setup(self) -> StepResult:
        result = StepResult("ok")
        for label, argv in self.setup_commands():
            result = self.runner.run(f"{self.name}-{label}", argv, self.env(), timed=False)
            if not result.ok:
                result.note = f"setup step '{label}' failed"
                break
        return result

    def step(self, step: str) -> StepResult:
        if step == "restore":
            shutil.rmtree(self.restore_dir, ignore_errors=True)
            self.restore_dir.mkdir(parents=True)
        return self.runner.run(f"{self.name}-{step}", self.step_argv(step), self.env())


class Restic(Tool):
    name = "restic"

    def __init__(self, rundir: Path, corpus_dir: Path, runner: Runner, binary: str) -> None:
        super().__init__(rundir, corpus_dir, runner)
        self.binary = binary
        self.cache = rundir / "restic-cache"  # restic's normal cache, kept in the bench dir

    @property
    def repo(self) -> Path:
        return self.rundir / "restic-repo"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
        env["RESTIC_PASSWORD"] = BENCH_PASSWORD
        env["RESTIC_REPOSITORY"] = str(self.repo)
        return env

    def _cmd(self, *args: str) -> list[str]:
        return [self.binary, "--cache-dir", str(self.cache), *args]

    def setup_commands(self) -> list[tuple[str, list[str]]]:
        return [("init", self._cmd("init"))]

    def step_argv(self, step: str) -> list[str]:
        return {
            "backup1": self._cmd("backup", str(self.corpus_dir)),
            "backup2": self._cmd("backup", str(self.corpus_dir)),
            "restore": self._cmd("restore", "latest", "--target", str(self.restore_dir)),
            "check": self._cmd("check", "--read-data"),
        }[step]


class PortalOps(Tool):
    name = "portal-ops"

    def __init__(
        self, rundir: Path, corpus_dir: Path, runner: Runner, python: str, ops: Path
    ) -> None:
        super().__init__(rundir, corpus_dir, runner)
        self.python = python
        self.ops = ops
        self.config = rundir / "ops.yaml"
        self.identity = rundir / "identity.txt"
        self.writer_key = rundir / "writer.key"

    @property
    def repo(self) -> Path:
        return self.rundir / "portalops-repo"

    def write_config(self) -> None:
        q = json.dumps  # a JSON string is a valid YAML scalar, whatever the path holds
        self.config.write_text(
            "# written by bench/backup_vs_restic.py\n"
            f"state_dir: {q(str(self.rundir / 'state'))}\n"
            "backup:\n"
            f"  writer_key: {q(str(self.writer_key))}\n"
            f"  identity: {q(str(self.identity))}\n"
            f"  repositories: [{{name: local, url: {q(str(self.repo))}}}]\n"
            "  sources: [{name: corpus, kind: files, category: code, "
            f"paths: [{q(str(self.corpus_dir))}]}}]\n"
        )

    def _cmd(self, *args: str) -> list[str]:
        return [self.python, str(self.ops), "--config", str(self.config), "backup", *args]

    def setup_commands(self) -> list[tuple[str, list[str]]]:
        self.write_config()
        return [
            (
                "keygen",
                self._cmd(
                    "keygen", "--identity", str(self.identity), "--writer-key", str(self.writer_key)
                ),
            ),
            ("init", self._cmd("init")),
        ]

    def step_argv(self, step: str) -> list[str]:
        return {
            "backup1": self._cmd("run"),
            "backup2": self._cmd("run"),
            "restore": self._cmd(
                "restore", "latest", "--source", "corpus", "--target", str(self.restore_dir)
            ),
            "check": self._cmd("check", "--read-data"),
        }[step]


# --------------------------------------------------------------------------- trees


@dataclass
class DiskUsage:
    du_bytes: int = 0  # allocated blocks, as du(1) reports
    apparent_bytes: int = 0
    files: int = 0


def disk_usage(root: Path) -> DiskUsage:
    usage = DiskUsage()
    seen: set[tuple[int, int]] = set()
    for dirpath, _dirs, files in os.walk(root):
        for name in [".", *files]:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            usage.du_bytes += st.st_blocks * 512
            usage.apparent_bytes += st.st_size
            usage.files += name != "."
    return usage


def manifest(root: Path) -> dict[str, int]:
    """Relative path -> size of every regular file (symlinks and specials are listed as -1)."""
    out: dict[str, int] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[os.path.relpath(path, root)] = st.st_size if os.path.isfile(path) else -1
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def find_restored_root(target: Path, corpus_dir: Path) -> Path | None:
    """Where the corpus landed under ``target``: tools differ (restic keeps the absolute path)."""
    for candidate in (
        target / corpus_dir.relative_to(corpus_dir.anchor),
        target / corpus_dir.name,
        target,
    ):
        if (candidate / "var").is_dir() and (candidate / "etc").is_dir():
            return candidate
    queue = [(target, 0)]
    while queue:
        path, depth = queue.pop(0)
        if (path / "var").is_dir() and (path / "etc").is_dir():
            return path
        if depth < 8:
            with contextlib.suppress(OSError):
                queue.extend(
                    (p, depth + 1)
                    for p in sorted(path.iterdir())
                    if p.is_dir() and not p.is_symlink()
                )
    return None


class Verifier:
    """Compares a restored tree with the corpus: file list, sizes, sampled SHA-256 and mtimes."""

    def __init__(self, corpus_dir: Path, seed: int, must_hash: Sequence[str]) -> None:
        self.corpus_dir = corpus_dir
        self.expected = manifest(corpus_dir)
        rng = random.Random(f"verify:{seed}")  # noqa: S311 - a sample, not a secret
        names = sorted(self.expected)
        sample = set(rng.sample(names, min(HASH_SAMPLE, len(names))))
        sample.update(p for p in must_hash if p in self.expected)
        sample.add(max(names, key=lambda p: self.expected[p]))  # the largest file
        self.sample = sorted(sample)
        self.hashes = {p: sha256(corpus_dir / p) for p in self.sample}

    def verify(self, target: Path) -> tuple[str, str]:
        root = find_restored_root(target, self.corpus_dir)
        if root is None:
            return "MISMATCH", f"no restored tree (with etc/ and var/) found under {target}"
        got = manifest(root)
        missing = sorted(set(self.expected) - set(got))
        extra = sorted(set(got) - set(self.expected))
        sized = sorted(p for p in set(got) & set(self.expected) if got[p] != self.expected[p])
        hashed = [p for p in self.sample if p in got and sha256(root / p) != self.hashes[p]]
        mtimes = [
            p
            for p in self.sample
            if p in got
            and int((root / p).stat().st_mtime) != int((self.corpus_dir / p).stat().st_mtime)
        ]
        facts = (
            f"{len(got)}/{len(self.expected)} files, "
            f"{sum(max(0, s) for s in got.values()) / MiB:.1f}/"
            f"{sum(max(0, s) for s in self.expected.values()) / MiB:.1f} MiB, "
            f"{len(self.sample) - len(hashed)}/{len(self.sample)} sampled SHA-256 equal"
        )
        if mtimes:
            facts += f"; mtime differs on {len(mtimes)} sampled files (e.g. {mtimes[0]})"
        problems = [
            f"{what}: {len(items)} (e.g. {items[0]})"
            for what, items in (
                ("missing", missing),
                ("extra", extra),
                ("size differs", sized),
                ("content differs", hashed),
            )
            if items
        ]
        if problems:
            return "MISMATCH", "; ".join(problems) + f" [{facts}; restored root {root}]"
        return "OK", facts


def link_copy(src: Path, dst: Path) -> None:
    """``cp -al``: a tree of hard links (the next-day mutation never writes into an inode)."""
    for dirpath, _dirs, files in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        target = dst / rel
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            os.link(os.path.join(dirpath, name), target / name)


# --------------------------------------------------------------------------- one repeat


@dataclass
class ToolRun:
    setup: StepResult | None = None
    steps: dict[str, StepResult] = field(default_factory=dict)
    repo: dict[str, DiskUsage] = field(default_factory=dict)  # "day1", "day2"
    cache: DiskUsage | None = None
    verify: tuple[str, str] = ("n/a", "no restore")
    notes: list[str] = field(default_factory=list)
    week: dict[str, StepResult] = field(default_factory=dict)  # "day3".. untimed backups


class Repeat:
    """One run of every step for both tools, on fresh repositories and a fresh day-1 corpus."""

    def __init__(
        self,
        index: int,
        args: argparse.Namespace,
        work: Path,
        restic_bin: str,
        cache: CacheDropper,
        profile: str,
    ) -> None:
        self.index = index
        self.args = args
        self.profile = profile
        self.corpus_dir = work / "corpus"
        self.rundir = work / f"run-{index}"
        runner = Runner(self.rundir / "logs", args.timeout, cache)
        self.tools: list[Tool] = [
            PortalOps(self.rundir, self.corpus_dir, runner, args.ops_python, args.ops),
            Restic(self.rundir, self.corpus_dir, runner, restic_bin),
        ]
        if index % 2 == 0:  # alternate who goes first
            self.tools.reverse()
        self.runs = {t.name: ToolRun() for t in self.tools}

    def log(self, msg: str) -> None:
        log(f"[run {self.index}] {msg}")

    def run(self, day1: Path, mutation_out: list[corpus.MutationStats]) -> dict[str, ToolRun]:
        shutil.rmtree(self.corpus_dir, ignore_errors=True)
        shutil.rmtree(self.rundir, ignore_errors=True)
        self.rundir.mkdir(parents=True)
        self.log(f"linking a fresh day-1 corpus at {self.corpus_dir}")
        link_copy(day1, self.corpus_dir)
        self.setup()
        self.step("backup1")
        self.measure("day1")
        self.log("next day: mutating the corpus")
        mutation = corpus.next_day_profile(self.corpus_dir, self.profile, self.args.seed, 2)
        if not mutation_out:
            mutation_out.append(mutation)
        self.step("backup2")
        self.measure("day2")
        self.step("restore")
        self.verify([*mutation.changed_files, *mutation.added_files])
        self.step("check")
        if self.index == 1:  # the rest of the week: once, untimed (see bench/README.md)
            self.week()
        self.finish()
        return self.runs

    def week(self) -> None:
        for day in range(3, self.args.days + 1):
            self.log(f"day {day}: mutating the corpus, then untimed backups")
            corpus.next_day_profile(self.corpus_dir, self.profile, self.args.seed, day)
            for tool in self.tools:
                run = self.runs[tool.name]
                prev = run.week.get(f"day{day - 1}", run.steps.get("backup2"))
                if prev is None or not prev.ok:
                    res = StepResult("skipped", note=f"needs a successful day-{day - 1} backup")
                else:
                    res = tool.runner.run(
                        f"{tool.name}-day{day}", tool.step_argv("backup2"), tool.env(), timed=False
                    )
                run.week[f"day{day}"] = res
                if res.ok and tool.repo.exists():
                    run.repo["week"] = disk_usage(tool.repo)
                else:
                    run.repo.pop("week", None)  # a failed day leaves no week figure
                self.log(f"day {day}: {tool.name} {res.status} ({res.seconds} s)")
        if self.args.days == 2:
            for tool in self.tools:
                if "day2" in self.runs[tool.name].repo:
                    self.runs[tool.name].repo["week"] = self.runs[tool.name].repo["day2"]

    def setup(self) -> None:
        for tool in self.tools:
            res = tool.setup()
            self.runs[tool.name].setup = res
            why = "" if res.ok else f" (exit {res.exit_code}): {_last_line(res.stderr_tail)}"
            self.log(f"{tool.name} setup: {res.status}{why}")

    def step(self, key: str) -> None:
        need = NEEDS.get(key)
        for tool in self.tools:
            run = self.runs[tool.name]
            if run.setup is None or not run.setup.ok:
                res = StepResult("skipped", note="setup failed")
            elif need is not None and not run.steps[need].ok:
                res = StepResult("skipped", note=f"needs a successful {STEP_LABEL[need]}")
            else:
                self.log(f"{STEP_LABEL[key]}: {tool.name} ...")
                res = tool.step(key)
            run.steps[key] = res
            if res.ok:
                figures = (
                    f"{res.seconds:.2f} s, {res.max_rss_mib:.0f} MiB RSS, "
                    f"{res.cpu_seconds:.2f} s CPU"
                )
            elif res.status == "skipped":
                figures = res.note
            else:
                figures = f"exit {res.exit_code}: {_last_line(res.stderr_tail)}"
            self.log(f"{STEP_LABEL[key]}: {tool.name} {res.status.upper()} ({figures})")

    def measure(self, day: str) -> None:
        step = "backup1" if day == "day1" else "backup2"
        for tool in self.tools:
            run = self.runs[tool.name]
            if tool.repo.exists():
                run.repo[day] = disk_usage(tool.repo)
            elif run.steps[step].ok:
                run.notes.append(f"{STEP_LABEL[step]} succeeded but {tool.repo} does not exist")

    def verify(self, must_hash: list[str]) -> None:
        verifier: Verifier | None = None
        for tool in self.tools:
            run = self.runs[tool.name]
            if run.steps["restore"].ok:
                if verifier is None:
                    verifier = Verifier(self.corpus_dir, self.args.seed, must_hash)
                run.verify = verifier.verify(tool.restore_dir)
                self.log(f"restore verification {tool.name}: {run.verify[0]} ({run.verify[1]})")
            elif run.steps["restore"].status != "skipped":
                run.verify = ("n/a", "restore failed")
            if not self.args.keep:  # a restore is as big as the corpus: do not keep two around
                shutil.rmtree(tool.restore_dir, ignore_errors=True)

    def finish(self) -> None:
        for tool in self.tools:
            local = tool.cache if isinstance(tool, Restic) else self.rundir / "state"
            if local.exists():
                self.runs[tool.name].cache = disk_usage(local)
        if not self.args.keep:
            shutil.rmtree(self.rundir, ignore_errors=True)


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(no stderr)"


# --------------------------------------------------------------------------- summary


@dataclass
class Cell:
    """One figure per round (None where the step failed or was skipped)."""

    values: list[float | None]
    statuses: list[str] = field(default_factory=list)  # of the step behind the figure, per run
    use_max: bool = False  # show the worst round (peak memory) instead of the median

    @property
    def got(self) -> list[float]:
        return [v for v in self.values if v is not None]

    @property
    def median(self) -> float | None:
        got = self.got
        if not got:
            return None
        return max(got) if self.use_max else statistics.median(got)

    def text(self, fmt: str) -> str:
        m = self.median
        if m is None:
            if "timeout" in self.statuses:
                return "TIMEOUT"
            if self.statuses and all(st == "skipped" for st in self.statuses):
                return "skipped"
            return "FAILED"
        s = format(m, fmt)
        n = len(self.values)
        return s if len(self.got) == n else f"{s} ({len(self.got)}/{n})"


@dataclass
class Row:
    section: str
    label: str
    po: Cell
    rs: Cell
    fmt: str
    bar: str  # what is asked, shown in the table
    check: Callable[[Row], bool | None] | None
    po_text: str = ""
    rs_text: str = ""

    @property
    def ratios(self) -> list[float]:
        """Per-round portal-ops/restic ratios (rounds where both have a figure)."""
        return [
            a / b
            for a, b in zip(self.po.values, self.rs.values, strict=True)
            if a is not None and b is not None and b > 0
        ]

    @property
    def ratio(self) -> float | None:
        r = self.ratios
        return statistics.median(r) if r else None

    def ratio_text(self) -> str:
        r = self.ratios
        if not r or self.po_text:
            return "-"
        if len(r) == 1:
            return f"{r[0]:.2f}"
        return f"{statistics.median(r):.2f} ({min(r):.2f}-{max(r):.2f})"

    @property
    def verdict(self) -> str:
        if self.check is None:
            return "-"
        met = self.check(self)
        return "n/a" if met is None else ("pass" if met else "FAIL")


def _ratio_bar(limit: float) -> Callable[[Row], bool | None]:
    def check(row: Row) -> bool | None:
        r = row.ratio
        return None if r is None else r <= limit

    return check


def _rss_bar(row: Row) -> bool | None:
    got = row.po.got
    if not got or len(got) < len(row.po.values):
        return None
    return max(got) <= RSS_BAR_MIB


def build_rows(runs: list[dict[str, ToolRun]]) -> list[Row]:
    def cell(tool: str, get: Callable[[ToolRun], float | None], step: str, **kw: Any) -> Cell:
        values = [get(r[tool]) for r in runs]
        statuses = [res.status if (res := r[tool].steps.get(step)) else "skipped" for r in runs]
        return Cell(values, statuses, **kw)

    def step_value(key: str, attr: str) -> Callable[[ToolRun], float | None]:
        def get(run: ToolRun) -> float | None:
            res = run.steps.get(key)
            return getattr(res, attr) if res is not None and res.ok else None

        return get

    def repo_value(day: str, need: str) -> Callable[[ToolRun], float | None]:
        def get(run: ToolRun) -> float | None:
            res = run.steps.get(need)
            usage = run.repo.get(day)
            return usage.du_bytes / MiB if usage and res is not None and res.ok else None

        return get

    rows: list[Row] = []
    for key, label in STEPS:
        f = step_value(key, "seconds")
        rows.append(
            Row(
                "time (s)",
                label,
                cell("portal-ops", f, key),
                cell("restic", f, key),
                ".2f",
                f"ratio <= {RATIO_BAR}",
                _ratio_bar(RATIO_BAR),
            )
        )
    for day, need, label, bar in (
        ("day1", "backup1", "after first backup", False),
        ("day2", "backup2", "after day 2", False),
        ("week", "backup2", "after the last day", True),
    ):
        f = repo_value(day, need)
        po, rs = cell("portal-ops", f, need), cell("restic", f, need)
        if day == "week":  # the week runs in round 1 only
            po, rs = Cell(po.values[:1], po.statuses[:1]), Cell(rs.values[:1], rs.statuses[:1])
        rows.append(
            Row(
                "repository size (MiB, du)",
                label,
                po,
                rs,
                ".1f",
                "<= restic" if bar else "",
                _ratio_bar(1.0) if bar else None,
            )
        )
    for key, label in STEPS:
        f = step_value(key, "max_rss_mib")
        rows.append(
            Row(
                "peak memory, whole tree (MiB, worst round)",
                label,
                cell("portal-ops", f, key, use_max=True),
                cell("restic", f, key, use_max=True),
                ".0f",
                f"p-o <= {RSS_BAR_MIB} MiB",
                _rss_bar,
            )
        )
    for key, label in STEPS:
        f = step_value(key, "cpu_seconds")
        rows.append(
            Row(
                "CPU, whole tree (s, user+sys)",
                label,
                cell("portal-ops", f, key),
                cell("restic", f, key),
                ".2f",
                "",
                None,
            )
        )
    verdicts = {t: [r[t].verify[0] for r in runs] for t in TOOLS}
    ok = {t: Cell([1.0 if v == "OK" else None for v in verdicts[t]]) for t in TOOLS}
    row = Row(
        "restore verification",
        "files, sizes, SHA-256 sample",
        ok["portal-ops"],
        ok["restic"],
        "",
        "all OK",
        lambda _row: _verify_bar(verdicts["portal-ops"]),
    )
    row.po_text, row.rs_text = (_verify_text(verdicts[t]) for t in TOOLS)
    rows.append(row)
    return rows


def _verify_bar(verdicts: list[str]) -> bool | None:
    if any(v == "MISMATCH" for v in verdicts):
        return False
    return True if all(v == "OK" for v in verdicts) else None


def _verify_text(verdicts: list[str]) -> str:
    if all(v == "OK" for v in verdicts):
        return "OK"
    if any(v == "MISMATCH" for v in verdicts):
        return "MISMATCH"
    return "-" if all(v == "n/a" for v in verdicts) else "partial"


def render_table(rows: list[Row]) -> str:
    widths = (30, 13, 13, 17, 16, 6)
    head = ("", "portal-ops", "restic", "ratio", "bar", "result")

    def line(cols: Sequence[str]) -> str:
        return (
            f"{cols[0]:<{widths[0]}} {cols[1]:>{widths[1]}} {cols[2]:>{widths[2]}} "
            f"{cols[3]:>{widths[3]}}  {cols[4]:<{widths[4]}} {cols[5]}"
        ).rstrip()

    out = [line(head), line(["-" * w for w in widths])]
    section = ""
    for row in rows:
        if row.section != section:
            section = row.section
            out.append(section)
        out.append(
            line(
                (
                    f"  {row.label}",
                    row.po_text or row.po.text(row.fmt),
                    row.rs_text or row.rs.text(row.fmt),
                    row.ratio_text(),
                    row.bar,
                    row.verdict,
                )
            )
        )
    return "\n".join(out)


# --------------------------------------------------------------------------- report


def failures_text(runs: list[dict[str, ToolRun]]) -> str:
    out: list[str] = []
    seen: dict[str, str] = {}
    for i, run in enumerate(runs, 1):
        for tool in TOOLS:
            tr = run[tool]
            items = [("setup", tr.setup)] if tr.setup and not tr.setup.ok else []
            items += [
                (STEP_LABEL[k], r) for k, r in tr.steps.items() if r.status in ("failed", "timeout")
            ]
            for what, res in items:
                if res is None:
                    continue
                head = f"- run {i}, {tool}, {what}: {res.status.upper()}, exit {res.exit_code}"
                if res.note:
                    head += f" ({res.note})"
                out.append(head)
                out.append(f"    $ {shlex.join(res.argv)}")
                tail = res.stderr_tail or "(no stderr)"
                if tail in seen:
                    out.append(f"    stderr: same as {seen[tail]}")
                else:
                    seen[tail] = f"run {i}, {tool}, {what}"
                    out.extend("    | " + t for t in tail.splitlines())
            out.extend(f"- run {i}, {tool}: {note}" for note in tr.notes)
            if tr.verify[0] == "MISMATCH":
                out.append(f"- run {i}, {tool}, restore verification: MISMATCH: {tr.verify[1]}")
    skipped = list(
        dict.fromkeys(
            f"{tool}: {label} ({run[tool].steps[k].note})"
            for run in runs
            for tool in TOOLS
            for k, label in STEPS
            if k in run[tool].steps and run[tool].steps[k].status == "skipped"
        )
    )
    if skipped:
        out.append("- skipped: " + "; ".join(skipped))
    return "\n".join(out)


def to_jsonable(obj: Any) -> Any:
    if isinstance(obj, Row):
        return row_json(obj)
    if isinstance(obj, StepResult | DiskUsage | ToolRun | corpus.CorpusStats):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="backup_vs_restic",
        description="Benchmark portal-ops backups against restic on the same generated corpus "
        "in the same run (bars: docs/benchmarks.md).",
        epilog="Exit codes: 0 every bar met; 1 a bar not met or a step failed; 2 bad arguments; "
        "3 cannot run (restic missing, disk space, --workdir). See bench/README.md.",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--size-gb",
        type=float,
        default=corpus.DEFAULT_SIZE_GB,
        help=f"corpus size in GB (default {corpus.DEFAULT_SIZE_GB})",
    )
    size.add_argument(
        "--small", action="store_true", help=f"a {corpus.SMALL_SIZE_GB} GB corpus for a smoke check"
    )
    p.add_argument("--seed", type=int, default=corpus.DEFAULT_SEED, help="corpus seed")
    p.add_argument(
        "--profile",
        choices=(*corpus.PROFILES, "both"),
        default="both",
        help="corpus profile: portal, smallfiles (30k small files, a pg_dump rewritten "
        "daily) or both (default); bars apply to each",
    )
    p.add_argument(
        "--days",
        type=int,
        default=7,
        help="days of daily changes (default 7: the week); day 2 is timed, days 3..N run "
        "once (round 1), untimed, for the repository size after the week",
    )
    p.add_argument(
        "--scaling",
        action="store_true",
        help="also run portal-ops' first backup on a corpus twice the size: peak memory "
        f"ratio 2x/1x <= {SCALING_BAR}",
    )
    p.add_argument(
        "--small-repo-runs",
        type=int,
        default=7,
        help="check --read-data runs on a ~10 MB repository, per tool (0: skip that row)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a quick look while working: --size-gb 0.3 --repeat 1 --days 2 "
        "--small-repo-runs 3 (unless given); its figures do not settle a bar",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        help=f"where corpus, repositories and restores go (default: a new directory "
        f"under {DEFAULT_WORKDIR_PARENT}); removed afterwards unless --keep. A kept "
        "workdir's corpus is reused when size and seed match",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the workdir (corpus, repositories, restores, logs)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every step N times on fresh repositories; the table shows medians",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write all figures to FILE")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds before a command is killed (default {DEFAULT_TIMEOUT})",
    )
    p.add_argument(
        "--no-drop-caches",
        action="store_true",
        help="do not drop the page cache before timed steps (warm-cache timings)",
    )
    p.add_argument("--restic", default="restic", help="the restic binary (default: on PATH)")
    p.add_argument(
        "--ops-python",
        default=str(DEFAULT_OPS_PYTHON)
        if os.access(DEFAULT_OPS_PYTHON, os.X_OK)
        else sys.executable,
        help="python that runs portal-ops (default: the project venv's)",
    )
    p.add_argument("--ops", type=Path, default=DEFAULT_OPS, help="portal-ops' ops.py")
    args = p.parse_args(argv)
    if args.quick:
        given = set(argv if argv is not None else sys.argv[1:])
        for opt, attr, value in (
            ("--size-gb", "size_gb", 0.3),
            ("--repeat", "repeat", 1),
            ("--days", "days", 2),
            ("--small-repo-runs", "small_repo_runs", 3),
        ):
            if not any(a == opt or a.startswith(opt + "=") for a in given):
                setattr(args, attr, value)
    if args.days < 2:
        p.error("--days must be at least 2 (day 2 is the timed next-day backup)")
    if args.small_repo_runs < 0:
        p.error("--small-repo-runs must be >= 0")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.small:
        args.size_gb = corpus.SMALL_SIZE_GB
    if not 0.01 <= args.size_gb <= 1000:
        p.error("--size-gb must be between 0.01 and 1000")
    if args.timeout <= 0:
        p.error("--timeout must be positive")
    return args


def prepare_workdir(args: argparse.Namespace) -> Path:
    if args.workdir is None:
        DEFAULT_WORKDIR_PARENT.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="portalops-bench-", dir=DEFAULT_WORKDIR_PARENT))
    else:
        work = args.workdir.resolve()
        if work.exists() and any(work.iterdir()) and not (work / MARKER).exists():
            raise SystemExit(
                _fail(
                    3,
                    f"--workdir {work} is not empty and was not made by this "
                    "benchmark; refusing to use (and later delete) it",
                )
            )
        work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text("created by bench/backup_vs_restic.py; safe to delete\n")
    return work


def _fail(code: int, msg: str) -> int:
    log(f"backup_vs_restic: {msg}")
    return code


def get_corpus(
    work: Path, size_gb: float, seed: int, profile: str = "portal"
) -> tuple[Path, dict[str, Any], bool]:
    day1 = work / f"day1-{profile}-{size_gb:g}"
    meta_path = work / f"day1-{profile}-{size_gb:g}.json"
    version = corpus.GENERATOR_VERSION if profile == "portal" else corpus.SMALLFILES_VERSION
    if meta_path.exists() and day1.is_dir():
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError:
            meta = {}
        if (meta.get("size_gb"), meta.get("seed"), meta.get("generator_version")) == (
            size_gb,
            seed,
            version,
        ):
            log(
                f"reusing the corpus in {day1} ({meta['files']} files, "
                f"{meta['bytes'] / 1e6:.0f} MB)"
            )
            return day1, meta, True
    shutil.rmtree(day1, ignore_errors=True)
    meta_path.unlink(missing_ok=True)
    log(f"generating a {size_gb} GB {profile} corpus in {day1} (seed {seed}) ...")
    stats = corpus.generate_profile(day1, profile, size_gb, seed)
    meta = asdict(stats)
    meta_path.write_text(json.dumps(meta, indent=2))
    log(
        f"generated {stats.files} files, {stats.bytes / 1e6:.0f} MB in {stats.seconds:.1f} s "
        f"({stats.bytes / 1e6 / max(stats.seconds, 1e-9):.0f} MB/s)"
    )
    return day1, meta, False


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    restic_bin = shutil.which(args.restic)
    if restic_bin is None:
        return _fail(
            3,
            f"restic not found ({args.restic!r} is not on PATH). Install it with:\n"
            "    apt-get install restic\n(Debian 12 ships restic 0.14), or pass "
            "--restic /path/to/restic.",
        )
    if not os.access(args.ops, os.R_OK):
        log(f"WARNING: {args.ops} is missing or unreadable: every portal-ops step will fail")

    work = prepare_workdir(args)
    try:
        free = shutil.disk_usage(work).free
        need = int(args.size_gb * 1e9 * 4.5) + (int(args.size_gb * 3e9) if args.scaling else 0)
        if free < need:
            return _fail(
                3,
                f"not enough space in {work}: {free / 1e9:.1f} GB free, about "
                f"{need / 1e9:.1f} GB needed (corpus, two repositories, a restore)",
            )
        return run(args, work, restic_bin)
    finally:
        if args.keep:
            log(f"kept {work}")
        elif (work / MARKER).exists():
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path, restic_bin: str) -> int:
    started = time.time()
    cache = CacheDropper(not args.no_drop_caches)
    profiles = list(corpus.PROFILES) if args.profile == "both" else [args.profile]
    results: dict[str, dict[str, Any]] = {}
    for profile in profiles:
        log(f"##### profile {profile} #####")
        results[profile] = run_profile(args, work, restic_bin, cache, profile)
    small = small_repository(args, work, restic_bin) if args.small_repo_runs else None
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": machine_info(),
        "versions": {
            "restic": tool_version([restic_bin, "version"]),
            "portal-ops": tool_version([args.ops_python, str(args.ops), "--version"]),
            "portal-ops git": git_revision(),
        },
        "page_cache": cache.note,
        "repeat": args.repeat,
        "days": args.days,
        "measured_with": _measure_mode(results),
    }
    all_rows = [r for res in results.values() for r in res["rows"]] + (small or [])
    with_bar = [r for r in all_rows if r.check is not None]
    met = sum(r.verdict == "pass" for r in with_bar)
    missing = sum(r.verdict == "n/a" for r in with_bar)
    meta["bars"] = {"met": met, "of": len(with_bar), "without_figures": missing}
    print(report_text(args, meta, results, small, started))
    if args.json:
        doc = {
            **meta,
            "profiles": {
                name: {
                    "corpus": res["corpus"],
                    "next_day": res["next_day"],
                    "table": [row_json(r) for r in res["rows"]],
                    "runs": to_jsonable(res["runs"]),
                    "scaling": to_jsonable(res.get("scaling")),
                }
                for name, res in results.items()
            },
            "small_repository": [row_json(r) for r in small] if small else None,
        }
        args.json.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        log(f"figures written to {args.json}")
    return 0 if met == len(with_bar) else 1


def _measure_mode(results: dict[str, dict[str, Any]]) -> str:
    modes = {
        res.usage.get("mode", "?")
        for r in results.values()
        for run in r["runs"]
        for tr in run.values()
        for res in tr.steps.values()
        if res.usage
    }
    return ", ".join(sorted(modes)) or "?"


def run_profile(
    args: argparse.Namespace, work: Path, restic_bin: str, cache: CacheDropper, profile: str
) -> dict[str, Any]:
    day1, corpus_meta, reused = get_corpus(work, args.size_gb, args.seed, profile)
    runs: list[dict[str, ToolRun]] = []
    mutation: list[corpus.MutationStats] = []
    for i in range(1, args.repeat + 1):
        log(f"=== {profile}: run {i}/{args.repeat} ===")
        rep = Repeat(i, args, work / profile, restic_bin, cache, profile)
        runs.append(rep.run(day1, mutation))
    rows = build_rows(runs)
    out: dict[str, Any] = {
        "corpus": {**corpus_meta, "reused": reused},
        "next_day": mutation[0].summary() if mutation else {},
        "runs": runs,
        "rows": rows,
    }
    if args.scaling:
        out["scaling"] = scaling(args, work, restic_bin, cache, profile, runs)
        rows.append(out["scaling"]["row"])
    return out


def scaling(
    args: argparse.Namespace,
    work: Path,
    restic_bin: str,
    cache: CacheDropper,
    profile: str,
    runs: list[dict[str, ToolRun]],
) -> dict[str, Any]:
    """portal-ops' first backup of a corpus twice the size: is its peak memory flat?"""
    day1, _meta, _reused = get_corpus(work, args.size_gb * 2, args.seed, profile)
    rundir = work / profile / "scaling"
    corpus_dir = rundir / "corpus"
    shutil.rmtree(rundir, ignore_errors=True)
    rundir.mkdir(parents=True)
    link_copy(day1, corpus_dir)
    runner = Runner(rundir / "logs", args.timeout, cache)
    tool = PortalOps(rundir, corpus_dir, runner, args.ops_python, args.ops)
    res = tool.setup()
    if res.ok:
        log(f"scaling: portal-ops first backup of {args.size_gb * 2:g} GB ...")
        res = tool.step("backup1")
    at_1x = [
        v for r in runs if (st := r["portal-ops"].steps.get("backup1")) and (v := st.max_rss_mib)
    ]
    one = statistics.median(at_1x) if at_1x else None
    two = res.max_rss_mib if res.ok else None
    row = Row(
        "scaling (portal-ops only)",
        "first-backup peak, 2x / 1x",
        Cell([two], [res.status]),
        Cell([one], ["ok" if one else "failed"]),
        ".0f",
        f"ratio <= {SCALING_BAR}",
        _ratio_bar(SCALING_BAR),
    )
    if not args.keep:
        shutil.rmtree(rundir, ignore_errors=True)
    return {"size_gb": args.size_gb * 2, "step": res, "peak_1x_mib": one, "row": row}


def small_repository(args: argparse.Namespace, work: Path, restic_bin: str) -> list[Row]:
    """check --read-data on a ~10 MB repository: start-up dominates; warm cache, N runs."""
    day1, _meta, _reused = get_corpus(work, SMALL_REPO_GB, args.seed, "portal")
    rundir = work / "small-repo"
    shutil.rmtree(rundir, ignore_errors=True)
    rundir.mkdir(parents=True)
    corpus_dir = rundir / "corpus"
    link_copy(day1, corpus_dir)
    runner = Runner(rundir / "logs", args.timeout, CacheDropper(False))
    tools: list[Tool] = [
        PortalOps(rundir, corpus_dir, runner, args.ops_python, args.ops),
        Restic(rundir, corpus_dir, runner, restic_bin),
    ]
    times: dict[str, list[float | None]] = {t.name: [] for t in tools}
    statuses: dict[str, list[str]] = {t.name: [] for t in tools}
    ready = {}
    for tool in tools:
        res = tool.setup()
        if res.ok:
            res = runner.run(f"{tool.name}-backup", tool.step_argv("backup1"), tool.env(), False)
        ready[tool.name] = res.ok
    for i in range(args.small_repo_runs):
        for tool in tools if i % 2 == 0 else tools[::-1]:
            if not ready[tool.name]:
                times[tool.name].append(None)
                statuses[tool.name].append("skipped")
                continue
            res = runner.run(
                f"{tool.name}-check-{i}", tool.step_argv("check"), tool.env(), timed=False
            )
            times[tool.name].append(res.seconds if res.ok else None)
            statuses[tool.name].append(res.status)
    log(f"small repository: check --read-data times {times}")
    if not args.keep:
        shutil.rmtree(rundir, ignore_errors=True)
    return [
        Row(
            f"small repository (~10 MB, warm cache, {args.small_repo_runs} runs)",
            "check --read-data (s)",
            Cell(times["portal-ops"], statuses["portal-ops"]),
            Cell(times["restic"], statuses["restic"]),
            ".2f",
            f"ratio <= {SMALL_REPO_BAR}",
            _ratio_bar(SMALL_REPO_BAR),
        )
    ]


def report_text(
    args: argparse.Namespace,
    meta: dict[str, Any],
    results: dict[str, dict[str, Any]],
    small: list[Row] | None,
    started: float,
) -> str:
    info, versions = meta["machine"], meta["versions"]
    bars = meta["bars"]
    lines = [
        f"portal-ops backup vs restic — {time.strftime('%Y-%m-%d %H:%M', time.localtime(started))}",
        f"machine:  {info.get('cpu', '?')}, {info.get('cores')} cores, "
        f"{info.get('ram_gib')} GiB RAM, Linux {info.get('kernel')}, "
        f"Debian {info.get('debian', '?')}",
        f"tools:    {versions['restic']}; {versions['portal-ops']} "
        f"(git {versions['portal-ops git']})",
        f"rounds:   {args.repeat} on fresh repositories, who goes first alternates; every "
        "ratio is the median of the per-round ratios (min-max)",
        f"week:     {args.days} days; next-day backup = day 2 (every round); days 3..{args.days} "
        "run in round 1 only, untimed, for the repository size",
        f"counting: CPU and peak memory of the whole process tree ({meta['measured_with']}); "
        "peak memory = max(sampled sum of PSS, largest single RSS)",
        f"page cache {meta['page_cache']}",
    ]
    for profile, res in results.items():
        cm, mut = res["corpus"], res["next_day"]
        kinds = ", ".join(
            f"{kind} {v['files']} files/{v['bytes'] / 1e6:.0f} MB"
            for kind, v in cm["by_kind"].items()
        )
        gen = "reused" if cm["reused"] else f"generated in {cm['seconds']:.1f} s"
        lines += [
            "",
            f"=== profile {profile} ===",
            f"corpus:   {cm['bytes'] / 1e6:.0f} MB in {cm['files']} files, --size-gb "
            f"{args.size_gb}, seed {args.seed}, {gen} ({kinds})",
            f"day 2:    {mut.get('changed', '?')} files changed, {mut.get('added', '?')} added, "
            f"{mut.get('deleted', '?')} deleted, {mut.get('renamed', '?')} renamed; "
            f"{mut.get('sql_rows_rewritten', '?')} dump rows rewritten, "
            f"{mut.get('sql_rows_appended', '?')} appended",
            "",
            render_table(res["rows"]),
        ]
        fails = failures_text(res["runs"])
        if fails:
            lines += ["", "Failures:", fails]
    if small:
        lines += ["", render_table(small)]
    lines += [
        "",
        f"bars met: {bars['met']} of {bars['of']}"
        + (
            f" ({bars['without_figures']} without figures: a step failed or was skipped)"
            if bars["without_figures"]
            else ""
        ),
        "ratio = portal-ops / restic (below 1.0: portal-ops is faster or smaller); "
        "FAILED = no figure; (k/n) = k of n rounds succeeded.",
    ]
    return "\n".join(lines)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def row_json(r: Row) -> dict[str, Any]:
    return {
        "section": r.section,
        "row": r.label,
        "portal_ops": r.po_text or _round(r.po.median),
        "restic": r.rs_text or _round(r.rs.median),
        "portal_ops_values": r.po.values,
        "restic_values": r.rs.values,
        "ratio": None if r.po_text else _round(r.ratio),
        "ratios_per_round": [_round(x) for x in r.ratios],
        "bar": r.bar,
        "result": r.verdict,
    }


def _terminated(signum: int, _frame: object) -> None:
    # Unwind like Ctrl-C: the running command's process group is killed, the workdir removed.
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminated)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(_fail(130, "interrupted"))
