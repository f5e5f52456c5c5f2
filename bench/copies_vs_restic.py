#!/usr/bin/env python3
"""Backing up into a local and an offsite (S3) repository at once, against local alone.

``ops backup run`` reads each source once and feeds every repository (docs/backup.md, "One
read, every repository"). The bar (issue 18): the day-1 and day-2 backups into local + S3 take
at most 1.3x the time of the same backup into local alone, median of the per-round ratios.
restic has no such mode: its figure is two ``restic backup`` runs (local, then S3), whose times
add up, beside its own local-alone time, in the same run on the same corpus.

The S3 side is a moto server on 127.0.0.1 started by this benchmark (a new one each round, so
its memory holds one round's objects); moto keeps objects in memory and shares the machine's
cores with the tool, so it is the slower, noisier half of either tool's offsite figure. The
page cache is dropped before every timed command, as in ``backup_vs_restic``, whose corpus,
runner and workdir rules this reuses.

Exit codes: 0 bar met; 1 bar not met or a step failed; 2 bad arguments; 3 cannot run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import corpus
from backup_vs_restic import (
    BENCH_PASSWORD,
    DEFAULT_OPS,
    DEFAULT_OPS_PYTHON,
    CacheDropper,
    Runner,
    StepResult,
    get_corpus,
    link_copy,
    prepare_workdir,
)
from benchlib import git_revision, killpg, log, machine_info, tool_version

BAR = 1.3  # local + S3 over local alone, each day, portal-ops
REGION = "ap-southeast-1"
ACCESS_KEY = "bench-access-key"  # moto accepts any; nothing real
SECRET_KEY = "bench-secret-key"  # noqa: S105 - a dummy for the local moto server
DAYS = ("day1", "day2")
SCENARIOS = ("portal-ops local", "portal-ops local+S3", "restic local", "restic local+S3")


@contextmanager
def moto_server(python: str, logdir: Path) -> Iterator[str]:
    """A moto S3 server on a free loopback port; yields its endpoint."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(logdir / "moto.log", "wb") as out:
        proc = subprocess.Popen(
            [python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"{endpoint}/moto-api/"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"moto server did not start; see {logdir / 'moto.log'}")
            time.sleep(0.2)
        yield endpoint
    finally:
        killpg(proc.pid)
        proc.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback http
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def s3_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RESTIC_"))}
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    return env


def make_bucket(python: str, endpoint: str, bucket: str) -> None:
    code = (
        "import boto3,sys; boto3.client('s3', endpoint_url=sys.argv[1], region_name=sys.argv[3])"
        ".create_bucket(Bucket=sys.argv[2], "
        "CreateBucketConfiguration={'LocationConstraint': sys.argv[3]})"
    )
    subprocess.run([python, "-c", code, endpoint, bucket, REGION], env=s3_env(), check=True)


class Scenario:
    """One tool writing to one or two repositories, on its own keys, state and repositories."""

    def __init__(self, name: str, rundir: Path, runner: Runner) -> None:
        self.name = name
        self.dir = rundir / name.replace(" ", "-").replace("+", "-")
        self.runner = runner

    def setup(self) -> StepResult:
        raise NotImplementedError

    def backup(self, day: str) -> StepResult:
        raise NotImplementedError


class PortalOps(Scenario):
    def __init__(
        self, name: str, rundir: Path, runner: Runner, args: argparse.Namespace, offsite: str | None
    ) -> None:
        super().__init__(name, rundir, runner)
        self.python, self.ops, self.corpus_dir = args.ops_python, args.ops, args.corpus_dir
        self.offsite = offsite  # "ENDPOINT BUCKET" or None

    def _cmd(self, *args: str) -> list[str]:
        return [self.python, str(self.ops), "--config", str(self.dir / "ops.yaml"), *args]

    def setup(self) -> StepResult:
        self.dir.mkdir(parents=True)
        q = json.dumps
        repos = [f"{{name: local, url: {q(str(self.dir / 'repo'))}}}"]
        if self.offsite:
            endpoint, bucket = self.offsite.split()
            repos.append(
                f"{{name: offsite, url: {q(f's3://{bucket}/p')}, endpoint: {q(endpoint)}}}"
            )
        (self.dir / "ops.yaml").write_text(
            f"state_dir: {q(str(self.dir / 'state'))}\n"
            "backup:\n"
            f"  writer_key: {q(str(self.dir / 'writer.key'))}\n"
            f"  repositories: [{', '.join(repos)}]\n"
            "  sources: [{name: corpus, kind: files, category: code, "
            f"paths: [{q(str(self.corpus_dir))}]}}]\n"
        )
        for label, argv in [
            ("keygen", self._cmd("backup", "keygen", "--identity", str(self.dir / "id.txt"),
                                 "--writer-key", str(self.dir / "writer.key"))),
            ("init", self._cmd("backup", "init")),
        ]:  # fmt: skip
            result = self.runner.run(f"{self.dir.name}-{label}", argv, s3_env(), timed=False)
            if not result.ok:
                return result
        return result

    def backup(self, day: str) -> StepResult:
        return self.runner.run(f"{self.dir.name}-{day}", self._cmd("backup", "run"), s3_env())


class Restic(Scenario):
    def __init__(
        self, name: str, rundir: Path, runner: Runner, args: argparse.Namespace, offsite: str | None
    ) -> None:
        super().__init__(name, rundir, runner)
        self.binary, self.corpus_dir = args.restic_bin, args.corpus_dir
        self.repos = [str(self.dir / "repo")]
        if offsite:
            endpoint, bucket = offsite.split()
            self.repos.append(f"s3:{endpoint}/{bucket}/p")

    def _run(self, label: str, repo: str, *args: str, timed: bool = True) -> StepResult:
        env = {**s3_env(), "RESTIC_PASSWORD": BENCH_PASSWORD, "RESTIC_REPOSITORY": repo}
        argv = [self.binary, "--cache-dir", str(self.dir / "cache"), *args]
        return self.runner.run(f"{self.dir.name}-{label}", argv, env, timed=timed)

    def setup(self) -> StepResult:
        self.dir.mkdir(parents=True)
        result = StepResult("ok")
        for i, repo in enumerate(self.repos):
            result = self._run(f"init{i}", repo, "init", timed=False)
            if not result.ok:
                return result
        return result

    def backup(self, day: str) -> StepResult:
        """One ``restic backup`` per repository, times and CPU added up."""
        total = StepResult("ok", seconds=0.0, cpu_seconds=0.0, max_rss_mib=0.0)
        for i, repo in enumerate(self.repos):
            one = self._run(f"{day}-{i}", repo, "backup", str(self.corpus_dir))
            if not one.ok:
                return one
            total.seconds = round((total.seconds or 0) + (one.seconds or 0), 3)
            total.cpu_seconds = round((total.cpu_seconds or 0) + (one.cpu_seconds or 0), 3)
            total.max_rss_mib = max(total.max_rss_mib or 0, one.max_rss_mib or 0)
        return total


def one_round(
    index: int, args: argparse.Namespace, work: Path, day1: Path, cache: CacheDropper
) -> dict[str, dict[str, StepResult]]:  # scenario -> day -> result
    rundir = work / f"run-{index}"
    shutil.rmtree(rundir, ignore_errors=True)
    shutil.rmtree(args.corpus_dir, ignore_errors=True)
    link_copy(day1, args.corpus_dir)
    runner = Runner(rundir / "logs", args.timeout, cache)
    results: dict[str, dict[str, StepResult]] = {name: {} for name in SCENARIOS}
    with moto_server(args.ops_python, rundir / "logs") as endpoint:
        make_bucket(args.ops_python, endpoint, "portal-ops")
        make_bucket(args.ops_python, endpoint, "restic")
        scenarios: list[Scenario] = [
            PortalOps(SCENARIOS[0], rundir, runner, args, None),
            PortalOps(SCENARIOS[1], rundir, runner, args, f"{endpoint} portal-ops"),
            Restic(SCENARIOS[2], rundir, runner, args, None),
            Restic(SCENARIOS[3], rundir, runner, args, f"{endpoint} restic"),
        ]
        if index % 2 == 0:  # alternate who goes first
            scenarios.reverse()
        for scenario in scenarios:
            setup = scenario.setup()
            if not setup.ok:
                raise SystemExit(f"{scenario.name}: setup failed: {setup.stderr_tail}")
        for day in DAYS:
            if day == "day2":
                corpus.next_day_profile(args.corpus_dir, "portal", args.seed, 2)
            for scenario in scenarios:
                result = scenario.backup(day)
                results[scenario.name][day] = result
                log(
                    f"[round {index}] {day} {scenario.name}: {result.status} "
                    f"{result.seconds} s, {result.cpu_seconds} s CPU, {result.max_rss_mib} MiB"
                )
    return results


Rounds = list[dict[str, dict[str, StepResult]]]  # per round: scenario -> day -> result


def ratios(rounds: Rounds, num: str, den: str, day: str) -> list[float]:
    out = []
    for r in rounds:
        a, b = r[num].get(day), r[den].get(day)
        if a and b and a.ok and b.ok and a.seconds and b.seconds:
            out.append(a.seconds / b.seconds)
    return out


def report(rounds: Rounds) -> tuple[str, dict[str, Any], bool]:
    lines = [
        f"{'day':<6} {'scenario':<22} {'median s':>9} {'CPU s':>8} {'peak MiB':>9}",
    ]
    figures: dict[str, Any] = {}
    for day in DAYS:
        for name in SCENARIOS:
            done = [r[name][day] for r in rounds if r[name].get(day) and r[name][day].ok]
            if not done:
                lines.append(f"{day:<6} {name:<22} {'FAILED':>9}")
                continue
            secs = statistics.median(s.seconds or 0 for s in done)
            cpu = statistics.median(s.cpu_seconds or 0 for s in done)
            peak = max(s.max_rss_mib or 0 for s in done)
            figures.setdefault(day, {})[name] = {
                "seconds": [s.seconds for s in done], "median_seconds": round(secs, 3),
                "median_cpu_seconds": round(cpu, 3), "peak_rss_mib": peak,
            }  # fmt: skip
            lines.append(f"{day:<6} {name:<22} {secs:>9.2f} {cpu:>8.2f} {peak:>9.0f}")
    lines.append("")
    ok = True
    for day in DAYS:
        po = ratios(rounds, SCENARIOS[1], SCENARIOS[0], day)
        rs = ratios(rounds, SCENARIOS[3], SCENARIOS[2], day)
        vs = ratios(rounds, SCENARIOS[1], SCENARIOS[3], day)
        po_med = statistics.median(po) if po else None
        met = po_med is not None and po_med <= BAR
        ok = ok and met
        figures.setdefault("ratios", {})[day] = {
            "portal-ops local+S3 / local": [round(x, 3) for x in po],
            "restic local+S3 / local": [round(x, 3) for x in rs],
            "portal-ops local+S3 / restic local+S3": [round(x, 3) for x in vs],
        }
        shown = f"{po_med:.2f}" if po_med is not None else "n/a"
        restic = f"{statistics.median(rs):.2f}" if rs else "n/a"
        lines.append(
            f"{day}: portal-ops local+S3 / local = {shown} (bar <= {BAR}) "
            f"{'PASS' if met else 'FAIL'}; restic local+S3 / local = {restic}"
        )
        if vs:
            lines.append(
                f"      portal-ops local+S3 / restic local+S3 = {statistics.median(vs):.2f}"
            )
    return "\n".join(lines), figures, ok


# Run in a fresh interpreter (imports count): what the S3 half of a backup pays apart from
# the bytes of its packs. Prints one JSON object of wall and CPU seconds per step.
S3_COSTS = """
import json, os, sys, time
marks = [(time.perf_counter(), time.process_time())]
def mark():
    marks.append((time.perf_counter(), time.process_time()))
from portalops.backup.repo.s3 import S3Storage
mark()
storage = S3Storage("bench", f"s3://{sys.argv[2]}/costs", endpoint=sys.argv[1], region=sys.argv[3])
mark()
storage.put("first", b"x")
mark()
for i in range(10):
    storage.put(f"small/{i}", b"y" * 1000)
mark()
packs = [os.urandom(16 * 2**20) for _ in range(3)]
mark()
for i, pack in enumerate(packs):
    storage.put(f"packs/{i}", pack)
mark()
steps = ["import boto3 (via s3.py)", "make the client", "first PUT (connects)",
         "10 small PUTs", None, "3 packs of 16 MiB"]
out = {}
for step, (a, b) in zip(steps, zip(marks, marks[1:])):
    if step:
        out[step] = {"wall": round(b[0] - a[0], 3), "cpu": round(b[1] - a[1], 3)}
print(json.dumps(out))
"""


def s3_costs(args: argparse.Namespace) -> int:
    """``--s3-costs``: the fixed and per-request costs of the S3 client, median of 5 fresh
    processes against a moto server (warm page cache: what importing and talking cost, not
    reading .pyc files from disk)."""
    runs: list[dict[str, dict[str, float]]] = []
    with (
        tempfile.TemporaryDirectory(prefix="portalops-s3costs-") as tmp,
        moto_server(args.ops_python, Path(tmp)) as endpoint,
    ):
        make_bucket(args.ops_python, endpoint, "portal-ops-costs")
        env = {**s3_env(), "PYTHONPATH": str(DEFAULT_OPS.parent)}
        for _ in range(6):  # the first warms the page cache and is dropped
            argv = [args.ops_python, "-c", S3_COSTS, endpoint, "portal-ops-costs", REGION]
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout))
    runs = runs[1:]
    print(f"portal-ops {git_revision()}: S3 client costs against moto, median of {len(runs)}")
    print(f"{'step':<28} {'wall s':>8} {'CPU s':>8}")
    for step in runs[0]:
        wall = statistics.median(r[step]["wall"] for r in runs)
        cpu = statistics.median(r[step]["cpu"] for r in runs)
        print(f"{step:<28} {wall:>8.3f} {cpu:>8.3f}")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-gb", type=float, default=0.7, help="portal corpus size (default 0.7)")
    p.add_argument("--seed", type=int, default=corpus.DEFAULT_SEED)
    p.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to FILE")
    p.add_argument("--workdir", type=Path, help="default: a new directory under /var/tmp")
    p.add_argument("--keep", action="store_true", help="keep the workdir")
    p.add_argument("--timeout", type=float, default=1800, help="per command, seconds")
    p.add_argument("--no-drop-caches", action="store_true")
    p.add_argument("--restic", default="restic")
    p.add_argument("--ops-python", default=str(DEFAULT_OPS_PYTHON))
    p.add_argument("--ops", type=Path, default=DEFAULT_OPS)
    p.add_argument(
        "--s3-costs",
        action="store_true",
        help="only time the S3 client apart (import, client, small and pack PUTs) and exit",
    )
    args = p.parse_args(argv)
    if args.repeat < 1 or args.size_gb <= 0:
        p.error("--repeat must be >= 1 and --size-gb > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.s3_costs:
        return s3_costs(args)
    args.restic_bin = shutil.which(args.restic)
    if args.restic_bin is None:
        log(f"copies_vs_restic: restic not found ({args.restic!r}); apt-get install restic")
        return 3
    work = prepare_workdir(args)
    args.corpus_dir = work / "corpus"
    started = time.time()
    try:
        day1, meta, _ = get_corpus(work, args.size_gb, args.seed)
        cache = CacheDropper(not args.no_drop_caches)
        rounds = [one_round(i, args, work, day1, cache) for i in range(1, args.repeat + 1)]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text, figures, ok = report(rounds)
    header = (
        f"portal-ops {git_revision()} vs {tool_version([args.restic_bin, 'version'])}; "
        f"{meta['files']} files, {meta['bytes'] / 1e6:.0f} MB; {args.repeat} round(s); "
        f"page cache {cache.note}; {time.time() - started:.0f} s"
    )
    print(header + "\n" + text)
    if args.json:
        doc = {
            "header": header,
            "machine": machine_info(),
            "figures": figures,
            "rounds": [
                {k: {d: asdict(s) for d, s in v.items()} for k, v in r.items()} for r in rounds
            ],
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
