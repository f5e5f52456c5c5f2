"""The portal-ops side of ``bench/probe_vs_blackbox``: one sweep, in a process of its own.

    python bench/probe_vs_blackbox_sweep.py --names FILE --port N --ca FILE --out OUT.json

Reads one host name a line from ``--names`` and sweeps ``https://<name>:<port>/`` with the
prober's Python API, exactly as ``ops monitor check --module http`` does (``monitors.exporter
.sweep`` over ``monitors.probe.probe``, HTTP module only, no ``http://`` hop), every name
pinned to 127.0.0.1 by the prober's own resolver override (``Resolver(["name:port:127.0.0.1",
...])``), on the event loop ``ops monitor`` uses (``exporter.run``: uvloop's when installed).
``--modules all`` runs every module instead, as ``ops monitor serve`` does by default (the TLS
offers, DNS, the exposure paths, the header grade in the analysis workers). The first
``--warmup`` names are swept once, untimed, so the timed sweep measures a running prober (as
``ops monitor serve`` is), not Python's lazy imports.

Writes OUT.json: the sweep's wall time and this process's CPU seconds (``getrusage(SELF)``,
every thread) over the timed sweep only, plus the analysis workers' (``/proc/<pid>/stat`` of
the live children, before and after: they outlive the sweep, so ``RUSAGE_CHILDREN`` would
miss them), the outcome counts and the peak RSS (VmHWM; the workers' apart). The
benchmark runs this script under ``bench/measure_child.py`` too, which adds the whole
process's figures (start-up and imports included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # the monitors package, when run as a plain script
    sys.path.insert(0, str(REPO_ROOT))

from portalops.monitors.catalogue import ALL_MODULES, Module  # noqa: E402
from portalops.monitors.exporter import run, sweep  # noqa: E402
from portalops.monitors.fetch import Limits, Resolver  # noqa: E402
from portalops.monitors.probe import ProbeConfig, ProbeResult, Target  # noqa: E402

LOOPBACK = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MODULE_SETS = {"http": (Module.HTTP,), "all": ALL_MODULES}


def targets_for(names: Sequence[str], port: int) -> list[Target]:
    return [
        Target(
            portal=name.split(".", 1)[0],
            unit_kind="commune",
            domain=name,
            url=f"https://{name}:{port}/",
            http_url=None,  # start at HTTPS: blackbox's http_2xx against an https:// URL
        )
        for name in names
    ]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children() -> list[int]:
    """This process's live children (the analysis workers), from every thread's list."""
    pids: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def children_cpu() -> dict[int, float]:
    """utime+stime of each live child, by pid."""
    cpu: dict[int, float] = {}
    for pid in children():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "(comm)": field 3 is fields[0]
        cpu[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return cpu


def vm_hwm_kib(pid: int | str = "self") -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def summarise(results: Sequence[ProbeResult]) -> dict[str, Any]:
    failures: Counter[str] = Counter()
    for r in results:
        if not r.success:
            first = r.findings[0] if r.findings else None
            if first is None:
                failures[f"status {r.status_code}"] += 1
            else:  # without the URL the message starts with, so that alike failures add up
                failures[f"{first.code}: {first.message.removeprefix(r.target.url + ': ')}"] += 1
    return {
        "probes": len(results),
        "successes": sum(r.success for r in results),
        "tls_versions": dict(Counter(r.tls.version if r.tls else "-" for r in results)),
        "tls_verified": sum(bool(r.tls and r.tls.verified) for r in results),
        "http_versions": dict(Counter(r.http_version or "-" for r in results)),
        "status_codes": dict(Counter(str(r.status_code) for r in results)),
        "body_bytes": dict(Counter(str(r.body_bytes) for r in results)),
        "failures": dict(failures.most_common(5)),
    }


async def sweep_names(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    config = ProbeConfig(
        resolver=Resolver([f"{name}:{args.port}:{LOOPBACK}" for name in names]),
        ca_file=str(args.ca),
        limits=Limits(timeout=args.probe_timeout),
        modules=MODULE_SETS[args.modules],
    )
    targets = targets_for(names, args.port)
    warm = await sweep(targets[: args.warmup], config, concurrency=args.concurrency)
    workers0 = children_cpu()
    cpu0, t0 = cpu_seconds(), time.monotonic()
    results = await sweep(targets, config, concurrency=args.concurrency)
    seconds, cpu = time.monotonic() - t0, cpu_seconds() - cpu0
    workers = children_cpu()
    return {
        "modules": [str(m) for m in config.modules],
        "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        "sweep_seconds": seconds,
        "sweep_cpu_seconds": cpu,
        # a worker started during the sweep counts from 0; one that died is not counted
        "workers_cpu_seconds": sum(c - workers0.get(pid, 0.0) for pid, c in workers.items()),
        "workers_vm_hwm_kib": sum(vm_hwm_kib(pid) or 0 for pid in workers),
        "warmup": {"probes": len(warm), "successes": sum(r.success for r in warm)},
        **summarise(results),
        "vm_hwm_kib": vm_hwm_kib(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="probe_vs_blackbox_sweep", description=__doc__)
    p.add_argument("--names", type=Path, required=True, help="host names, one a line")
    p.add_argument("--port", type=int, required=True, help="the HTTPS port on 127.0.0.1")
    p.add_argument("--ca", type=Path, required=True, help="the CA bundle to verify against")
    p.add_argument("--out", type=Path, required=True, help="where the figures go (JSON)")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--warmup", type=int, default=50, help="names swept once, untimed")
    p.add_argument("--probe-timeout", type=float, default=10.0)
    p.add_argument(
        "--modules", choices=sorted(MODULE_SETS), default="http", help="http only, or all"
    )
    args = p.parse_args(argv)
    names = [n for n in args.names.read_text().split() if n]
    figures = run(sweep_names(args, names))
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["successes"] == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
