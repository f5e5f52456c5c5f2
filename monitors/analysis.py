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
``python -P -m portalops.monitors.analysis`` over two pipes, speaking length-prefixed pickle
frames; the parent waits for an answer with ``loop.add_reader``, so it needs no thread and
works under any event loop (``ops monitor check`` runs one, the exporter another).

Fairness: jobs carry a key (the target). A target whose last analysis overran its budget, or
used more than half of it, is served from a slow lane: behind every other waiting job, one
job at a time. So a handful of hostile pages hold one worker at most, not the whole pool, and
a healthy page waits only for other healthy pages; a target with no record yet waits in the
normal lane, smallest job first (see ``AnalysisPool``).

The worker starts with ``-P`` in ``/``: ``python -m`` would put the current directory first on
``sys.path``, and ``ops monitor check`` run as root from a directory a web user can write would
run that user's ``portalops/monitors/analysis.py``. It ignores SIGINT (a Ctrl-C is the parent's
to handle) and sends everything written to its fd 1, C code's too, to stderr: fd 1 as such
is no longer the answer pipe.

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
import collections
import contextlib
import ctypes
import functools
import heapq
import importlib
import itertools
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
A = TypeVar("A")

START_TIMEOUT = 60.0  # a worker's start-up, on a loaded host
MAX_SLOW_KEYS = 4096  # slow keys remembered (the oldest forgotten first)
SLOW_FOR = 600.0  # seconds a slow mark lasts: a key whose jobs never end (cancelled) gets out
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
    """One worker process and its pipes; the parent's ends are non-blocking, written and read
    through the event loop."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            # -P: not the current directory first on sys.path (a directory someone else may
            # write, with a portalops/ of theirs); cwd "/" for what imports relative paths
            [sys.executable, "-P", "-m", "portalops.monitors.analysis"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
            cwd="/",
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

    async def call(self, data: bytes, budget: float) -> tuple[bool, Any]:
        """The pickled job ``data`` run: (True, the result) or (False, why the job raised),
        read in full, so the worker is then ready for the next job."""
        async with asyncio.timeout(budget):
            await self._write_frame(data)
            # our own worker's frame; the page's bytes never reach pickle unpickled
            ok, value = pickle.loads(await self._read_frame())  # noqa: S301
        return bool(ok), value

    def alive(self) -> bool:
        """Whether the process still runs (an idle worker may have died: the OOM killer)."""
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL and close the pipes, never waiting on the event loop: the process is
        reaped later (:func:`_reap`), when it is surely gone."""
        with contextlib.suppress(OSError):
            self.process.kill()
        for pipe in (self.process.stdin, self.process.stdout):  # each closes its own fd once
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        _dead.append(self.process)
        _reap()


_dead: list[subprocess.Popen[bytes]] = []  # killed workers not yet reaped


def _reap() -> None:
    """Collect killed workers that have exited (non-blocking ``poll``), so none stays a
    zombie for long; called on every kill and worker start."""
    _dead[:] = [process for process in _dead if process.poll() is None]


class AnalysisPool:
    """At most ``size`` workers, started on demand; ``run`` waits for a free one.

    Fairness: a job that overran its budget, or used more than half of it, marks its ``key``
    (the target) slow. A slow key's next job runs in the slow lane: it waits behind every job
    of the normal lane, and at most one slow-lane job runs at a time. So hostile pages,
    however many, hold at most one worker (with two or more), and every other page waits only
    for other normal pages. A slow key's job that ends within half its budget puts the key
    back in the normal lane. A key is judged by its last job; a job with no such record (the
    first sweep after a start) is told apart by size: the normal lane serves the smallest
    pickled job first, and a page that takes seconds to judge with linear-time analyses is a
    page of megabytes, while a portal's home page and exposure answers weigh kilobytes."""

    def __init__(self, size: int | None = None) -> None:
        self.size = max(1, min(size or 2, os.cpu_count() or 1))
        self.slow_lane = 1  # slow-lane jobs running at once, at most
        self._idle: list[_Worker] = []
        self._running = 0  # jobs holding a slot (a worker, or the right to start one)
        self._running_slow = 0
        # the normal lane, smallest job first: (pickled size, arrival, waiter)
        self._normal: list[tuple[int, int, asyncio.Future[None]]] = []
        self._slow_queue: collections.deque[asyncio.Future[None]] = collections.deque()
        self._arrivals = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slow: dict[str, float] = {}  # slow key -> when marked, oldest first
        self.killed = 0  # workers killed for overrunning (for tests and logs)

    def is_slow(self, key: str | None) -> bool:
        """Whether ``key``'s next job runs in the slow lane: marked less than ``SLOW_FOR`` ago.
        A mark expires, since a slow-lane job cancelled while it waits (its probe's deadline)
        never gets to clear it: the key would otherwise wait behind everything for good."""
        marked = None if key is None else self._slow.get(key)
        return marked is not None and time.monotonic() - marked < SLOW_FOR

    def _judge(self, key: str | None, slow: bool) -> None:
        if key is None:
            return
        self._slow.pop(key, None)
        if slow:
            self._slow[key] = time.monotonic()
            while len(self._slow) > MAX_SLOW_KEYS:  # /probe with probe_any: any URL is a key
                del self._slow[next(iter(self._slow))]

    def _dispatch(self) -> None:
        """Hand free slots to waiters: the normal lane first, then one slow-lane job."""
        normal, slow = self._normal, self._slow_queue
        while self._running < self.size:
            if normal:
                lane, future = False, heapq.heappop(normal)[2]
            elif slow and self._running_slow < self.slow_lane:
                lane, future = True, slow.popleft()
            else:
                return
            if future.done():  # its caller was cancelled while waiting
                continue
            self._running += 1
            self._running_slow += lane
            future.set_result(None)

    def _release(self, slow: bool) -> None:
        self._running -= 1
        self._running_slow -= slow
        self._dispatch()

    async def _acquire(self, slow: bool, weight: int) -> None:
        """A slot in the ``slow`` lane or the normal one, in turn (in the normal lane, the
        smallest job first). Safe to cancel: a slot granted to a caller cancelled before it
        could run is handed on."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop: the old one's waiters are gone
            self._loop = loop
            self._normal.clear()
            self._slow_queue.clear()
        future: asyncio.Future[None] = loop.create_future()
        if slow:
            self._slow_queue.append(future)
        else:
            heapq.heappush(self._normal, (weight, next(self._arrivals), future))
        self._dispatch()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release(slow)
            else:
                future.cancel()  # _dispatch drops it
            raise

    async def _start_worker(self) -> _Worker:
        """A new, started worker; a cancelled start kills it (a half-started worker would
        answer the next job with its ready frame)."""
        _reap()
        try:
            worker = _Worker()
        except OSError as exc:
            raise AnalysisTimeout(f"no analysis worker started ({exc})") from None
        try:
            await worker.start()
        except (OSError, EOFError, TimeoutError) as exc:
            worker.kill()
            raise AnalysisTimeout(f"no analysis worker started ({exc})") from None
        except BaseException:
            worker.kill()
            raise
        return worker

    async def run(
        self, function: Callable[[A], T], argument: A, budget: float, key: str | None = None
    ) -> T:
        """function(argument) in a worker, within budget seconds of wall time from the moment
        the worker has it (waiting for a free worker is not counted); ``key`` says whose job
        it is (a target), for the lanes above. AnalysisTimeout on an overrun (the worker is
        killed and replaced later) or when no worker starts. Whatever ends the call (an
        overrun, a dead worker, a cancelled caller), a worker goes back to the idle list only
        after a complete answer: any other worker is killed."""
        slow = self.is_slow(key)
        data = pickle.dumps((function, argument), protocol=pickle.HIGHEST_PROTOCOL)
        await self._acquire(slow, len(data))
        worker: _Worker | None = None
        reusable = False
        started: float | None = None  # when the worker got the job
        try:
            worker, reused = await self._take_worker()
            for attempt in (1, 2):
                began = started = time.monotonic()
                try:
                    ok, value = await worker.call(data, budget)
                    break
                except TimeoutError:
                    self.killed += 1
                    self._judge(key, slow=True)
                    raise AnalysisTimeout(f"analysis took longer than {budget:g} s") from None
                except (OSError, EOFError):
                    if attempt == 2 or not reused or time.monotonic() - began > budget / 2:
                        self._judge(key, slow=True)
                        raise AnalysisTimeout("the analysis worker died") from None
                # a reused worker that died before it could answer (since the liveness check,
                # or unseen by it): not the job's fault; once more, on a fresh worker
                worker.kill()
                worker, started = None, None
                worker = await self._start_worker()
            reusable = True
            self._judge(key, slow=time.monotonic() - began > budget / 2)
            if not ok:
                raise RuntimeError(f"analysis failed in the worker: {value}")
            result: T = value
            return result
        finally:
            if worker is not None and not reusable:
                if started is not None and time.monotonic() - started > budget / 2:
                    # its caller gave up (a probe deadline) on a job already long
                    self._judge(key, slow=True)
                worker.kill()
            elif worker is not None:
                self._idle.append(worker)
            self._release(slow)

    async def _take_worker(self) -> tuple[_Worker, bool]:
        """An idle worker still alive (the dead ones killed and dropped: an idle worker the
        OOM killer took must not cost the next job its budget), else a new one; and whether
        it was reused."""
        while self._idle:
            worker = self._idle.pop()
            if worker.alive():
                return worker, True
            worker.kill()
        return await self._start_worker(), False

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

    async def run(
        self, function: Callable[[A], T], argument: A, budget: float, key: str | None = None
    ) -> T:
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
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: no tracebacks here
    sys.stdout.flush()
    # the answer pipe on an fd of its own; fd 1 becomes stderr, so that nothing but frames
    # reaches the pipe, whatever writes to fd 1 (print, or C code under Python)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    jobs = sys.stdin.buffer
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
