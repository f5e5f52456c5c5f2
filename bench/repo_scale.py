"""The repository at a year of daily backups for 200 portals: build one, then time the
commands that read all of it (see bench/README.md, "Repository at scale").

    bench/repo_scale [--days 365] [--portals 200] [--json FILE] [--read-data PCT]

The repository is built through the project's own repository API (``Repository``,
``BlobWriter``, ``Tree``, ``Snapshot``), one ``BlobWriter`` per source per day exactly as
``ops backup run`` does (so one index object, one data pack and one tree pack per backup),
with two shortcuts that change no byte of any object: objects are written without fsync (a
``LocalStorage`` whose ``put`` skips it), and each snapshot object's mtime is set to its
stated time, so retention, which goes by the storage's time, sees a year and not a minute.

The shape, per portal (``--portals``), per day (``--days``):

- source ``pNNN-web`` (code, ``/srv/www/pNNN``): ``code/`` of 40 files (2 KiB, compressible)
  of which 4 change every 30 days (a release), ``config.php`` changing every 90 days, and
  ``uploads/YYYY-MM/`` gaining 2 new files a day (3 KiB, incompressible, like images);
- source ``pNNN-db`` (database, ``/var/backups/pNNN.sql``): a dump of 24 blobs (4 KiB of SQL
  text each) of which 3 change every day (new rows at the end, a sessions table, a counter).

That is 2 sources x 365 days x 200 portals = 146,000 snapshots, and per portal-day 5 new
data blobs and 5-7 new tree blobs (each changed directory up to the root): about 0.8 M blobs
over the year. Content is small (the chunker's 1 MiB average would make a 24-blob dump
24 MiB): blob and object counts are a real year's, bytes are not.

Then it measures, each command under bench/measure_child.py (wall, CPU and peak memory of
the whole process tree): ``ops backup list``, ``ops backup check``, ``ops backup check
--read-data PCT`` and ``ops backup forget --prune --dry-run`` (retention and prune
planning: every tree of every snapshot read to learn the used blobs). ``ops backup check``
must pass: the bench exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
sys.path.insert(0, str(PROJECT))

from portalops.backup.repo.keys import load_writer_key  # noqa: E402
from portalops.backup.repo.pack import BlobType  # noqa: E402
from portalops.backup.repo.repository import Repository  # noqa: E402
from portalops.backup.repo.snapshot import Snapshot  # noqa: E402
from portalops.backup.repo.storage import LocalStorage  # noqa: E402
from portalops.backup.repo.tree import Node, NodeType, Tree  # noqa: E402
from portalops.backup.repo.writer import BlobWriter  # noqa: E402

CODE_FILES = 40
RELEASE_EVERY_DAYS = 30
RELEASE_CHANGES = 4
CONFIG_EVERY_DAYS = 90
UPLOADS_PER_DAY = 2
DUMP_BLOBS = 24
DUMP_CHANGES = 3
#: the day the year ends (its last backup), fixed so two runs build the same shape
LAST_DAY = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)


class NoSyncStorage(LocalStorage):
    """LocalStorage without fsync: the same files, written as fast as the disk takes them.
    A benchmark's scratch repository needs no crash safety."""

    made: set[str] = set()  # directories known to exist

    def put(self, key: str, data: bytes) -> None:
        directory, _, name = key.rpartition("/")
        parent = os.path.join(self.root, directory)
        if directory not in self.made:
            os.makedirs(parent, exist_ok=True)
            self.made.add(directory)
        tmp = os.path.join(parent, f".tmp-{os.getpid()}.part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(parent, name))


def _corpus(seed: int = 7, size: int = 1 << 20) -> bytes:
    """1 MiB of SQL-like text that slices of :func:`_text` come from (made once: drawing
    words one by one for every blob would dominate the generation)."""
    rng = random.Random(seed)  # noqa: S311 - test data
    words = [b"INSERT", b"INTO", b"tin_tuc", b"VALUES", "'Ủy ban'".encode(), b"NULL", b"2026",
             "xã".encode(), "phường".encode(), b"(1,", b"'2026-11-30'),"]  # fmt: skip
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" "
        if rng.random() < 0.05:
            out += str(rng.randrange(10**6)).encode() + b"\n"
    return bytes(out[:size])


_CORPUS = _corpus()


def _text(rng: random.Random, size: int, tag: str) -> bytes:
    """Compressible, SQL- or PHP-like text, unique by ``tag``: a slice of the corpus."""
    head = tag.encode()
    start = rng.randrange(len(_CORPUS) - size)
    return head + _CORPUS[start : start + size - len(head)]


@dataclass
class PortalState:
    """What one portal's sources hold today: the content of each file (its blob ids)."""

    number: int
    code: dict[str, bytes] = field(default_factory=dict)  # name -> blob id
    code_tree: bytes | None = None
    config: bytes = b""
    months: dict[str, dict[str, tuple[bytes, int]]] = field(default_factory=dict)
    month_trees: dict[str, bytes] = field(default_factory=dict)
    dump: list[bytes] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"p{self.number:03d}"


class _Inline:
    """An executor that runs each job at once on the caller's thread: a bench backup of a few
    small blobs would otherwise spend most of its time handing two packs to the seal thread
    and waiting for it (thread start-up and wake-ups on a loaded machine)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True) -> None:
        pass


def blob_writer(repo: Repository) -> BlobWriter:
    """The project's BlobWriter (same packs, index objects, order), sealing inline."""
    writer = BlobWriter(repo)
    [copy] = writer.copies
    copy.pool.shutdown()  # no thread started yet
    writer._compress_pool.shutdown()
    copy.pool = writer._compress_pool = _Inline()  # type: ignore[assignment]
    return writer


def _file(name: str, blobs: tuple[bytes, ...], size: int, mtime: int) -> Node:
    return Node(name.encode(), NodeType.FILE, 0o644, 33, 33, mtime, size, blobs)


def _dir(name: str, subtree: bytes, mtime: int) -> Node:
    return Node(name.encode(), NodeType.DIR, 0o755, 33, 33, mtime, subtree=subtree)


def _path_trees(writer: BlobWriter, parts: list[str], leaf: bytes, mtime: int) -> bytes:
    """The root tree for a source path ``/a/b/c`` whose last directory is tree ``leaf``."""
    tree = leaf
    for name in reversed(parts):
        tree = writer.add_tree(Tree([_dir(name, tree, mtime)]), name)
    return tree


class Generator:
    def __init__(self, repo: Repository, portals: int, days: int, seed: int = 1) -> None:
        self.repo, self.days = repo, days
        self.rng = random.Random(seed)  # noqa: S311 - test data
        self.portals = [PortalState(n) for n in range(1, portals + 1)]
        self.snapshots = self.blobs = self.packs = 0
        self.stored_bytes = 0

    def _count(self, writer: BlobWriter) -> None:
        self.blobs += writer.blobs_added
        self.packs += writer.packs_written
        self.stored_bytes += writer.bytes_added

    def _snapshot(self, source: str, category: str, when: datetime, root: bytes,
                  paths: list[str], writer: BlobWriter, files: int, size: int) -> None:  # fmt: skip
        snapshot = Snapshot(
            source=source, category=category, host=f"web{zlib.crc32(source.encode()) % 8 + 1}",
            time=when, tree=root, paths=paths, tool="portal-ops bench/repo_scale",
            summary={"files": files, "dirs": 0, "bytes": size,
                     "bytes_added": writer.bytes_added, "raw_bytes_added": writer.raw_bytes_added,
                     "blobs_added": writer.blobs_added},
        )  # fmt: skip
        ref = self.repo.write_snapshot(snapshot)
        stamp = when.timestamp()
        os.utime(self.repo.storage.root / ref.key, (stamp, stamp))  # type: ignore[attr-defined]
        self.snapshots += 1

    def web(self, p: PortalState, day: int, when: datetime) -> None:
        writer = blob_writer(self.repo)
        mtime = int(when.timestamp()) * 10**9
        rng = self.rng
        if not p.code or day % RELEASE_EVERY_DAYS == 0:
            names = [f"mod{i:02d}.php" for i in range(CODE_FILES)]
            changed = names if not p.code else rng.sample(names, RELEASE_CHANGES)
            for name in changed:
                data = _text(rng, 2048, f"<?php // {p.name} {name} release {day}\n")
                p.code[name] = writer.add(BlobType.DATA, data)
            nodes = [_file(n, (b,), 2048, mtime) for n, b in sorted(p.code.items())]
            p.code_tree = writer.add_tree(Tree(nodes), "code")
        if not p.config or day % CONFIG_EVERY_DAYS == 0:
            p.config = writer.add(BlobType.DATA, _text(rng, 1024, f"<?php $db='{p.name}' {day}"))
        month = when.strftime("%Y-%m")
        files = p.months.setdefault(month, {})
        for i in range(UPLOADS_PER_DAY):
            blob = writer.add(BlobType.DATA, rng.randbytes(3072))
            files[f"{when:%d}-{i}.jpg"] = (blob, 3072)
        p.month_trees[month] = writer.add_tree(
            Tree([_file(n, (b,), s, mtime) for n, (b, s) in files.items()]), month
        )
        uploads = writer.add_tree(
            Tree([_dir(m, t, mtime) for m, t in p.month_trees.items()]), "uploads"
        )
        if p.code_tree is None:
            raise RuntimeError("the code tree is written on day 0")
        site = writer.add_tree(
            Tree([
                _dir("code", p.code_tree, mtime),
                _dir("uploads", uploads, mtime),
                _file("config.php", (p.config,), 1024, mtime),
            ]),
            p.name,
        )  # fmt: skip
        root = _path_trees(writer, ["srv", "www", p.name], site, mtime)
        writer.finish()
        self._count(writer)
        count = CODE_FILES + 1 + sum(len(f) for f in p.months.values())
        self._snapshot(f"{p.name}-web", "code", when, root, [f"/srv/www/{p.name}"], writer,
                       count, count * 2500)  # fmt: skip

    def db(self, p: PortalState, day: int, when: datetime) -> None:
        writer = blob_writer(self.repo)
        mtime = int(when.timestamp()) * 10**9
        rng = self.rng
        if not p.dump:
            changed = list(range(DUMP_BLOBS))
            p.dump = [b""] * DUMP_BLOBS
        else:
            changed = [*rng.sample(range(DUMP_BLOBS - 1), DUMP_CHANGES - 1), DUMP_BLOBS - 1]
        for i in changed:
            p.dump[i] = writer.add(
                BlobType.DATA, _text(rng, 4096, f"-- {p.name} dump part {i} day {day}\n")
            )
        leaf = writer.add_tree(
            Tree([_file(f"{p.name}.sql", tuple(p.dump), 4096 * DUMP_BLOBS, mtime)]), "backups"
        )
        root = _path_trees(writer, ["var", "backups"], leaf, mtime)
        writer.finish()
        self._count(writer)
        self._snapshot(f"{p.name}-db", "database", when, root, [f"/var/backups/{p.name}.sql"],
                       writer, 1, 4096 * DUMP_BLOBS)  # fmt: skip

    def run(self, progress: bool = True, share: tuple[int, int] = (0, 1)) -> None:
        """Every day of the portals of ``share`` (index, count): portal i when i % count is
        index, so that ``count`` processes can build one repository together."""
        first = LAST_DAY - timedelta(days=self.days - 1)
        started = time.monotonic()
        mine = [p for p in self.portals if p.number % share[1] == share[0]]
        for day in range(self.days):
            for p in mine:
                when = first + timedelta(days=day, seconds=p.number * 7)
                self.web(p, day, when)
                self.db(p, day, when + timedelta(seconds=3))
            if progress and (day % 10 == 0 or day == self.days - 1):
                print(
                    f"  day {day + 1}/{self.days}: {self.snapshots} snapshots, {self.blobs} "
                    f"blobs, {self.packs} packs, {time.monotonic() - started:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )


def generate(repo: Repository, portals: int, days: int, jobs: int) -> dict[str, int]:
    """Build the repository in ``jobs`` forked processes, each a share of the portals (one
    repository, as several hosts backing up into it at once); the counts added up."""
    children: list[tuple[int, Path]] = []
    for index in range(jobs):
        out = repo.storage.root.parent / f"generated-{index}.json"  # type: ignore[attr-defined]
        pid = os.fork()
        if pid == 0:  # the child: its share, its counts to a file, and out
            code = 1
            try:
                generator = Generator(repo, portals, days, seed=index + 1)
                generator.run(progress=index == 0, share=(index, jobs))
                out.write_text(json.dumps({
                    "snapshots": generator.snapshots, "blobs": generator.blobs,
                    "packs": generator.packs, "stored_blob_bytes": generator.stored_bytes,
                }))  # fmt: skip
                code = 0
            finally:
                os._exit(code)
        children.append((pid, out))
    totals: dict[str, int] = {}
    for pid, out in children:
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"repo_scale: a generating process failed ({status})")
        for key, value in json.loads(out.read_text()).items():
            totals[key] = totals.get(key, 0) + value
    return totals


# --------------------------------------------------------------------------- measuring


def _ops(config: Path, *args: str) -> list[str]:
    return [sys.executable, str(PROJECT / "ops.py"), "--config", str(config), "backup", *args]


def measure(name: str, argv: list[str], workdir: Path) -> dict[str, Any]:
    """Run ``argv`` under measure_child.py (stdout to a file); its figures, plus the exit
    code and the last lines of output."""
    out_json = workdir / f"{name}.measure.json"
    out_text = workdir / f"{name}.out"
    with out_text.open("wb") as out:
        subprocess.run(
            [sys.executable, "-I", "-S", str(HERE / "measure_child.py"), str(out_json), *argv],
            stdout=out, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
    figures: dict[str, Any] = json.loads(out_json.read_text())
    figures.pop("samples", None)
    lines = out_text.read_text(errors="replace").splitlines()
    figures["tail"] = lines[-3:]
    return figures


def du(path: Path) -> tuple[int, int]:
    """(objects, bytes) under ``path``."""
    count = size = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            count += 1
            size += os.stat(os.path.join(dirpath, name)).st_size
    return count, size


def setup(workdir: Path) -> tuple[Path, Path]:
    """A fresh repository and the ops.yaml naming it (keys made by ``ops backup keygen``,
    the repository by ``ops backup init``)."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    repo = workdir / "repo"
    config = workdir / "ops.yaml"
    q = json.dumps
    config.write_text(
        f"state_dir: {q(str(workdir / 'state'))}\n"
        "backup:\n"
        f"  writer_key: {q(str(workdir / 'writer.key'))}\n"
        f"  identity: {q(str(workdir / 'identity.txt'))}\n"
        "  retention: {last: 3, daily: 14, weekly: 8, monthly: 12, yearly: 3}\n"
        f"  repositories: [{{name: scale, url: {q(str(repo))}}}]\n"
    )
    for args in (
        ["keygen", "--identity", str(workdir / "identity.txt"),
         "--writer-key", str(workdir / "writer.key")],
        ["init"],
    ):  # fmt: skip
        subprocess.run(_ops(config, *args), check=True, stdout=subprocess.DEVNULL)
    return config, repo


def _mib(kib: float) -> str:
    return f"{kib / 1024:.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--portals", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/h6/repo-scale"))  # noqa: S108
    parser.add_argument("--read-data", type=float, default=1.0, metavar="PCT",
                        help="check --read-data PCT (0: skip)")  # fmt: skip
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["list", "list-table", "check", "read-data", "prune-plan"],
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="measure the repository a previous run left in --workdir",
    )
    parser.add_argument("--timeout", type=float, default=330, metavar="S",
                        help="stop a measured command after S seconds (exit 124)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=2, help="generating processes")
    parser.add_argument("--json", type=Path, metavar="FILE")
    parser.add_argument("--keep", action="store_true", help="leave the repository behind")
    args = parser.parse_args(argv)

    workdir: Path = args.workdir
    report: dict[str, Any] = {"days": args.days, "portals": args.portals}
    if args.reuse:
        config, repo_dir = workdir / "ops.yaml", workdir / "repo"
        report.update(json.loads((workdir / "generated.json").read_text()))
    else:
        config, repo_dir = setup(workdir)
        writer = load_writer_key(workdir / "writer.key")
        repo = Repository.open(NoSyncStorage("scale", repo_dir), writer, None)
        before = time.monotonic()
        counts = generate(repo, args.portals, args.days, args.jobs)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        generated = {
            "generate_seconds": round(time.monotonic() - before, 1),
            "generate_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "generate_max_rss_kib": usage.ru_maxrss,
            "generate_jobs": args.jobs,
            **counts,
        }
        (workdir / "generated.json").write_text(json.dumps(generated))
        report.update(generated)
    for part in ("index", "packs", "snapshots"):
        objects, size = du(repo_dir / part)
        report[f"{part}_objects"], report[f"{part}_bytes"] = objects, size
    limit = ["timeout", f"{args.timeout:g}"]  # a bench-lock slot is 6 minutes
    commands = {
        "list": [*limit, *_ops(config, "list", "--json")],
        "list-table": [*limit, *_ops(config, "list", "--source", "p001-web")],
        "check": [*limit, *_ops(config, "check")],
        "read-data": [*limit, *_ops(config, "check", "--read-data", f"{args.read_data:g}")],
        "prune-plan": [*limit, *_ops(config, "forget", "--prune", "--dry-run")],
    }
    if not args.read_data:
        args.skip.append("read-data")
    failed = False
    for name, command in commands.items():
        if name in args.skip:
            continue
        print(f"  measuring {name} ...", file=sys.stderr, flush=True)
        report[name] = figures = measure(name, command, workdir)
        if figures["exit_code"] != 0:
            failed = failed or figures["exit_code"] != 124  # a timeout is a figure
            print(f"  {name} exited {figures['exit_code']}: {figures['tail']}", file=sys.stderr)

    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


def table(r: dict[str, Any]) -> str:
    rows = [
        ("shape", f"{r['portals']} portals x 2 sources x {r['days']} days"),
        ("generation", f"{r.get('generate_seconds', 0):.0f} s "
                       f"({r.get('generate_cpu_seconds', 0):.0f} s CPU, "
                       f"{_mib(r.get('generate_max_rss_kib', 0))})"),
        ("snapshots", f"{r['snapshots_objects']:,} objects, "
                      f"{r['snapshots_bytes'] / 2**20:.1f} MiB"),
        ("blobs", f"{r.get('blobs', 0):,} "
                  f"({r.get('stored_blob_bytes', 0) / 2**20:.0f} MiB stored)"),
        ("index", f"{r['index_objects']:,} objects, {r['index_bytes'] / 2**20:.1f} MiB"),
        ("packs", f"{r['packs_objects']:,} objects, {r['packs_bytes'] / 2**20:.0f} MiB"),
    ]  # fmt: skip
    for name, label in (("list", "ops backup list --json"),
                        ("list-table", f"list --source ({r['days']} rows)"),
                        ("check", "ops backup check"),
                        ("read-data", "check --read-data (sample)"),
                        ("prune-plan", "forget --prune --dry-run")):  # fmt: skip
        m = r.get(name)
        if m:
            rows.append((label, f"{m['seconds']:.1f} s wall, {m['cpu_seconds']:.1f} s CPU, "
                         f"peak {_mib(m['max_rss_kib'])}, exit {m['exit_code']}"))  # fmt: skip
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


if __name__ == "__main__":
    sys.exit(main())
