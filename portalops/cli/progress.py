"""Progress bars on the Environment's stderr for long work, shown only when that is a terminal
(cron mail and pipes get nothing but errors). Rich is imported only then: for a job under
cron or systemd it is some 0.03 s of start-up for nothing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from portalops.cli.environment import Environment

if TYPE_CHECKING:
    from rich.progress import TaskID

Callback = Callable[[int, int], None]  # (items done, bytes done)


@contextmanager
def progress_bars(
    env: Environment, enabled: bool | None = None
) -> Iterator[Callable[[str], Callback | None]]:
    """Yields a factory: ``factory(label)`` gives a callback for one task, or None when off."""
    if enabled is None:
        enabled = env.stderr_is_tty
    if not enabled:
        yield lambda _label: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(bar_width=None),
        TextColumn("{task.fields[items]} files"),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    console = Console(file=env.stderr, _environ=env.environ)
    with Progress(*columns, console=console, transient=True) as bars:

        def factory(label: str) -> Callback:
            task: TaskID = bars.add_task(label, total=None, items=0)
            last = [0.0]

            def update(items: int, done: int) -> None:
                now = time.monotonic()
                if now - last[0] >= 0.1:  # redrawing per small file would cost more than it
                    last[0] = now
                    bars.update(task, completed=done, items=items)

            return update

        yield factory
