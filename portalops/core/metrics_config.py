"""The ``metrics`` section of ops.yaml, on its own: the jobs that write metrics files read it
without importing every other section's models (``Context.metrics_settings``)."""

from __future__ import annotations

from pathlib import Path

from portalops.core.validate import Strict


class Metrics(Strict):
    """Where the jobs leave their Prometheus metrics for node_exporter."""

    textfile_dir: Path | None = None
    """node_exporter's textfile collector directory: backups, checks and drills write their
    ``portalops_*`` metrics there as ``*.prom`` files (unset: no metrics files)."""
