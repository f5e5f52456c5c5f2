"""Database clients fed dumps that a backup host wrote: they send the SQL, and do nothing else.

A database snapshot holds whatever the portal server that wrote it chose to write, and that
server may be compromised. Loading a dump runs its SQL inside the database server it is loaded
into (that is what loading a dump means), but the *client* reading it must not run anything of
its own: psql and the mariadb client both have client-side commands (``\\! shell command``,
``\\o |program``, ``\\copy … to 'file'``, ``\\. file``, ``connect other-host``, ``\\e``) that run
as whoever runs the client, which on the admin host is root. So:

- psql starts in restricted mode with a random key the file cannot know (``-c '\\restrict
  KEY'`` before ``-f -``; psql 13.22, 14.19, 15.14, 16.10, 17.6 and later): it refuses every
  backslash command in the input. pg_dump's own ``\\restrict``/``\\unrestrict`` lines are
  refused too, harmlessly, and not reported. An older psql is refused rather than trusted.
- the mariadb client runs with ``--binary-mode`` (in piped input it parses no client command
  but ``delimiter`` and ``\\C``: the rest goes to the server as SQL, which rejects it),
  ``--sandbox`` (no command touching files, should one be parsed) and ``--local-infile=0``
  (the server cannot make the client send it a local file).
- pg_restore reads a custom-format archive, which has no client-side commands.
- a dump is opened without following a symbolic link and must be a regular file, so a snapshot
  cannot make the admin host feed one of its own files (``/etc/shadow``) to a client whose
  error messages would echo it.

Every client command refused is named (file and line) for the drill or restore to report.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import BinaryIO

from portalops.backup.engines.scratch import ScratchServerError, run_bounded, tail
from portalops.core.errors import ExitCode, OpsError

# first minor release of each major whose psql has \restrict (CVE-2025-8714); 18 and later all
PSQL_RESTRICT_SINCE = {13: 22, 14: 19, 15: 14, 16: 10, 17: 6}
MARIADB_LOAD_OPTIONS = ("--batch", "--binary-mode", "--sandbox", "--local-infile=0")
SHOWN_CHARS = 80  # of a refused line, in a report
SHOWN_REFUSED = 5

_PSQL_REFUSED = re.compile(
    r"^psql:<stdin>:(\d+): error: (?:backslash commands are restricted|\\unrestrict: wrong key)"
)
_MARIADB_REFUSED = re.compile(
    r"^ERROR at line (\d+): (?:Unknown command '(\\.)'|Not allowed in the sandbox)"
)
_PG_DUMP_MARKER = re.compile(rb"^\\(?:un)?restrict [A-Za-z0-9]+\s*$")


class UnsafeClient(OpsError):
    """{}"""


class DumpRefused(OpsError):
    """{}"""

    exit_code = ExitCode.PROBLEM_FOUND  # what the snapshot holds, not our failure


@dataclass
class Loaded:
    stderr: str
    refused: list[str]  # client commands the file held, refused


def load_sql(
    argv: Sequence[str],
    dump: Path,
    *,
    what: str,
    timeout: float,
    env: dict[str, str] | None = None,
    check: bool = True,
    strict: bool = True,
) -> Loaded:
    """Feed ``dump`` to the client ``argv`` (psql :func:`psql_restricted`, or mariadb with
    :data:`MARIADB_LOAD_OPTIONS`) on its stdin. :class:`ScratchServerError` when the client
    fails (if ``check``) or refused a client command (if ``strict``), the refused commands
    named first: they are why a forged dump stops. Otherwise the caller judges ``refused``."""
    with open_dump(dump) as handle:
        code, stderr = run_bounded(argv, what=what, timeout=timeout, env=env, stdin=handle)
        refused = refused_commands(stderr, handle, dump.name)
    if (check and code != 0) or (strict and refused):
        detail = "; ".join(refused) if refused else tail(stderr) or "no message"
        failed = f"failed (exit code {code})" if code else "stopped"
        raise ScratchServerError(f"{what} {failed}: {detail}")
    return Loaded(stderr, refused)


def open_dump(path: Path) -> BinaryIO:
    """``path`` opened for reading if it is a regular file itself (no symbolic link followed,
    no FIFO waited on); :class:`DumpRefused` naming it otherwise."""
    refused = DumpRefused(
        f"{path.name} in the snapshot is not a regular file (a symbolic link or a special "
        "file): not loaded"
    )
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
            raise refused from None
        raise DumpRefused(f"{path.name}: cannot be opened ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise refused
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return os.fdopen(fd, "rb")


def psql_restricted(psql: str, conninfo: str) -> list[str]:
    """psql reading SQL on its stdin with every backslash command in it refused."""
    version = psql_version(psql)
    major, minor = version
    since = PSQL_RESTRICT_SINCE.get(major)
    if major < 18 and (since is None or minor < since):
        raise UnsafeClient(
            f"{psql} is version {major}.{minor}, which runs the backslash commands (\\! shell "
            "commands among them) of any file it reads; loading a dump from a backup host "
            "needs \\restrict: psql 13.22, 14.19, 15.14, 16.10, 17.6 or later (upgrade "
            "postgresql-client)"
        )
    key = secrets.token_hex(16)
    return [psql, "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=0",
            "-c", f"\\restrict {key}", "-f", "-", "-d", conninfo]  # fmt: skip


@cache
def psql_version(psql: str) -> tuple[int, int]:
    try:
        done = subprocess.run(
            [psql, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UnsafeClient(f"{psql} --version failed: {exc}") from None
    found = re.search(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?", done.stdout)
    if found is None:
        raise UnsafeClient(f"{psql} --version: not a PostgreSQL version: {done.stdout.strip()!r}")
    return int(found[1]), int(found[2] or 0)


def refused_commands(stderr: str, dump: BinaryIO, name: str) -> list[str]:
    """The client commands psql or mariadb refused in ``dump`` (already read; read again from
    the start here), as "<name> line N: …" (pg_dump's own restrict markers left out). psql
    names the line of each command; mariadb the line its statement starts on, and the
    command."""
    found: list[tuple[int, str]] = []  # (line, command if the client named it)
    for line in stderr.splitlines():
        if psql := _PSQL_REFUSED.match(line):
            found.append((int(psql[1]), ""))
        elif mariadb := _MARIADB_REFUSED.match(line):
            found.append((int(mariadb[1]), mariadb[2] or ""))
    if not found:
        return []
    texts = _lines(dump, {n for n, _ in found})
    refused = []
    for number, command in dict.fromkeys(found):  # in the order the client met them
        text = texts.get(number, b"").strip()
        if _PG_DUMP_MARKER.match(text):
            continue
        shown = text if text.startswith(command.encode()) else command.encode()
        refused.append(f"{name} line {number}: client command {_show(shown)} refused, not run")
    if len(refused) > SHOWN_REFUSED:
        refused[SHOWN_REFUSED:] = [f"… and {len(refused) - SHOWN_REFUSED} more in {name}"]
    return refused


def _lines(dump: BinaryIO, wanted: set[int]) -> dict[int, bytes]:
    """The first bytes of lines ``wanted`` (1-based) of ``dump``, read in bounded chunks."""
    dump.seek(0)
    found: dict[int, bytes] = {}
    number, current, last = 1, b"", max(wanted)
    while number <= last:
        chunk = dump.read(1 << 16)
        if not chunk:
            break
        parts = chunk.split(b"\n")
        for index, part in enumerate(parts):
            if number in wanted and len(current) < SHOWN_CHARS * 4:
                current += part[: SHOWN_CHARS * 4]
            if index < len(parts) - 1:  # a newline ends this line
                if number in wanted:
                    found[number] = current
                number, current = number + 1, b""
    if number in wanted:
        found[number] = current
    return found


def _show(line: bytes) -> str:
    """A line of a dump, quoted for a report: printable, and no longer than SHOWN_CHARS."""
    text = "".join(c if c.isprintable() else "?" for c in line.decode("utf-8", "replace"))
    text = text.strip()
    return f"'{text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + '…'}'"
