"""Two ``ops monitor serve`` processes split 10,000 targets (``monitor.shard: 0/2`` and
``1/2``) exactly as a real Prometheus' ``hashmod`` relabelling splits the same file_sd
between two /probe jobs: what Prometheus keeps for shard i is what exporter i sweeps, the
shards are disjoint and cover every target (docs/monitoring.md, "Sharding").

The targets are plain-HTTP URLs on 10,000 distinct loopback addresses (127.1.x.y) at a port
nothing listens on: each probe is one refused connection, so the sweep costs little, and each
target has a host of its own to hash. The interval is long, so each target is probed once.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.monitoring_stack import Prometheus, ops_monitor_serve, running_prometheus
from tests.fixtures.procs import free_port, temp_dir, wait_until

pytestmark = pytest.mark.integration

TARGETS = 10_000
SHARDS = 2


def _urls(port: int) -> list[str]:
    """10,000 URLs, each on a loopback address of its own, all at ``port`` (closed)."""
    return [f"http://127.1.{i // 250}.{i % 250 + 1}:{port}/" for i in range(TARGETS)]


def relabelling(index: int, count: int, exporter: str) -> list[dict[str, Any]]:
    """The /probe job's relabel_configs for shard ``index`` of ``count``, as
    docs/monitoring.md gives them: the target's host, lower case, hashed; keep this shard's;
    then the blackbox pattern (target as the ``target`` parameter and instance, the exporter
    as the address)."""
    return [
        {"source_labels": ["__address__"], "regex": "(?:[a-zA-Z][a-zA-Z0-9+.-]*://)?([^/:?#]+).*",
         "target_label": "__tmp_shard_key", "replacement": "$1"},
        {"source_labels": ["__tmp_shard_key"], "target_label": "__tmp_shard_key",
         "action": "lowercase"},
        {"source_labels": ["__tmp_shard_key"], "target_label": "__tmp_hash",
         "modulus": count, "action": "hashmod"},
        {"source_labels": ["__tmp_hash"], "regex": str(index), "action": "keep"},
        {"source_labels": ["__address__"], "target_label": "__param_target"},
        {"source_labels": ["__param_target"], "target_label": "instance"},
        {"target_label": "__address__", "replacement": exporter},
    ]  # fmt: skip


def get(url: str, timeout: float = 30) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@contextmanager
def exporter(root: Path, urls: list[str], shard: str) -> Iterator[str]:
    """``ops monitor serve`` sweeping shard ``shard`` of ``urls``; yields its base URL."""
    root.mkdir()
    config = root / "ops.yaml"
    monitor = {
        "estate": False,
        "urls": urls,
        "modules": ["http"],
        "interval": 3600,
        "timeout": 3,
        "concurrency": 200,
        "shard": shard,
    }
    doc = {"state_dir": str(root / "state"), "monitor": monitor}
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    what = f"ops monitor serve (shard {shard}) answers /healthz"
    with ops_monitor_serve(config, timeout=60, what=what) as (base, log):
        yield base
    text = log.read_text()
    assert f"(shard {shard} of {TARGETS})" in text, text


def swept(base: str) -> set[str]:
    """The hosts of the targets the exporter has probed (``probe_success{domain}``)."""
    status, text = get(f"{base}/metrics")
    assert status == 200, text[:300]
    return {
        s.labels["domain"]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "probe_success"
    }


def kept(prometheus: Prometheus, job: str) -> set[str]:
    """The hosts of the targets Prometheus keeps in ``job`` after relabelling."""
    return {
        str(urlsplit(t["labels"]["instance"]).hostname)
        for t in prometheus.targets()
        if t["scrapePool"] == job
    }


def test_two_exporters_sweep_what_prometheus_hashmod_sends_them(tmp_path: Path) -> None:
    urls = _urls(free_port())
    every = {str(urlsplit(u).hostname) for u in urls}
    with ExitStack() as stack:
        bases = [
            stack.enter_context(exporter(tmp_path / f"shard{i}", urls, f"{i}/{SHARDS}"))
            for i in range(SHARDS)
        ]
        sd = stack.enter_context(temp_dir("file-sd")) / "probe.json"
        sd.write_text(json.dumps([{"targets": urls}]), encoding="utf-8")
        jobs: dict[str, list[str]] = {f"probe-{i}": [] for i in range(SHARDS)}
        options = {
            f"probe-{i}": {
                "metrics_path": "/probe",
                # scraped once an hour: the test reads the targets, not the scrapes
                "scrape_interval": "1h",
                "file_sd_configs": [{"files": [str(sd)]}],
                "relabel_configs": relabelling(i, SHARDS, bases[i].removeprefix("http://")),
            }
            for i in range(SHARDS)
        }
        prometheus = stack.enter_context(running_prometheus(scrape=jobs, job_options=options))
        wait_until(
            lambda: len(prometheus.targets()) == TARGETS,
            timeout=60,
            what=f"Prometheus keeps {TARGETS} targets over {SHARDS} jobs",
            log=prometheus.log,
            interval=0.5,
        )
        shares = [kept(prometheus, f"probe-{i}") for i in range(SHARDS)]
        assert set().union(*shares) == every
        assert sum(len(s) for s in shares) == TARGETS  # disjoint
        assert all(len(s) > TARGETS / SHARDS * 0.9 for s in shares), [len(s) for s in shares]
        for base, share in zip(bases, shares, strict=True):
            seen: set[str] = set()

            def caught_up(base: str = base, share: set[str] = share) -> bool:
                nonlocal seen
                seen = swept(base)
                return len(seen) >= len(share)

            wait_until(caught_up, timeout=90, what=f"{base} probed its share", interval=1.0)
            assert seen == share, (len(seen - share), len(share - seen))
