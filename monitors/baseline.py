"""Defacement baselines on disk: ``<state_dir>/monitor/baselines.json``, one per domain.

defacement.py judges a page against a Baseline and knows no files; this module keeps the
baselines between runs: ``ops monitor baseline`` takes them (refresh), every probe config
reads them (load). The file is one JSON object, domain -> Baseline.to_json(), sorted by
domain and indented, so that a change reads well in a diff; it is replaced atomically.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from portalops.core.atomic import write_atomic
from portalops.core.errors import BadInput
from portalops.monitors.defacement import Baseline
from portalops.monitors.probe import ProbeResult


def baselines_path(state_dir: Path) -> Path:
    """Where the baselines of a state directory live."""
    return state_dir / "monitor" / "baselines.json"


def load_baselines(state_dir: Path) -> dict[str, Baseline]:
    """The stored baselines by domain; none when no file was written yet. BadInput names the
    file when it cannot be read (the fix: take the baselines again)."""
    path = baselines_path(state_dir)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path}: cannot read the baselines ({exc}); take them again with "
                       "ops monitor baseline") from None  # fmt: skip
    return {domain: Baseline.from_json(item) for domain, item in doc.items()}


def save_baselines(state_dir: Path, baselines: dict[str, Baseline]) -> Path:
    """Write every baseline (atomically) and return the file's path."""
    path = baselines_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {domain: b.to_json() for domain, b in sorted(baselines.items())}
    write_atomic(path, json.dumps(doc, ensure_ascii=False, indent=1).encode())
    return path


@dataclass
class Refreshed:
    """What ``refresh`` did: the domains whose baseline was taken, those skipped and why."""

    file: Path
    taken: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def refresh(state_dir: Path, results: Iterable[ProbeResult], taken_at: str) -> Refreshed:
    """Take a new baseline from each successful probe's home page (taken_at: ISO 8601), keep
    the stored ones of every other domain, and write the file. A failed probe is skipped with
    its findings' messages (or its status) as the reason: a baseline of an error page would
    make the real page look defaced."""
    stored = load_baselines(state_dir)
    taken, skipped = [], []
    for r in results:
        if r.success and r.home_html:
            stored[r.target.domain] = Baseline.take(r.final_url, r.home_html, taken_at)
            taken.append(r.target.domain)
        else:
            reason = "; ".join(f.message for f in r.findings) or f"status {r.status_code}"
            skipped.append((r.target.domain, reason))
    return Refreshed(save_baselines(state_dir, stored), taken, skipped)
