"""Where drill results go: a JSON report with history in the state directory, and metrics
for node_exporter's textfile collector (``portalops_drill_*``)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from portalops.backup.jobs.drill import DrillResult
from portalops.core.atomic import write_atomic
from portalops.core.metricsfile import write_textfile
from portalops.core.timefmt import iso_z, parse_iso_z

HISTORY_KEEP = 400  # about a year of daily drills


def _key(doc: dict[str, Any]) -> str:
    return f"{doc['source']}\0{doc['repository']}"


def write_report(state_dir: Path, results: list[DrillResult], now: datetime) -> dict[str, Any]:
    """Update ``drills/latest.json`` (last run and last success per source and repository)
    and append to ``drills/history.jsonl``; returns the new latest state."""
    directory = state_dir / "drills"
    directory.mkdir(parents=True, exist_ok=True)
    latest_path = directory / "latest.json"
    try:
        state: dict[str, Any] = json.loads(latest_path.read_text())
    except (OSError, ValueError):
        state = {"sources": {}}
    entries: dict[str, Any] = {_key(e): e for e in state.get("sources", {}).values()}
    stamp = iso_z(now)
    for result in results:
        doc = json.loads(json.dumps(result.to_json(), default=_iso))
        key = _key(doc)
        previous = entries.get(key, {})
        entries[key] = {
            "source": result.source,
            "category": result.category,
            "repository": result.repository,
            "last_run": stamp,
            "last_run_ok": result.ok,
            "last_success": stamp if result.ok else previous.get("last_success"),
            "restore_seconds": doc["restore_seconds"],
            "result": doc,
        }
    state = {"updated": stamp, "sources": {k.replace("\0", "@"): v for k, v in entries.items()}}
    write_atomic(latest_path, json.dumps(state, indent=2, ensure_ascii=False).encode())
    with (directory / "history.jsonl").open("a", encoding="utf-8") as history:
        for result in results:
            record = {"time": stamp, **result.to_json()}
            history.write(json.dumps(record, ensure_ascii=False, default=_iso) + "\n")
    _trim(directory / "history.jsonl")
    return state


def write_metrics(textfile_dir: Path, state: dict[str, Any], rto_seconds: float) -> Path:
    """``portalops_drill_*`` for node_exporter; the objective is a series of its own, so the
    RestoreObjectiveExceeded rule compares two metrics instead of repeating drill.rto_seconds."""
    registry = CollectorRegistry()
    labels = ["source", "category", "repository"]
    last_success = Gauge(
        "portalops_drill_last_success_timestamp_seconds",
        "When the last successful restore drill of this source finished.",
        labels,
        registry=registry,
    )
    last_ok = Gauge(
        "portalops_drill_last_run_success",
        "1 if the last restore drill of this source passed, else 0.",
        labels,
        registry=registry,
    )
    seconds = Gauge(
        "portalops_drill_restore_seconds",
        "How long the last drill took to restore this source (the Art. 19.3 restore time).",
        labels,
        registry=registry,
    )
    Gauge(
        "portalops_drill_restore_objective_seconds",
        "The restore-time objective the drills are held to (drill.rto_seconds, Art. 19.3).",
        registry=registry,
    ).set(rto_seconds)
    for entry in state["sources"].values():
        values = (entry["source"], entry["category"], entry["repository"])
        last_ok.labels(*values).set(1 if entry["last_run_ok"] else 0)
        seconds.labels(*values).set(entry["restore_seconds"])
        if entry.get("last_success"):
            when = parse_iso_z(entry["last_success"])
            last_success.labels(*values).set(when.timestamp())
    return write_textfile(textfile_dir / "portal_ops_drill.prom", registry)


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return iso_z(value)
    raise TypeError(type(value).__name__)


def _trim(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if len(lines) > HISTORY_KEEP * 4:
        write_atomic(path, "".join(lines[-HISTORY_KEEP * 2 :]).encode())
