"""Page analysis off the event loop: a few worker processes, each job on a wall-clock budget.

Judging a page (security headers, expectations, defacement, exposure) is CPU work on bytes a
portal chose. Run on the exporter's event loop, one hostile page would stop every probe,
``/metrics`` and ``/healthz`` for as long as it takes; in a thread it would still hold the
GIL. So it runs in worker processes, at most ``size`` (no more than the cores), and a job that
overruns its budget has its worker killed (SIGKILL) and replaced: the probe gets
``AnalysisTimeout`` and reports it, the loop never waits.

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot cancel a running task (a stuck
job keeps its worker busy for good, and killing one breaks the whole pool), and
``multiprocessing`` re-imports the parent's ``__main__`` in every worker. A worker here is
``python -m portalops.monitors.analysis`` over two pipes, speaking length-prefixed pickle
frames; the parent waits for an answer with ``loop.add_reader``, so it needs no thread and
works under any event loop (``ops monitor check`` runs one, the exporter another).

Costs: a worker's start-up (interpreter and imports, a few hundred ms) is paid once, on the
first job, and does not count against the budget; a job is one pickle each way. Workers die
with the parent: they ask the kernel for SIGKILL when it dies (``PR_SET_PDEATHSIG``) and leave
on end-of-file on their input.

A job is ``(function, argument)``; the function must be importable by its module name (a
module-level function), its argument and result picklable.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import functools
import importlib
import os
import pickle
import signal
import struct
import subprocess
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
A = TypeVar("A")

START_TIMEOUT = 60.0  # a worker's start-up, on a loaded host
_HEADER = struct.Struct(">Q")
_READY = b"ready"
_PR_SET_PDEATHSIG = 1


class AnalysisTimeout(Exception):
    """The job overran its budget (its worker was killed), or no worker could run it."""


def _wake(future: asyncio.Future[None]) -> None:
    """The reader callback: the loop may call it again before the waiter has run."""
    if not future.done():
        future.set_result(None)


class _Worker:
    """One worker process and its pipes; the parent's ends are blocking for writes (the worker
    reads as fast as we write) and read through the event loop."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "portalops.monitors.analysis"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        stdin, stdout = self.process.stdin, self.process.stdout
        if stdin is None or stdout is None:  # pragma: no cover - PIPE always gives both
            raise OSError("no pipes to the analysis worker")
        self.into, self.out = stdin.fileno(), stdout.fileno()
        os.set_blocking(self.into, False)
        os.set_blocking(self.out, False)
        self.started = False

    async def _read_frame(self) -> bytes:
        """One frame from the worker, through the event loop (no thread, no blocking read)."""
        loop = asyncio.get_running_loop()
        buffer = bytearray()
        need = _HEADER.size
        header_done = False
        while True:
            readable = loop.create_future()
            loop.add_reader(self.out, _wake, readable)
            try:
                await readable
            finally:
                loop.remove_reader(self.out)
            while True:
                try:
                    chunk = os.read(self.out, max(65536, need - len(buffer)))
                except BlockingIOError:
                    break
                if not chunk:
                    raise EOFError("the analysis worker exited")
                buffer += chunk
                if not header_done and len(buffer) >= _HEADER.size:
                    need = _HEADER.size + _HEADER.unpack_from(buffer)[0]
                    header_done = True
                if header_done and len(buffer) >= need:
                    return bytes(buffer[_HEADER.size : need])

    async def start(self) -> None:
        async with asyncio.timeout(START_TIMEOUT):
            if await self._read_frame() != _READY:
                raise EOFError("the analysis worker did not start")
        self.started = True

    async def _write_frame(self, data: bytes) -> None:
        """One frame to the worker, through the event loop: a job can be megabytes (37
        exposure bodies), more than a pipe holds, and a worker slow to read it (a loaded
        host) must not block the loop."""
        loop = asyncio.get_running_loop()
        view = memoryview(_HEADER.pack(len(data)) + data)
        while view:
            try:
                view = view[os.write(self.into, view) :]
            except BlockingIOError:
                writable = loop.create_future()
                loop.add_writer(self.into, _wake, writable)
                try:
                    await writable
                finally:
                    loop.remove_writer(self.into)

    async def call(self, job: tuple[Callable[[Any], Any], Any], budget: float) -> Any:
        data = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        async with asyncio.timeout(budget):
            await self._write_frame(data)
            # our own worker's frame; the page's bytes never reach pickle unpickled
            ok, value = pickle.loads(await self._read_frame())  # noqa: S301
        if not ok:
            raise RuntimeError(f"analysis failed in the worker: {value}")
        return value

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        for pipe in (self.process.stdin, self.process.stdout):  # each closes its own fd once
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)


class AnalysisPool:
    """At most ``size`` workers, started on demand; ``run`` waits for a free one."""

    def __init__(self, size: int | None = None) -> None:
        self.size = max(1, min(size or 2, os.cpu_count() or 1))
        self._idle: list[_Worker] = []
        self._busy = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._free: asyncio.Condition | None = None
        self.killed = 0  # workers killed for overrunning (for tests and logs)

    def _condition(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        if self._free is None or self._loop is not loop:  # a new event loop: new primitives
            self._loop, self._free = loop, asyncio.Condition()
        return self._free

    async def run(self, function: Callable[[A], T], argument: A, budget: float) -> T:
        """function(argument) in a worker, within budget seconds of wall time from the moment
        the worker has it (waiting for a free worker is not counted). AnalysisTimeout on an
        overrun (the worker is killed and replaced later) or when no worker starts; a
        cancelled caller kills the worker too, so no abandoned job runs on."""
        free = self._condition()
        async with free:
            await free.wait_for(lambda: bool(self._idle) or self._busy < self.size)
            worker = self._idle.pop() if self._idle else None
            self._busy += 1
        try:
            if worker is None:
                worker = _Worker()
                try:
                    await worker.start()
                except (OSError, EOFError, TimeoutError) as exc:
                    worker.kill()
                    worker = None
                    raise AnalysisTimeout(f"no analysis worker started ({exc})") from None
            try:
                result: T = await worker.call((function, argument), budget)
            except TimeoutError:
                self.killed += 1
                worker.kill()
                worker = None
                raise AnalysisTimeout(f"analysis took longer than {budget:g} s") from None
            except (OSError, EOFError):
                worker.kill()
                worker = None
                raise AnalysisTimeout("the analysis worker died") from None
            except BaseException:
                worker.kill()
                worker = None
                raise
            return result
        finally:
            async with free:
                self._busy -= 1
                if worker is not None:
                    self._idle.append(worker)
                free.notify()

    async def warm(self) -> None:
        """Start every worker now (a service may pay the start-up before its first sweep)."""
        await asyncio.gather(*(self.run(len, (), START_TIMEOUT) for _ in range(self.size)))

    def close(self) -> None:
        """Stop the idle workers (busy ones are killed by their callers or die with us)."""
        while self._idle:
            self._idle.pop().kill()


class InlinePool(AnalysisPool):
    """Runs each job in this process, on the event loop, with no budget: for tests that
    watch the analysis from inside (a monkeypatched grader), never for a service."""

    async def run(self, function: Callable[[A], T], argument: A, budget: float) -> T:
        return function(argument)


@functools.cache
def shared_pool() -> AnalysisPool:
    """The process's pool, created on first use (the workers themselves start on demand);
    its idle workers are stopped at exit (busy ones die with us)."""
    pool = AnalysisPool()
    atexit.register(pool.close)
    return pool


# --- The worker ------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """SIGKILL when the parent dies (Linux); elsewhere end-of-file on stdin does it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent is already gone
        sys.exit(0)


def _read_exact(stream: Any, size: int) -> bytes | None:
    data = stream.read(size)
    return data if data is not None and len(data) == size else None


def _write_frame(stream: Any, data: bytes) -> None:
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def serve() -> None:
    """The worker's loop: a job frame in, a result frame out, until end-of-file."""
    _die_with_parent()
    jobs, answers = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames on the answer pipe
    importlib.import_module("portalops.monitors.probe")  # the imports, before saying ready

    _write_frame(answers, _READY)
    while True:
        header = _read_exact(jobs, _HEADER.size)
        if header is None:
            return
        body = _read_exact(jobs, _HEADER.unpack(header)[0])
        if body is None:
            return
        try:
            function, argument = pickle.loads(body)  # noqa: S301  # from our parent
            answer: tuple[bool, Any] = (True, function(argument))
        except Exception as exc:  # a bug in an analysis: the parent logs and reports it
            answer = (False, f"{type(exc).__name__}: {exc}")
        _write_frame(answers, pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    serve()
