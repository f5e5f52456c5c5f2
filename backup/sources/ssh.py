"""``kind: ssh``: a command's output on a remote host or network device, over SSH.

Art. 11.2 asks for daily backups of the configuration of network and security devices; a core
switch's running config or a firewall appliance's export is one command away over SSH. The
host key must already be pinned in the source's own ``known_hosts`` file: an unknown or
changed key fails the source and is never accepted automatically (a backup job that trusts
whatever answers would hand the device's password hashes and ACLs to anyone on the path).

Authentication is by key only: one dedicated, unencrypted private key (mode 0600) per backup
host, restricted on the device side to a read-only account (or, on a Linux host, to one
command with ``restrict,command="..."`` in authorized_keys). Passphrases are not supported:
nobody is there at 02:00 to type one.

The command runs through an SSH ``exec`` channel (what ``ssh host 'command'`` does), without a
pseudo-terminal, so stdout and stderr stay apart and no ``\\r\\n`` is added. Many network
devices implement exec channels poorly or not at all (some print a banner and close, some
need ``terminal length 0`` first in an interactive shell). Interactive-shell devices are out of
scope for now: on those, use a device feature that exposes the config to an exec command,
or export it to an SFTP/SCP target and back that up as files.

The connection itself is in :mod:`portalops.backup.sources.ssh_exec`, imported when a source
runs: a host without ssh sources never loads paramiko.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from portalops.backup.sources.base import Category, Name
from portalops.core.validate import Strict

if TYPE_CHECKING:
    from portalops.backup.archive.streams import Sink
    from portalops.backup.config import Drill

KIND = "ssh"


class SshSource(Strict):
    """A command's output on a remote host or network device, over SSH with a pinned key."""

    name: Name
    """The source's name in snapshots, commands and metrics (``ops backup run --source``)."""
    kind: Literal["ssh"]
    """``ssh``: a command's output on a remote host or device, over SSH."""
    category: Category = Category.CONFIG
    """What the data is under Art. 11.2: config, logs, code or database."""
    host: str
    """The device's or host's address or name."""
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    """The SSH port."""
    user: str
    """The (read-only) account to log in as."""
    key: Path
    """The unencrypted private key to log in with (mode 0600; no passphrase)."""
    known_hosts: Path
    """A known_hosts file that must list the host's key: an unknown or changed key fails the
    source, never accepted automatically."""
    command: str
    """The command run over an SSH exec channel, e.g. ``show running-config``."""
    filename: str | None = None
    """The file name of the output in the snapshot (unset: ``<name>.txt``)."""
    timeout: Annotated[float, Field(gt=0)] = 600
    """Seconds the connection and command may take before the source fails."""
    allow_empty: bool = False
    """Accept an empty output (by default it fails the source)."""


def describe(source: SshSource) -> str:
    return f"ssh:{source.user}@{source.host}:{source.port} {source.command}"


def produce(source: SshSource, sink: Sink) -> dict[str, Any]:
    """Run ``source.command`` on the host and store its stdout as ``filename``
    (default ``<name>.txt``); fail on an unpinned host key, a non-zero exit status, a
    timeout, or no output (unless ``allow_empty``)."""
    from portalops.backup.sources import ssh_exec  # noqa: PLC0415 - paramiko loads only here

    return ssh_exec.produce(source, sink)


def drill(source: SshSource, drill_config: Drill) -> None:
    """No database step: the restored output is checked byte for byte like any file."""
