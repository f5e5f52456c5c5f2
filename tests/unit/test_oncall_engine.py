"""The escalation engine on a clock the test holds: steps fall due exactly when their waits
end, an acknowledgement ends them for good, and the service loop reads only the engine's
clock and tells its hook of every tick. A real SQLite store; nothing is delivered, but to a
loopback webhook in the retry test."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from portalops.oncall.config import Oncall
from portalops.oncall.engine import PAGE_RETRY_FIRST, Escalator
from portalops.oncall.secrets import LinkSigner
from portalops.oncall.store import Store

START = 1_796_000_000.0  # 2026-11-30, a Monday: the rotations below have begun
WAIT = 300.0


def oncall(**changes: Any) -> Oncall:
    data: dict[str, Any] = {
        "tick": "0.05s",
        "team_lead": "chi",
        "people": [
            {"id": "an", "name": "Nguyễn Văn An"},
            {"id": "binh", "name": "Trần Thị Bình"},
            {"id": "chi", "name": "Lê Minh Chí"},
        ],
        "rotations": {
            "primary": {"people": ["an"], "start": "2026-01-05"},
            "secondary": {"people": ["binh"], "start": "2026-01-05"},
        },
        "escalation": {
            "steps": [
                {"notify": "primary", "wait": f"{WAIT:g}s"},
                {"notify": "secondary", "wait": f"{WAIT:g}s"},
                {"notify": "team_lead", "wait": f"{WAIT:g}s"},
            ],
            "repeat": False,
        },
    }
    data.update(changes)
    return Oncall.model_validate(data)


def escalator(tmp_path: Path, clock: list[float], **changes: Any) -> Escalator:
    return Escalator(
        oncall(**changes),
        Store(tmp_path / "oncall.sqlite"),
        LinkSigner(b"k" * 32),
        "http://127.0.0.1:9434",
        clock=lambda: clock[0],
    )


def firing() -> dict[str, Any]:
    return {
        "groupKey": '{}:{alertname="PortalDown"}',
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "PortalDown", "severity": "warning", "domain": "a.vn"},
                "fingerprint": "fa",
            }
        ],
    }


def paged(engine: Escalator) -> list[str | None]:
    return [p.person for p in engine.store.pages() if p.kind == "page"]


def test_each_step_falls_due_when_its_wait_ends_and_an_acknowledgement_ends_them(
    tmp_path: Path,
) -> None:
    clock = [START]
    engine = escalator(tmp_path, clock)
    assert engine.receive(firing(), START)["opened"] == [1]
    engine.tick(START)
    assert paged(engine) == ["an"]
    engine.tick(START + WAIT - 0.001)
    assert paged(engine) == ["an"]
    engine.tick(START + WAIT)
    assert paged(engine) == ["an", "binh"]
    assert engine.store.acknowledge(1, "binh", START + WAIT + 1) is not None
    for later in (2 * WAIT, 10 * WAIT, 1000 * WAIT):
        engine.tick(START + later)
    assert paged(engine) == ["an", "binh"]  # the team lead is never woken
    engine.store.close()


def two_ticks(engine: Escalator, between: Callable[[], None]) -> list[float]:
    """Run the engine's loop for two ticks, calling ``between`` after the first; the ticks'
    times on the engine clock."""
    ticks: list[float] = []

    async def run() -> None:
        stop = asyncio.Event()

        def after(now: float) -> None:
            ticks.append(now)
            if len(ticks) == 1:
                between()
            else:
                stop.set()

        engine.after_tick = after
        await asyncio.wait_for(engine.run(stop), timeout=10)
        await engine.drain(timeout=5)

    asyncio.run(run())
    return ticks


def test_the_loop_ticks_on_the_engine_clock_and_reports_each_tick(tmp_path: Path) -> None:
    clock = [START]
    engine = escalator(tmp_path, clock)
    engine.receive(firing(), START)

    def first_wait_over() -> None:
        clock[0] = START + WAIT

    assert two_ticks(engine, first_wait_over) == [START, START + WAIT]
    assert paged(engine) == ["an", "binh"]
    # nobody has a channel here: each page was tried, failed, and says why
    assert [(p.state, p.error) for p in engine.store.pages()] == [
        ("failed", "an has no channels"),
        ("failed", "binh has no channels"),
    ]
    engine.store.close()


def test_a_failed_tick_leaves_the_last_good_tick_behind(tmp_path: Path) -> None:
    """``last_tick_timestamp_seconds`` says when a tick last *worked*: a loop that ticks
    but fails every time (the database closed under it) does not move it."""
    clock = [START]
    engine = escalator(tmp_path, clock)

    def database_gone() -> None:
        engine.store.close()  # every later tick fails
        clock[0] = START + 60

    assert two_ticks(engine, database_gone) == [START, START + 60]
    assert (engine.last_tick, engine.last_good_tick) == (START + 60, START)
    assert not engine.last_tick_ok
    assert engine.metrics.db_errors._value.get() >= 1
    with pytest.raises(sqlite3.ProgrammingError):
        engine.store.pages()


class _Flaky(BaseHTTPRequestHandler):
    """Refuses the first POST, accepts the others."""

    posts = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).posts += 1
        self.send_response(500 if type(self).posts == 1 else 200)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def flaky_webhook() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Flaky)
    _Flaky.posts = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"json://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def test_a_retried_page_that_gets_through_is_forgotten(tmp_path: Path, flaky_webhook: str) -> None:
    """A page failing on every channel is retried later; once the retry is delivered the
    engine keeps nothing of it (no per-page bookkeeping grows with every retry)."""
    clock = [START]
    people = [
        {"id": who, "name": who, "channels": [flaky_webhook]} for who in ("an", "binh", "chi")
    ]
    engine = escalator(tmp_path, clock, people=people, delivery={"attempts": 1, "timeout": "5s"})
    engine.receive(firing(), START)

    async def step(now: float) -> None:
        clock[0] = now
        engine.tick(now)
        engine.deliver_pending()
        await engine.drain(timeout=10)

    async def run() -> None:
        await step(START)  # an's page fails: binh at once, an again later
        assert engine._retries
        await step(START + PAGE_RETRY_FIRST)  # the retry is written, and delivered
        await step(START + PAGE_RETRY_FIRST + 0.001)

    asyncio.run(run())
    an = [p.state for p in engine.store.pages() if p.person == "an"]
    assert an == ["failed", "sent"]
    assert (engine._retry_of, engine._retries) == ({}, [])
    engine.store.close()


def timed(status: str, starts: str, ends: str = "0001-01-01T00:00:00Z") -> dict[str, Any]:
    payload = firing()
    payload["alerts"][0].update(status=status, startsAt=starts, endsAt=ends)
    return payload


def test_replays_older_than_what_is_recorded_change_nothing(tmp_path: Path) -> None:
    """Alertmanager's times order its notifications (nanoseconds and offsets as it writes
    them), whatever order they arrive in."""
    engine = escalator(tmp_path, [START])
    t0, t1 = "2026-11-29T01:00:00.123456789Z", "2026-11-29T08:10:00.5+07:00"  # 01:10 UTC
    t2 = "2026-11-29T01:20:00Z"
    assert engine.receive(timed("firing", t0), START)["opened"] == [1]
    assert engine.receive(timed("resolved", t0, t1), START)["resolved"] == [1]
    assert engine.receive(timed("firing", t0), START) == {"opened": [], "updated": [],
                                                          "resolved": []}  # fmt: skip
    assert engine.receive(timed("firing", t2), START)["opened"] == [2]
    assert engine.receive(timed("resolved", t0, t1), START)["resolved"] == []
    assert engine.store.incident(2).status == "firing"  # type: ignore[union-attr]
    assert engine.receive(timed("resolved", t2, t2), START)["resolved"] == [2]
    engine.store.close()


def test_the_replay_window_never_outlasts_a_group_wait() -> None:
    """A re-fire after Alertmanager resolved by timeout starts a new group, notified one
    group_wait later at the earliest: a window as long would swallow it (and page only at the
    next repeat, an hour later for critical alerts)."""
    assert Oncall().replay_horizon() == 10.0
    assert oncall(replay_window="1h").replay_horizon() == 10.0  # critical groups wait 10 s
    assert oncall(replay_window="3s").replay_horizon() == 3.0
    short = oncall(replay_window="1h", alertmanager={"group_wait": "2s"})
    assert short.replay_horizon() == 2.0
