"""AnalysisPool with real worker processes: a cancelled caller never leaves a worker in an
unknown state behind, and pages that overran their budget cannot starve the others.

Jobs are stdlib functions (a worker imports them by name): ``time.sleep`` stands for a page
whose analysis never ends, ``len`` for a healthy one."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from portalops.monitors.analysis import AnalysisPool, AnalysisTimeout
from portalops.monitors.catalogue import Module
from portalops.monitors.probe import Expect, PageJob, analyse_page


def test_a_caller_cancelled_during_start_up_leaves_no_half_started_worker() -> None:
    async def scenario() -> tuple[int, int, int]:
        pool = AnalysisPool(1)
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):  # a probe deadline, landing mid start-up
                    await pool.run(len, (1, 2), 5.0)
            idle = len(pool._idle)
            # the next job must not read a half-started worker's ready frame as its answer
            first = await pool.run(len, (1, 2, 3), 5.0)
            with pytest.raises(TimeoutError):  # cancelled mid-job: that worker is not reused
                async with asyncio.timeout(0.2):
                    await pool.run(time.sleep, 5, 5.0)
            return idle, first, await pool.run(len, (1,), 5.0)
        finally:
            pool.close()

    assert asyncio.run(scenario()) == (0, 3, 1)


def test_pages_that_overran_their_budget_hold_one_worker_at_most() -> None:
    """Six pages known to overrun and one healthy page that arrives after them: the healthy
    one is judged long before a single overrun ends (a FIFO pool of two would make it wait
    for three of them)."""
    budget = 1.0

    async def scenario() -> tuple[float, list[bool], bool]:
        pool = AnalysisPool(2)
        try:
            await pool.warm()
            heavy = [f"http://heavy{i}.test/" for i in range(6)]
            # the first round: every heavy page overruns (its key is marked slow)
            first = await asyncio.gather(
                *(pool.run(time.sleep, 30, 0.3, key=k) for k in heavy[:2]),
                return_exceptions=True,
            )
            assert all(isinstance(e, AnalysisTimeout) for e in first), first
            for k in heavy[2:]:
                pool._judge(k, slow=True)  # as a first round of them would have
            await pool.warm()  # replace the killed workers: start-up is not what is measured
            slow = [pool.is_slow(k) for k in heavy]
            jobs = [asyncio.create_task(pool.run(time.sleep, 30, budget, key=k)) for k in heavy]
            await asyncio.sleep(0.05)  # they reach the pool first
            started = time.monotonic()
            assert await pool.run(len, (1, 2), budget, key="http://healthy.test/") == 2
            waited = time.monotonic() - started
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            # a fast job puts a key back in the normal lane; the pool is whole again
            assert await pool.run(len, (), budget, key=heavy[0]) == 0
            return waited, slow, pool.is_slow(heavy[0])
        finally:
            pool.close()

    if AnalysisPool(2).size < 2:
        pytest.skip("one core: a single worker has no lane to spare")
    waited, slow, still_slow = asyncio.run(scenario())
    assert slow == [True] * 6
    assert not still_slow
    # a FIFO pool would make it wait for three overruns (3 s)
    assert waited < budget / 2, f"the healthy page waited {waited:.2f} s"


def _page(html: str) -> PageJob:
    return PageJob(
        modules=frozenset({Module.HEADERS, Module.EXPECT}),
        headers=(("content-type", "text/html; charset=utf-8"),),
        url="http://portal.test/",
        chain=("http://portal.test/",),
        html=html,
        min_grade="B",
        expect=Expect(elements=("form",)),
        baseline=None,
        drift_threshold=0.5,
    )


def test_with_no_record_the_smallest_page_is_judged_first() -> None:
    """The first sweep after a start: six pages of megabytes that overrun, queued before one
    ordinary page, none of them judged before. The ordinary page goes ahead of the queued big
    ones (it waits for a worker, never for the queue), and its analysis is real."""
    budget = 1.0
    big = "<html><body>" + "<p>và <b>các</b> xã</p>" * 90_000 + "</body></html>"
    small = "<html><head><title>Cổng</title></head><body><form></form></body></html>"

    async def scenario() -> tuple[int, float]:
        pool = AnalysisPool(2)
        try:
            await pool.warm()
            jobs = [
                asyncio.create_task(pool.run(analyse_page, _page(big), budget, key=f"big{i}"))
                for i in range(6)
            ]
            await asyncio.sleep(0.05)  # they reach the pool first
            started = time.monotonic()
            verdict = await pool.run(analyse_page, _page(small), budget, key="small")
            waited = time.monotonic() - started
            ended_before = sum(job.done() for job in jobs)  # big pages served before it
            assert verdict.grade is not None
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            return ended_before, waited
        finally:
            pool.close()

    ended_before, waited = asyncio.run(scenario())
    # it waited for one of the two big pages already running, not for the queue: first come,
    # first served would have ended four or more of them first, however fast they were judged
    assert ended_before <= 2, f"{ended_before} big pages first; the small one waited {waited:.2f} s"


def test_the_worker_ignores_a_portalops_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ops monitor check`` run from a directory someone else can write: their
    ``portalops/monitors/analysis.py`` there must not be what the worker runs."""
    marker = tmp_path / "decoy-ran"
    decoy = tmp_path / "portalops" / "monitors"
    decoy.mkdir(parents=True)
    (tmp_path / "portalops" / "__init__.py").write_text("", encoding="utf-8")
    (decoy / "__init__.py").write_text("", encoding="utf-8")
    (decoy / "analysis.py").write_text(f"open({str(marker)!r}, 'w').close()\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    async def scenario() -> int:
        pool = AnalysisPool(1)
        try:
            return await pool.run(len, (1, 2, 3), 30.0)
        finally:
            pool.close()

    assert asyncio.run(scenario()) == 3
    assert not marker.exists()


def test_an_idle_worker_that_died_costs_the_next_job_nothing() -> None:
    """The OOM killer took the idle worker: the next job runs on a fresh one, in time, and
    its key is not marked slow."""

    async def scenario() -> tuple[int, bool]:
        pool = AnalysisPool(1)
        try:
            await pool.warm()
            process = pool._idle[0].process
            process.kill()
            process.wait(timeout=10)
            answer = await pool.run(len, (1, 2), 30.0, key="http://innocent.test/")
            return answer, pool.is_slow("http://innocent.test/")
        finally:
            pool.close()

    assert asyncio.run(scenario()) == (2, False)
