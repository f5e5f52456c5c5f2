"""``kind: command``: a local command's standard output, stored as one file.

Art. 11.2 asks for the configuration of security devices and operating systems; much of it
exists only as command output: ``nft list ruleset``, ``iptables-save``,
``dpkg --get-selections``, ``crontab -l``. The argv runs without a shell, stdout is streamed
into the snapshot, and a non-zero exit, a timeout or an empty output fails the source.
"""

from __future__ import annotations

from typing import Any

from portalops.backup.archive.streams import Sink, stream_command
from portalops.backup.config import CommandSource

_LABEL_MAX = 60  # characters of the command line quoted in error messages


def produce(source: CommandSource, sink: Sink) -> dict[str, Any]:
    """Run ``source.command`` and store its stdout as ``filename`` (default ``<name>.txt``)."""
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


def _label(argv: list[str]) -> str:
    # for reading, not for pasting into a shell: shlex.join would bury it in quote escapes
    line = " ".join(argv)
    if len(line) > _LABEL_MAX:
        line = line[: _LABEL_MAX - 1] + "…"
    return f'"{line}"'
