#!/usr/bin/env python3
"""Daily database dumps: what day 2 adds after 0.5 % of a table's rows changed, portal-ops
against restic, and whether restoring the day-2 dump is as fast as the day-1 one.

The bar (issue 18): on a pgbench database at scale 30 with 0.5 % of ``pgbench_accounts``
updated uniformly, day 2 adds (stored bytes) at most 10 % of the dump's size, with restore
speed unchanged. Two datasets, as in the study of docs/benchmarks.md ("Daily database
dumps"): **A**, pgbench's own table (its ``filler`` is 84 blanks: the dump compresses 100:1,
so any tool stores little), and **B**, the same rows with an 84-character pseudo-random
filler (compresses ~1.4:1, standing in for a table with real content).

A throwaway PostgreSQL cluster (the one drills use) is made in the work directory; each
dataset is dumped with ``pg_dump -Fc -Z0`` (as the ``postgres`` source does), rows are updated
(``random() < 0.005``, seeded), and dumped again. Both tools then back up the same two files
as a stream: portal-ops through a ``command`` source (``cat``), so the dump goes through the
stream path a database source uses; restic with ``backup --stdin``. Restore: ``ops backup
dump`` / ``restic dump`` of the newest snapshot to stdout (a file in the log directory), page
cache dropped before every timed command.

Exit codes: 0 bar met; 1 bar not met or a step failed; 2 bad arguments; 3 cannot run.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backup_vs_restic import (
    BENCH_PASSWORD,
    DEFAULT_OPS,
    DEFAULT_OPS_PYTHON,
    CacheDropper,
    Runner,
    StepResult,
    prepare_workdir,
)
from benchlib import git_revision, log, machine_info, tool_version

BAR_ADDED = 0.10  # day 2's stored bytes over the dump's size
BAR_RESTORE = 1.25  # day-2 restore time over day-1's, median of rounds (noise allowance)
DATASETS = ("A", "B")
TOOLS = ("portal-ops", "restic")
RESTIC_ADDED = re.compile(r"Added to the repository: ([\d.]+) (\w+) \(([\d.]+) (\w+) stored\)")
UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}
B_FILLER = (
    "CREATE TABLE acc AS SELECT aid, bid, abalance, substr("
    "encode(sha256(aid::text::bytea), 'base64') || encode(sha256((-aid)::text::bytea), "
    "'base64'), 1, 84)::char(84) AS filler FROM pgbench_accounts ORDER BY aid; "
    "DROP TABLE pgbench_accounts; ALTER TABLE acc RENAME TO pgbench_accounts; "
    "ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid)"
)
UPDATE = (
    "SELECT setseed(0.42); "
    "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE random() < 0.005"
)


def make_dumps(work: Path, scale: int, python: str) -> dict[str, tuple[Path, Path]]:
    """Both datasets' day-1 and day-2 dumps, made in a throwaway cluster (run by ``python``,
    which has portal-ops: the drills' own throwaway server)."""
    out = work / "dumps"
    if all((out / f"{d}-day{n}.dump").exists() for d in DATASETS for n in (1, 2)):
        log("dumps: reusing those in the work directory")
    else:
        out.mkdir(parents=True, exist_ok=True)
        script = f"""
import subprocess, sys
from pathlib import Path
from portalops.backup.engines.scratch import find_postgres_bin, throwaway_postgres
out, scale = Path({str(out)!r}), {scale}
with throwaway_postgres(find_postgres_bin(None), None, "postgres") as pg:
    def run(*argv, stdout=subprocess.DEVNULL):
        subprocess.run(argv, env={{**pg.env, "PGCONNECT_TIMEOUT": "10"}}, check=True,
                       stdout=stdout, stderr=subprocess.DEVNULL if "pgbench" in argv[0] else None)
    def sql(db, text):
        run(pg.bin("psql"), "-q", "-v", "ON_ERROR_STOP=1", "-d", pg.conninfo(db), "-c", text)
    for name in ("a", "b"):
        run(pg.bin("createdb"), "-h", str(pg.socket_dir), "-p", str(pg.port), "-U",
            "postgres", name)
        run(pg.bin("pgbench"), "-i", "-q", "-s", str(scale), pg.conninfo(name))
    sql("b", {B_FILLER!r})
    sql("b", "VACUUM ANALYZE pgbench_accounts")
    for day in (1, 2):
        if day == 2:
            for name in ("a", "b"):
                sql(name, {UPDATE!r})
        for name in ("a", "b"):
            with open(out / f"{{name.upper()}}-day{{day}}.dump", "wb") as f:
                run(pg.bin("pg_dump"), "-Fc", "-Z0", "-d", pg.conninfo(name), stdout=f)
"""
        log(f"dumps: pgbench scale {scale}, two datasets, two days (a minute or two)")
        subprocess.run([python, "-c", script], check=True)
    return {d: (out / f"{d}-day1.dump", out / f"{d}-day2.dump") for d in DATASETS}


class Tool:
    def __init__(self, name: str, rundir: Path, runner: Runner, dataset: str) -> None:
        self.name, self.runner, self.dataset = name, runner, dataset
        self.dir = rundir / f"{name}-{dataset}"
        self.current = self.dir / "current.dump"  # a symlink to the day's dump

    def day(self, dump: Path) -> None:
        self.current.unlink(missing_ok=True)
        self.current.symlink_to(dump)

    def step(self, label: str, argv: list[str], env: dict[str, str] | None = None) -> StepResult:
        result = self.runner.run(f"{self.dir.name}-{label}", argv, env)
        if not result.ok:
            raise SystemExit(f"{self.dir.name} {label} failed: {result.stderr_tail}")
        return result

    def out(self, label: str) -> str:
        return (self.runner.logdir / f"{self.dir.name}-{label}.out").read_text()


class PortalOps(Tool):
    def __init__(self, rundir: Path, runner: Runner, dataset: str, args: Any) -> None:
        super().__init__("portal-ops", rundir, runner, dataset)
        self.python, self.ops = args.ops_python, args.ops

    def _cmd(self, *args: str) -> list[str]:
        return [self.python, str(self.ops), "--config", str(self.dir / "ops.yaml"), *args]

    def setup(self) -> None:
        self.dir.mkdir(parents=True)
        q = json.dumps
        (self.dir / "ops.yaml").write_text(
            f"state_dir: {q(str(self.dir / 'state'))}\n"
            "backup:\n"
            f"  writer_key: {q(str(self.dir / 'writer.key'))}\n"
            f"  identity: {q(str(self.dir / 'id.txt'))}\n"
            f"  repositories: [{{name: local, url: {q(str(self.dir / 'repo'))}}}]\n"
            f"  sources: [{{name: db, kind: command, category: database, timeout: 3600, "
            f"filename: db.dump, command: [cat, {q(str(self.current))}]}}]\n"
        )
        for label, argv in [
            ("keygen", self._cmd("backup", "keygen", "--identity", str(self.dir / "id.txt"),
                                 "--writer-key", str(self.dir / "writer.key"))),
            ("init", self._cmd("backup", "init")),
        ]:  # fmt: skip
            result = self.runner.run(f"{self.dir.name}-{label}", argv, timed=False)
            if not result.ok:
                raise SystemExit(f"{self.dir.name} {label} failed: {result.stderr_tail}")

    def backup(self, label: str) -> tuple[StepResult, int]:
        result = self.step(label, self._cmd("--json", "backup", "run"))
        [one] = json.loads(self.out(label))["results"]
        return result, int(one["bytes_added"])

    def restore(self, label: str) -> StepResult:
        argv = self._cmd("backup", "dump", "latest", "db.dump", "--source", "db")
        return self.step(label, argv)


class Restic(Tool):
    def __init__(self, rundir: Path, runner: Runner, dataset: str, args: Any) -> None:
        super().__init__("restic", rundir, runner, dataset)
        self.binary = args.restic_bin
        self.env = {"RESTIC_PASSWORD": BENCH_PASSWORD, "RESTIC_REPOSITORY": str(self.dir / "r")}

    def _cmd(self, *args: str) -> list[str]:
        return [self.binary, "--cache-dir", str(self.dir / "cache"), *args]

    def setup(self) -> None:
        self.dir.mkdir(parents=True)
        result = self.runner.run(f"{self.dir.name}-init", self._cmd("init"), self.env, timed=False)
        if not result.ok:
            raise SystemExit(f"{self.dir.name} init failed: {result.stderr_tail}")

    def backup(self, label: str) -> tuple[StepResult, int]:
        argv = ["sh", "-c", 'exec "$@" < "$0"', str(self.current),
                *self._cmd("backup", "--stdin", "--stdin-filename", "db.dump")]  # fmt: skip
        result = self.step(label, argv, self.env)
        found = RESTIC_ADDED.search(self.out(label))
        if found is None:
            raise SystemExit(f"{self.dir.name} {label}: no 'Added to the repository' line")
        return result, round(float(found.group(3)) * UNITS[found.group(4)])

    def restore(self, label: str) -> StepResult:
        return self.step(label, self._cmd("dump", "latest", "/db.dump"), self.env)


def one_round(
    index: int, args: argparse.Namespace, work: Path, dumps: dict[str, tuple[Path, Path]]
) -> dict[str, dict[str, dict[str, Any]]]:  # dataset -> tool -> figures
    rundir = work / f"run-{index}"
    shutil.rmtree(rundir, ignore_errors=True)
    runner = Runner(rundir / "logs", args.timeout, CacheDropper(not args.no_drop_caches))
    figures: dict[str, dict[str, dict[str, Any]]] = {}
    for dataset in DATASETS:
        tools: list[PortalOps | Restic] = [
            PortalOps(rundir, runner, dataset, args),
            Restic(rundir, runner, dataset, args),
        ]
        if index % 2 == 0:
            tools.reverse()
        for tool in tools:
            tool.setup()
            got: dict[str, Any] = {"dump_bytes": dumps[dataset][0].stat().st_size}
            for day, dump in enumerate(dumps[dataset], start=1):
                tool.day(dump)
                backup, stored = tool.backup(f"day{day}")
                restore = tool.restore(f"restore{day}")
                (runner.logdir / f"{tool.dir.name}-restore{day}.out").unlink()
                got[f"day{day}"] = {
                    "stored_added": stored,
                    "backup_seconds": backup.seconds,
                    "backup_cpu_seconds": backup.cpu_seconds,
                    "restore_seconds": restore.seconds,
                }
            figures.setdefault(dataset, {})[tool.name] = got
            log(
                f"[round {index}] {dataset} {tool.name}: day 2 stored "
                f"{got['day2']['stored_added'] / 1e6:.2f} MB of a "
                f"{got['dump_bytes'] / 1e6:.0f} MB dump; restore day 1 "
                f"{got['day1']['restore_seconds']} s, day 2 {got['day2']['restore_seconds']} s"
            )
        shutil.rmtree(rundir / f"portal-ops-{dataset}", ignore_errors=True)
        shutil.rmtree(rundir / f"restic-{dataset}", ignore_errors=True)
    return figures


def report(rounds: list[dict[str, dict[str, dict[str, Any]]]]) -> tuple[str, dict[str, Any], bool]:
    lines = [
        f"{'set':<4} {'tool':<11} {'dump MB':>8} {'day1 MB':>9} {'day2 MB':>9} {'day2 %':>7}"
        f" {'backup2 s':>10} {'restore1 s':>11} {'restore2 s':>11} {'r2/r1':>6}"
    ]
    summary: dict[str, Any] = {}
    ok = True
    for dataset in DATASETS:
        for tool in TOOLS:
            runs = [r[dataset][tool] for r in rounds]
            dump = runs[0]["dump_bytes"]
            day1 = statistics.median(x["day1"]["stored_added"] for x in runs)
            day2 = statistics.median(x["day2"]["stored_added"] for x in runs)
            backup2 = statistics.median(x["day2"]["backup_seconds"] for x in runs)
            r1 = statistics.median(x["day1"]["restore_seconds"] for x in runs)
            r2 = statistics.median(x["day2"]["restore_seconds"] for x in runs)
            ratio = statistics.median(
                x["day2"]["restore_seconds"] / x["day1"]["restore_seconds"] for x in runs
            )
            share = day2 / dump
            summary.setdefault(dataset, {})[tool] = {
                "dump_bytes": dump, "day1_stored_added": day1, "day2_stored_added": day2,
                "day2_share_of_dump": round(share, 5), "day2_share_of_day1": round(day2 / day1, 4),
                "day2_backup_seconds": backup2, "restore_day1_seconds": r1,
                "restore_day2_seconds": r2, "restore_day2_over_day1": round(ratio, 3),
            }  # fmt: skip
            lines.append(
                f"{dataset:<4} {tool:<11} {dump / 1e6:>8.0f} {day1 / 1e6:>9.2f} {day2 / 1e6:>9.2f}"
                f" {share * 100:>6.2f}% {backup2:>10.2f} {r1:>11.2f} {r2:>11.2f} {ratio:>6.2f}"
            )
            if tool == "portal-ops":
                met = share <= BAR_ADDED and ratio <= BAR_RESTORE
                ok = ok and met
                summary[dataset]["bar_met"] = met
    lines.append(
        f"bar (portal-ops): day 2 stored <= {BAR_ADDED:.0%} of the dump, and day-2 restore <= "
        f"{BAR_RESTORE}x day-1's: {'PASS' if ok else 'FAIL'}"
    )
    return "\n".join(lines), summary, ok


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=int, default=30, help="pgbench scale (default 30: ~300 MB)")
    p.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to FILE")
    p.add_argument("--workdir", type=Path, help="default: a new directory under /var/tmp")
    p.add_argument("--keep", action="store_true", help="keep the workdir (and its dumps)")
    p.add_argument("--timeout", type=float, default=1800, help="per command, seconds")
    p.add_argument("--no-drop-caches", action="store_true")
    p.add_argument("--restic", default="restic")
    p.add_argument("--ops-python", default=str(DEFAULT_OPS_PYTHON))
    p.add_argument("--ops", type=Path, default=DEFAULT_OPS)
    args = p.parse_args(argv)
    if args.repeat < 1 or args.scale < 1:
        p.error("--repeat and --scale must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.restic_bin = shutil.which(args.restic)
    if args.restic_bin is None:
        log(f"dumps_vs_restic: restic not found ({args.restic!r}); apt-get install restic")
        return 3
    work = prepare_workdir(args)
    started = time.time()
    try:
        dumps = make_dumps(work, args.scale, args.ops_python)
        rounds = [one_round(i, args, work, dumps) for i in range(1, args.repeat + 1)]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text, summary, ok = report(rounds)
    header = (
        f"portal-ops {git_revision()} vs {tool_version([args.restic_bin, 'version'])}; "
        f"pgbench scale {args.scale}; {args.repeat} round(s); {time.time() - started:.0f} s"
    )
    print(header + "\n" + text)
    if args.json:
        doc = {"header": header, "machine": machine_info(), "figures": summary, "rounds": rounds}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
