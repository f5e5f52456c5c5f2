"""Run a command; write the wall time, CPU and peak memory of its WHOLE process tree as JSON.

    python3 -I -S bench/measure_child.py OUT.json COMMAND [ARG]...

Why a tree: portal-ops' restore and check hand work to forkserver worker processes; the main
process does not wait for them the way ``wait4`` accounting needs, so its ``ru_maxrss`` and
``RUSAGE_CHILDREN`` miss them. Two ways to count every process the command starts:

- **cgroup v1** (preferred; needs write access to the ``cpuacct`` and ``memory``
  hierarchies, i.e. root): a child cgroup per command in each, created under this launcher's
  own cgroup; the forked child moves itself into both before it execs, so everything it starts
  is inside. CPU = ``cpuacct.usage`` once the cgroup is empty (every descendant counted, waited
  for or not).
- **subreaper** (fallback): ``PR_SET_CHILD_SUBREAPER`` makes orphaned descendants our
  children; we reap every one, so ``RUSAGE_CHILDREN`` covers them all.

Peak memory: ``memory.max_usage_in_bytes`` counts page cache (a backup reading 1.5 GB would
"use" 1.5 GB), so instead we sample, every ``SAMPLE_S``, the sum of PSS (``smaps_rollup``) of
every process in the tree; PSS splits pages shared by the forkserver's workers between them
instead of counting them once per worker. The reported peak is the larger of the sampled
sum and the largest single process's ``ru_maxrss`` (which catches a spike between samples).
The cgroup's ``total_rss`` (anonymous memory only) is sampled too, for the JSON.

Why a separate process rather than ``os.wait4`` on the benchmark's own child: Linux records the
high-water RSS of the *old* address space when a process calls exec, so the ``ru_maxrss`` of a
direct child of a big Python process is at least the parent's own peak. From this small
launcher the floor is its ~10 MB instead.

Exits with the command's exit code (128 + N if it was killed by signal N; 127 if it could not
be started). Descendants still alive 30 s after the command exits are killed (and noted).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import sys
import time

SAMPLE_S = 0.05
LINGER_S = 30.0
CGROUP_ROOT = "/sys/fs/cgroup"
PR_SET_CHILD_SUBREAPER = 36


def _own_cgroup(controller: str) -> str:
    """This process's path in a v1 hierarchy (``/`` when unknown)."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, ctrls, path = line.rstrip("\n").split(":", 2)
                if controller in ctrls.split(","):
                    return path
    except OSError:
        pass
    return "/"


def make_cgroups() -> dict[str, str] | None:
    """A fresh child cgroup in cpuacct and memory, or None if cgroup v1 is not writable."""
    name = f"pobench-{os.getpid()}-{time.monotonic_ns()}"
    made: dict[str, str] = {}
    for ctrl in ("cpuacct", "memory"):
        base = os.path.join(CGROUP_ROOT, ctrl)
        path = os.path.normpath(base + _own_cgroup(ctrl) + "/" + name)
        try:
            os.mkdir(path)
        except OSError:
            remove_cgroups(made)
            return None
        made[ctrl] = path
    return made


def remove_cgroups(groups: dict[str, str]) -> None:
    for path in groups.values():
        with contextlib.suppress(OSError):
            os.rmdir(path)


def cleanup_cgroups(launcher_pid: int) -> None:
    """Kill what is left in the cgroups of a launcher that was itself killed, and remove them.

    For the benchmark, after it SIGKILLs a timed-out launcher: the launcher's cgroups (made
    under the caller's own cgroup, which the launcher inherited) would otherwise stay behind.
    """
    for ctrl in ("cpuacct", "memory"):
        base = os.path.normpath(os.path.join(CGROUP_ROOT, ctrl) + _own_cgroup(ctrl))
        try:
            names = [n for n in os.listdir(base) if n.startswith(f"pobench-{launcher_pid}-")]
        except OSError:
            continue
        for name in names:
            path = os.path.join(base, name)
            for _ in range(100):  # up to ~2 s for the killed processes to go
                pids = _procs(path)
                if not pids:
                    break
                for p in pids:
                    with contextlib.suppress(OSError):
                        os.kill(p, signal.SIGKILL)
                time.sleep(0.02)
            with contextlib.suppress(OSError):
                os.rmdir(path)


def _procs(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _descendants(root: int) -> list[int]:
    """Every process whose parent chain reaches ``root`` (for the subreaper fallback)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
                parent[int(entry)] = int(stat[stat.rfind(b")") + 2 :].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out = []
    for pid in parent:
        p, hops = pid, 0
        while p in parent and p != root and hops < 64:
            p, hops = parent[p], hops + 1
        if p == root and pid != root:
            out.append(pid)
    return out


def _pss_kib(pid: int) -> int:
    """PSS of one process (RSS if smaps_rollup is unreadable); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        return 0


def _cg_total_rss(path: str) -> int:
    try:
        with open(os.path.join(path, "memory.stat")) as f:
            for line in f:
                if line.startswith("total_rss "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _read_int(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _cpuacct_split(path: str) -> tuple[float, float]:
    """(user, system) seconds from cpuacct.stat (USER_HZ ticks)."""
    hz = os.sysconf("SC_CLK_TCK")
    vals = {"user": 0, "system": 0}
    try:
        with open(os.path.join(path, "cpuacct.stat")) as f:
            for line in f:
                k, v = line.split()
                vals[k] = int(v)
    except (OSError, ValueError):
        pass
    return vals["user"] / hz, vals["system"] / hz


def _spawn(command: list[str], groups: dict[str, str] | None) -> int:
    """Fork; the child joins the cgroups (if any) before it execs, so all it starts is inside."""
    pid = os.fork()
    if pid == 0:
        try:
            for path in (groups or {}).values():
                with open(os.path.join(path, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
            os.execvp(command[0], command)  # noqa: S606 - the command to measure, by design
        except OSError as exc:
            print(f"measure_child: cannot run {command[0]}: {exc}", file=sys.stderr)
        os._exit(127)
    return pid


class Watch:
    """Samples the tree's memory until the command has exited and its whole tree is gone."""

    def __init__(self, pid: int, groups: dict[str, str] | None) -> None:
        self.pid = pid
        self.groups = groups
        self.peak_pss = self.peak_anon = self.samples = 0
        self.status: int | None = None
        self.usage: resource.struct_rusage | None = None
        self.ended = 0.0

    def tree(self) -> list[int]:
        if self.groups is not None:
            return _procs(self.groups["memory"])
        return _descendants(os.getpid())  # orphans are re-parented to us (subreaper)

    def sample(self, pids: list[int]) -> None:
        if pids:
            self.peak_pss = max(self.peak_pss, sum(_pss_kib(p) for p in pids))
            self.samples += 1
        if self.groups is not None:
            self.peak_anon = max(self.peak_anon, _cg_total_rss(self.groups["memory"]))

    def reap(self) -> None:
        """Reap the command and (subreaper) any orphaned descendant handed to us."""
        for _ in range(10_000):
            try:
                got, st, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if got == 0:
                return
            if got == self.pid:
                self.status, self.usage, self.ended = st, usage, time.monotonic()

    def run(self) -> None:
        while True:
            pids = self.tree()
            if self.status is not None and not pids:
                return
            self.sample(pids)
            self.reap()
            if self.status is not None and pids and time.monotonic() - self.ended > LINGER_S:
                for p in pids:
                    with contextlib.suppress(OSError):
                        os.kill(p, signal.SIGKILL)
            if self.status is None or pids:
                time.sleep(SAMPLE_S)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: measure_child.py OUT.json COMMAND [ARG]...", file=sys.stderr)
        return 2
    out, command = argv[0], argv[1:]
    groups = None if os.environ.get("POBENCH_NO_CGROUP") else make_cgroups()
    if groups is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    start = time.monotonic()
    try:
        pid = _spawn(command, groups)
    except OSError as exc:
        print(f"measure_child: cannot fork: {exc}", file=sys.stderr)
        return 127
    watch = Watch(pid, groups)
    watch.run()
    tree_end = time.monotonic()
    if watch.status is None or watch.usage is None:  # cannot happen: run() waits for it
        return 127
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    if groups is not None:
        cpu = _read_int(os.path.join(groups["cpuacct"], "cpuacct.usage")) / 1e9
        user, system = _cpuacct_split(groups["cpuacct"])
        mode = "cgroup-v1"
        remove_cgroups(groups)
    else:
        user, system = children.ru_utime, children.ru_stime
        cpu = user + system
        mode = "subreaper"
    code = os.waitstatus_to_exitcode(watch.status)
    with open(out, "w") as f:
        json.dump(
            {
                "exit_code": code,
                "mode": mode,
                "seconds": watch.ended - start,
                "tree_seconds": tree_end - start,
                "cpu_seconds": cpu,
                "user_seconds": user,
                "system_seconds": system,
                "main_user_seconds": watch.usage.ru_utime,
                "main_system_seconds": watch.usage.ru_stime,
                "main_max_rss_kib": watch.usage.ru_maxrss,
                "max_single_rss_kib": children.ru_maxrss,
                "peak_tree_pss_kib": watch.peak_pss,
                "peak_cgroup_anon_kib": watch.peak_anon // 1024,
                "max_rss_kib": max(watch.peak_pss, children.ru_maxrss),
                "samples": watch.samples,
            },
            f,
        )
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
