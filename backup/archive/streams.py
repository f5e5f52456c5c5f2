"""Sources that are streams, not directories: database dumps and command output.

A producer writes named streams into a ``Sink``; each becomes one file in the snapshot's
root tree, chunked and deduplicated like any file (so yesterday's unchanged dump pages cost
nothing). Child processes are streamed, never spooled to a temp file, and a child that exits
non-zero, is killed, times out or says nothing when it should fails the whole source with
the tail of its stderr: no snapshot is written for it.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from portalops.backup.archive.bases import DeltaBases
from portalops.backup.repo.chunker import Chunker
from portalops.backup.repo.pack import BlobType
from portalops.backup.repo.tree import Node, NodeType, Tree
from portalops.backup.repo.writer import BlobWriter
from portalops.core.errors import ExitCode, OpsError

STDERR_TAIL_LINES = 12


class SourceFailed(OpsError):
    """source {}: {}"""

    exit_code = ExitCode.PROBLEM_FOUND


@dataclass
class Sink:
    """Collects a producer's streams as files of one flat snapshot tree."""

    source: str
    writer: BlobWriter
    chunker: Chunker
    progress: Callable[[int, int], None] | None = None
    bases: DeltaBases | None = None  # yesterday's chunks, to store today's as deltas
    nodes: list[Node] = field(default_factory=list)
    size: int = 0  # bytes stored so far, all streams

    def add_stream(self, name: str, stream: IO[bytes], *, mode: int = 0o600) -> int:
        """Store everything ``stream`` yields until EOF as file ``name``; return its size."""
        if (
            "/" in name
            or name in {"", ".", ".."}
            or any(n.name == name.encode() for n in self.nodes)
        ):
            raise SourceFailed(self.source, f"producer gave a bad or repeated file name {name!r}")
        content: list[bytes] = []
        size = 0
        bases = self.bases.stream(name) if self.bases is not None else None
        for chunk in self.chunker.chunks(stream):
            blob = self.writer.blob_id(chunk)
            hint = bases.hint(chunk, blob) if bases is not None else None
            content.append(self.writer.add(BlobType.DATA, chunk, blob, hint))
            size += len(chunk)
            if self.progress:
                self.progress(len(self.nodes), self.size + size)
        now = time.time_ns()
        self.nodes.append(
            Node(
                name=name.encode(),
                type=NodeType.FILE,
                mode=mode,
                uid=os.getuid(),
                gid=os.getgid(),
                mtime_ns=now,
                size=size,
                content=tuple(content),
            )
        )
        self.size += size
        return size

    def add_bytes(self, name: str, data: bytes, *, mode: int = 0o600) -> int:
        return self.add_stream(name, io.BytesIO(data), mode=mode)

    def root(self) -> bytes:
        return self.writer.add_tree(Tree(self.nodes), f"source {self.source}")


def stream_command(
    sink: Sink,
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float,
    allow_empty: bool = False,
    what: str | None = None,
) -> int:
    """Run ``argv`` and store its stdout as file ``name``, streamed; return the size.

    Fails the source (SourceFailed) when the command is missing, exits non-zero, is killed,
    exceeds ``timeout`` seconds, or prints nothing (unless ``allow_empty``). Secrets go in
    ``env`` or files, never in ``argv`` (visible in ps).
    """
    label = what or argv[0]
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            # Its own process group: a timeout must stop grandchildren too (sh -c 'a | b'),
            # or they keep the output pipe open and the backup waits for them.
            start_new_session=True,
        )
    except FileNotFoundError:
        raise SourceFailed(sink.source, f"{argv[0]} not found; is it installed?") from None
    except OSError as exc:
        raise SourceFailed(sink.source, f"cannot start {argv[0]}: {exc.strerror}") from None
    if proc.stdout is None or proc.stderr is None:  # pragma: no cover - PIPE was asked for
        raise SourceFailed(sink.source, f"cannot read the output of {argv[0]}")
    tail = _drain(proc.stderr)
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        _kill_group(proc)

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    try:
        size = sink.add_stream(name, proc.stdout)
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        timer.cancel()
        proc.stdout.close()
    code = proc.wait()
    tail.join(timeout=10)
    stderr = " | ".join(tail.lines) or "(nothing on stderr)"
    if timed_out.is_set():
        raise SourceFailed(sink.source, f"{label} did not finish within {timeout:.0f} s: {stderr}")
    if code < 0:
        raise SourceFailed(sink.source, f"{label} was killed by signal {-code}: {stderr}")
    if code != 0:
        raise SourceFailed(sink.source, f"{label} exited with status {code}: {stderr}")
    if size == 0 and not allow_empty:
        raise SourceFailed(sink.source, f"{label} printed nothing: {stderr}")
    return size


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class _Tail(threading.Thread):
    """Reads a pipe to its end, keeping the last lines (a child blocked on a full stderr
    pipe would never finish its stdout)."""

    def __init__(self, pipe: IO[bytes]) -> None:
        super().__init__(daemon=True, name="stderr")
        self.pipe = pipe
        self._lines: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)

    @property
    def lines(self) -> list[str]:
        return [line for line in self._lines if line]

    def run(self) -> None:
        with self.pipe:
            for raw in iter(self.pipe.readline, b""):
                self._lines.append(raw.decode("utf-8", "replace").strip())


def _drain(pipe: IO[bytes]) -> _Tail:
    tail = _Tail(pipe)
    tail.start()
    return tail


Producer = Callable[[Any, Sink], dict[str, Any]]
"""A source kind: writes its streams into the sink, returns the snapshot's ``stats``."""
