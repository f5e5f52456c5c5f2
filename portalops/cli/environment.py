"""What a command may touch of the world around it: two text streams, whether they are
terminals (or the journal), the clock, the environment variables and where the system-wide
config lives.

The CLI reads these from here and never from ``sys`` or ``datetime.now`` directly, so a test
can run ``main(argv, env)`` in its own process with ``StringIO`` streams and a fixed clock,
and a real run (``Environment.from_process()``) behaves exactly as before.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO


def utc_now() -> datetime:
    """The real clock, timezone-aware in UTC."""
    return datetime.now(UTC)


def _rich_sees_a_terminal(stream: TextIO) -> bool:
    """As rich judges it (isatty, and the FORCE_COLOR / TTY_COMPATIBLE overrides), so that
    passing the answer back to rich explicitly changes nothing for a real run.

    Rich can only say yes for TTY_COMPATIBLE=1, a non-empty FORCE_COLOR or a terminal: with
    none of them (a pipe, cron, the journal) the answer is no without importing rich."""
    environ = os.environ
    if environ.get("TTY_COMPATIBLE") != "1" and not environ.get("FORCE_COLOR"):
        try:
            if not stream.isatty():
                return False
        except ValueError:  # closed: rich says no too
            return False
    from rich.console import Console

    return Console(file=stream).is_terminal


# Where the agent role installs the config of a managed host; found without --config.
SYSTEM_CONFIG = Path("/etc/portal-ops/ops.yaml")


def stream_is_journal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether ``stream`` is connected to the journal: systemd sets JOURNAL_STREAM to the
    "device:inode" of the stream it gives a service (systemd.exec(5)); a child whose stderr
    was redirected elsewhere inherits the variable, so the descriptor itself must match."""
    device, colon, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not (colon and device.isdigit() and inode.isdigit()):
        return False
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError):  # no descriptor (StringIO: io.UnsupportedOperation), closed
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


@dataclass(frozen=True)
class Environment:
    """The streams, terminal flags, clock and variables one CLI invocation runs with."""

    stdout: TextIO
    stderr: TextIO
    stdout_is_tty: bool = False  # tables for a person (wrapped, coloured) vs one line per row
    stderr_is_tty: bool = False  # progress bars only when someone watches
    clock: Callable[[], datetime] = utc_now
    environ: Mapping[str, str] = field(default_factory=dict)
    # Logs without timestamps, with <N> priorities; INFO by default (a unit's job or service).
    stderr_is_journal: bool = False
    # The system-wide config, looked for after --config and $PORTAL_OPS_CONFIG (SYSTEM_CONFIG
    # in a real run); None: there is none, as for a test, which must not pick up the one a
    # provisioning test installed on this machine.
    system_config: Path | None = None

    @classmethod
    def from_process(cls) -> Environment:
        """The real process: sys.stdout/stderr, the system clock, os.environ."""
        return cls(
            stdout=sys.stdout,
            stderr=sys.stderr,
            stdout_is_tty=_rich_sees_a_terminal(sys.stdout),
            stderr_is_tty=sys.stderr.isatty(),
            clock=utc_now,
            environ=os.environ,
            stderr_is_journal=stream_is_journal(sys.stderr, os.environ),
            system_config=SYSTEM_CONFIG,
        )

    def now(self) -> datetime:
        """The current time, timezone-aware; a naive clock is a bug in whoever built us."""
        moment = self.clock()
        if moment.tzinfo is None:
            raise ValueError("Environment.clock must return a timezone-aware datetime")
        return moment
