"""The one writer of node_exporter textfile-collector files (``*.prom``).

The file is replaced atomically and durably (temp file beside it, fsync, rename) with mode
0644, whatever the umask, so node_exporter, running as its own user, can read it. A file that
cannot be written is an :class:`MetricsWriteError` (exit code 3) naming the file and the
setting that chose its directory, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import ALLOWUTF8
from prometheus_client.registry import Collector

from portalops.core.atomic import write_atomic
from portalops.core.errors import OpsError


class MetricsWriteError(OpsError):
    """cannot write the metrics file {}: {} (metrics.textfile_dir in {})"""


def write_textfile(path: Path, registry: Collector, where: str = "the config") -> Path:
    """Render ``registry`` in the text exposition format into ``path``; ``where`` names the
    config file for the error message. Returns ``path``."""
    data = generate_latest(registry, ALLOWUTF8)
    try:
        write_atomic(path, data, 0o644)
    except OSError as exc:
        raise MetricsWriteError(path, exc.strerror or str(exc), where) from None
    return path
