"""``kind: command``: a local command's standard output, stored as one file.

Art. 11.2 asks for the configuration of security devices and operating systems; much of it
exists only as command output: ``nft list ruleset``, ``iptables-save``,
``dpkg --get-selections``, ``crontab -l``. The argv runs without a shell, stdout is streamed
into the snapshot, and a non-zero exit, a timeout or an empty output fails the source.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from portalops.backup.sources.base import Category, Name
from portalops.core.validate import Strict

if TYPE_CHECKING:
    from portalops.backup.archive.streams import Sink
    from portalops.backup.config import Drill

KIND = "command"
_LABEL_MAX = 60  # characters of the command line quoted in error messages


class CommandSource(Strict):
    """A local command's standard output, stored as one file (e.g. nft list ruleset)."""

    name: Name
    """The source's name in snapshots, commands and metrics (``ops backup run --source``)."""
    kind: Literal["command"]
    """``command``: a local command's standard output."""
    category: Category = Category.CONFIG
    """What the data is under Art. 11.2: config, logs, code or database."""
    command: Annotated[list[str], Field(min_length=1)]
    """The argv, run without a shell: ``[nft, list, ruleset]``."""
    filename: str | None = None
    """The file name of the output in the snapshot (unset: ``<name>.txt``)."""
    timeout: Annotated[float, Field(gt=0)] = 600
    """Seconds the command may run before the source fails."""
    allow_empty: bool = False
    """Accept an empty output (by default it fails the source: usually a broken command)."""


def describe(source: CommandSource) -> str:
    return "command:" + " ".join(source.command)


def produce(source: CommandSource, sink: Sink) -> dict[str, Any]:
    """Run ``source.command`` and store its stdout as ``filename`` (default ``<name>.txt``)."""
    from portalops.backup.archive.streams import stream_command  # noqa: PLC0415 - loaded when used

    size = stream_command(
        sink,
        source.filename or f"{source.name}.txt",
        source.command,
        timeout=source.timeout,
        allow_empty=source.allow_empty,
        what=_label(source.command),
    )
    # stream_command raises on any other status: what got here exited 0
    return {"command": list(source.command), "bytes": size, "exit_code": 0}


def drill(source: CommandSource, drill_config: Drill) -> None:
    """No database step: the restored output is checked byte for byte like any file."""


def _label(argv: list[str]) -> str:
    # for reading, not for pasting into a shell: shlex.join would bury it in quote escapes
    line = " ".join(argv)
    if len(line) > _LABEL_MAX:
        line = line[: _LABEL_MAX - 1] + "…"
    return f'"{line}"'
