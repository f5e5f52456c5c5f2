"""Escalation: what Alertmanager does not do (rotations, acknowledgements, escalation).

A notification group from Alertmanager opens an **incident** (one per group while it is open;
its alerts are kept by fingerprint, and an alert firing again is no news, so nobody is paged
twice for it). Its escalation steps run on the wall clock, one after another, each paging
whoever the step names *at that moment* (a rotation's person on call, a person, the team
lead), until somebody acknowledges or every alert of the group resolves; then, if
``escalation.repeat``, from the first step again (at most ``escalation.max_rounds`` rounds).
A resolution is sent to everyone who was paged.

Serious incidents (``incident_reports.serious`` severities) also start the two report clocks
of Decree 331/2026 Art. 31; the team lead is reminded ``remind_before`` each deadline.

All of it is state in :class:`~portalops.oncall.store.Store`, advanced by :meth:`Escalator.tick`
(pure bookkeeping: it only writes ``pending`` pages) and delivered by
:meth:`Escalator.deliver_pending`; the service loops over both.

Webhooks are ordered by each alert's ``startsAt``/``endsAt``, not by arrival: Alertmanager
retries and replays, so a "resolved" that ended before the firing we hold started is old
news and changes nothing. A "firing" that started no later than the resolution we recorded
ended is a replay only within ``oncall.replay_window`` of receiving that resolution (never
longer than a group wait: :meth:`~portalops.oncall.config.Oncall.replay_horizon`).
Alertmanager blanks ``endsAt`` on firing alerts, so a replay and a real re-fire (after it
resolved the alert by timeout while Prometheus stalled) look alike, and after the window the
safe side wins: it opens an incident and pages. Times in the future (clock skew) count as
the time of receipt, and a resolution that arrives before its firing is remembered for the
same window, so the late firing does not open an incident that nothing would close.

A page that was delivered but could not be recorded (database locked, disk full) is
remembered in memory and its record retried with backoff; it is never delivered again while
the service runs (after a restart it would be: at least once).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from portalops.oncall import messages, rota
from portalops.oncall.config import Oncall
from portalops.oncall.metrics import OncallMetrics
from portalops.oncall.notify import Delivered, deliver
from portalops.oncall.secrets import LinkSigner
from portalops.oncall.store import Incident, Page, Store

log = logging.getLogger(__name__)

#: Seconds since the epoch; :data:`time.time` in service, a clock the test moves in tests.
Clock = Callable[[], float]
#: Called after each tick of :meth:`Escalator.run` with the time the tick ran at.
TickHook = Callable[[float], None]

#: Backoff of retried records of delivered pages: first retry after this, doubling, capped.
RECORD_RETRY_FIRST = 0.5
RECORD_RETRY_MAX = 30.0
#: A page that failed on every channel of its person is tried again (the escalation has
#: moved on at once meanwhile) this many times, after this many seconds, doubling.
PAGE_RETRIES = 3
PAGE_RETRY_FIRST = 60.0
#: At most this many early resolutions are remembered (a flood of them cannot grow memory).
MAX_EARLY = 10_000


@dataclass
class _Unrecorded:
    """A delivered (or finally failed) page whose result the database has not taken yet."""

    result: Delivered
    done_at: float
    tries: int = 0
    retry_at: float = 0.0  # time.monotonic()


@dataclass(frozen=True)
class _Retry:
    """A page to write again for a person every channel of whom failed."""

    page: Page
    tries: int  # retries written so far, this one included
    at: float  # engine clock


@dataclass
class Escalator:
    """The escalation state machine over one :class:`Store`.

    Every time it reads comes from ``clock`` and ``after_tick`` is told of every tick of
    :meth:`run`, so a test moves time and waits for the tick that saw it instead of sleeping
    through escalation waits."""

    oncall: Oncall
    store: Store
    signer: LinkSigner
    base_url: str  # where acknowledge links point
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    clock: Clock = time.time
    after_tick: TickHook | None = None
    metrics: OncallMetrics = field(default_factory=OncallMetrics)
    _in_flight: set[int] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _unrecorded: dict[int, _Unrecorded] = field(default_factory=dict)
    _db_failing: str | None = None  # what failed, while the database keeps failing
    _early: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    _retries: list[_Retry] = field(default_factory=list)
    _retry_of: dict[int, int] = field(default_factory=dict)  # page id -> its retry number
    """Resolutions of alerts we held no firing for, by (group, fingerprint): (ended,
    received), kept ``replay_window`` so their late firing is known as old news."""
    last_tick: float | None = None
    """The engine clock at the last tick of :meth:`run`."""
    last_good_tick: float | None = None
    """The engine clock at the last tick of :meth:`run` that raised no error (the
    ``last_tick_timestamp_seconds`` metric)."""
    last_tick_ok: bool = True
    """Whether that tick's bookkeeping succeeded."""
    _last_tick_mono: float | None = None

    # -- Alertmanager's webhook -------------------------------------------------------------

    def receive(self, payload: Mapping[str, Any], now: float) -> dict[str, list[int]]:
        """Record one webhook payload; returns the incidents opened, updated and resolved.

        One incident per Alertmanager notification group (``groupKey``): a hundred commune
        portals down at once, grouped by the route, page once. Within it, alerts are kept by
        fingerprint, so an alert Alertmanager repeats is never news. A payload without a
        group key (a hand-made one) is grouped by each alert's fingerprint instead."""
        alerts = payload.get("alerts")
        if not isinstance(alerts, list) or not alerts:
            raise ValueError("payload has no 'alerts' list (is this an Alertmanager webhook?)")
        parsed = [_clamped(_alert_fields(a), now) for a in alerts]
        group_key = payload.get("groupKey")
        if isinstance(group_key, str) and group_key:
            groups = {group_key: parsed}
        else:
            groups = {a.fingerprint: [a] for a in parsed}
        summary: dict[str, list[int]] = {"opened": [], "updated": [], "resolved": []}
        with self.store.transaction() as conn:
            for key, members in groups.items():
                self._group(conn, key, members, payload, now, summary)
        if any(summary.values()):
            log.info("webhook: opened %s, updated %s, resolved %s",
                     summary["opened"], summary["updated"], summary["resolved"])  # fmt: skip
        self.wake.set()
        return summary

    def _group(
        self,
        conn: sqlite3.Connection,
        key: str,
        members: list[_Alert],
        payload: Mapping[str, Any],
        now: float,
        summary: dict[str, list[int]],
    ) -> None:
        incident = self.store.open_incident(key)
        last = incident or self.store.last_incident(key)
        history = last.alerts if last else {}
        window = self.oncall.replay_horizon()
        self._forget_early(now)
        fresh = [
            a
            for a in members
            if not _stale(a, history.get(a.fingerprint), now, window)
            and not self._early_replay(key, a)
        ]
        if len(fresh) < len(members):
            log.info("webhook: ignored %d replayed alert(s) of %s older than what is recorded",
                     len(members) - len(fresh), last.id if last else "?")  # fmt: skip
        known = dict(incident.alerts) if incident else {}
        for alert in fresh:
            known[alert.fingerprint] = alert.record(now)
        firing = [a for a in fresh if a.status == "firing"]
        if not fresh:
            return  # only replays
        if incident is not None:
            if any(a["status"] == "firing" for a in known.values()):
                annotations = firing[0].annotations if firing else incident.annotations
                self.store.update_alerts(conn, incident.id, annotations, known)
                summary["updated"].append(incident.id)
                return
            conn.execute(
                "UPDATE incidents SET status = 'resolved', resolved_at = ?, next_at = NULL, "
                "alerts = ? WHERE id = ?",
                (now, _json(known), incident.id),
            )
            for person in self.store.paged_people(conn, incident.id):
                self.store.add_page(conn, "resolved", person, now, incident=incident.id)
            summary["resolved"].append(incident.id)
            return
        if not firing:
            # resolved news of an incident we never opened (or already closed): remembered
            # a while, in case its firing was delayed behind it
            for alert in fresh:
                ended = alert.ends if alert.ends is not None else alert.starts
                if ended is not None and len(self._early) < MAX_EARLY:
                    self._early[(key, alert.fingerprint)] = (ended, now)
            return
        worst = min(firing, key=lambda a: _SEVERITY_ORDER.get(a.labels.get("severity", ""), 9))
        common = payload.get("commonLabels")
        labels = dict(worst.labels)
        if len(firing) > 1 and isinstance(common, dict) and "alertname" in common:
            labels = {str(k): str(v) for k, v in common.items()}
            labels.setdefault("severity", worst.labels.get("severity", "warning"))
        serious = labels.get("severity", "") in self.oncall.incident_reports.serious
        new_id = self.store.open(
            conn, key, labels, worst.annotations, known, serious=serious, now=now
        )
        if serious:
            reports = self.oncall.incident_reports
            self.store.start_clocks(
                conn, new_id, [("initial", now + reports.initial), ("full", now + reports.full)]
            )
        summary["opened"].append(new_id)

    def _forget_early(self, now: float) -> None:
        window = self.oncall.replay_horizon()
        for held, (_, received) in list(self._early.items()):
            if now - received > window or received > now:
                del self._early[held]

    def _early_replay(self, key: str, alert: _Alert) -> bool:
        """Whether ``alert`` fires an episode whose resolution came first (and recently)."""
        held = self._early.get((key, alert.fingerprint))
        if held is None or alert.status != "firing" or alert.starts is None:
            return False
        return alert.starts <= held[0]

    # -- bookkeeping ------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Run every escalation step that is due and every report reminder that is due."""
        for incident in self.store.due(now):
            self._step(incident, now)
        self._reminders(now)
        self._page_again(now)

    def _step(self, incident: Incident, now: float) -> None:
        steps = self.oncall.escalation.steps
        step = steps[incident.step % len(steps)]
        at = datetime.fromtimestamp(now, self.oncall.zone())
        person = rota.resolve_step(self.oncall, step.notify, at)
        following, round_ = incident.step + 1, incident.round
        if following >= len(steps):
            following, round_ = 0, round_ + 1
        more = following != 0 or (
            self.oncall.escalation.repeat and round_ < self.oncall.escalation.max_rounds
        )
        # nobody to page at this step: go straight on to the next one
        wait = step.wait if person is not None else 0.0
        with self.store.transaction() as conn:
            changed = conn.execute(
                "UPDATE incidents SET step = ?, round = ?, next_at = ? "
                "WHERE id = ? AND status = 'firing' AND step = ? AND round = ?",
                (following, round_, now + wait if more else None,
                 incident.id, incident.step, incident.round),
            ).rowcount  # fmt: skip
            if not changed:
                return  # acknowledged or resolved meanwhile
            self.store.add_page(
                conn,
                "page",
                person,
                now,
                incident=incident.id,
                step=incident.step,
                round_=incident.round,
                detail=step.notify,
                failed=None if person is not None else f"nobody on call for '{step.notify}'",
            )
        self.metrics.escalation_step()
        if person is None:
            log.warning("incident %d step %d: nobody on call for %s; escalating at once",
                        incident.id, incident.step + 1, step.notify)  # fmt: skip
        else:
            log.info("incident %d step %d (round %d): paging %s (%s)",
                     incident.id, incident.step + 1, incident.round + 1, person,
                     step.notify)  # fmt: skip

    def _reminders(self, now: float) -> None:
        before = sorted(self.oncall.incident_reports.remind_before, reverse=True)
        for clock in self.store.clocks(reminded_below=len(before)):
            passed = sum(1 for lead in before if now >= clock.due_at - lead)
            if passed <= clock.reminded:
                continue
            with self.store.transaction() as conn:
                self.store.mark_reminded(conn, clock, passed)
                self.store.add_page(
                    conn,
                    "reminder",
                    self._reminder_person(now),
                    now,
                    incident=clock.incident,
                    detail=clock.kind,
                )

    def _reminder_person(self, now: float) -> str | None:
        if self.oncall.team_lead:
            return self.oncall.team_lead
        at = datetime.fromtimestamp(now, self.oncall.zone())
        return rota.resolve_step(self.oncall, self.oncall.escalation.steps[0].notify, at)

    # -- delivery ---------------------------------------------------------------------------

    def deliver_pending(self) -> None:
        """Record what was delivered but not yet recorded, then start delivering every
        pending page not already on its way (nor delivered: a page whose record failed is
        still ``pending`` in the database, and must not go out again)."""
        self._retry_records()
        for page in self.store.pending():
            if page.id in self._in_flight or page.id in self._unrecorded:
                continue
            self._in_flight.add(page.id)
            task = asyncio.create_task(self._deliver(page))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) for deliveries in flight, e.g. before the service stops."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def _deliver(self, page: Page) -> None:
        try:
            person = self.oncall.person(page.person) if page.person else None
            message = self._message(page, self.clock()) if person else None
            if person is None or message is None:
                why = "nothing to send" if person else f"{page.person} is not in oncall.people"
                self._record(page.id, Delivered(False, None, why))
                return
            result = await deliver(person, message, self.oncall.delivery)
            self.metrics.page_finished(page.kind, result.channel, result.ok)
            self._record(page.id, result)
            if page.kind == "page" and not result.ok:
                self._page_failed(page, self.clock())
            log.info("page %d (%s, incident %s) to %s: %s via %s", page.id, page.kind,
                     page.incident, page.person, "sent" if result.ok else "FAILED",
                     result.channel)  # fmt: skip
        except sqlite3.Error as exc:  # building the message read the database
            self._db_error("reading a page's incident", exc)
        finally:
            self._in_flight.discard(page.id)
            # a retry that got through, or had nothing to send: its number is no longer
            # needed (a failed one was taken by _page_failed, and its next try is a new page)
            self._retry_of.pop(page.id, None)

    def _page_failed(self, page: Page, now: float) -> None:
        """Every channel of the person failed: the next step is due now (as when nobody is
        on call), and the person is paged again later, at most :data:`PAGE_RETRIES` times."""
        tries = self._retry_of.pop(page.id, 0)
        if tries < PAGE_RETRIES:
            at = now + PAGE_RETRY_FIRST * 2**tries
            self._retries.append(_Retry(page, tries + 1, at))
        if tries or page.incident is None or page.step is None or page.round is None:
            return  # a retry: the escalation moved on when the first page failed
        steps = len(self.oncall.escalation.steps)
        following, round_ = page.step + 1, page.round
        if following >= steps:
            following, round_ = 0, round_ + 1
        try:
            with self.store.transaction() as conn:
                moved = conn.execute(
                    "UPDATE incidents SET next_at = ? WHERE id = ? AND status = 'firing' "
                    "AND step = ? AND round = ? AND next_at > ?",
                    (now, page.incident, following, round_, now),
                ).rowcount
        except sqlite3.Error as exc:  # the step falls due at its usual time instead
            self._db_error(f"escalating incident {page.incident} past a failed page", exc)
            return
        if moved:
            log.warning("incident %d: paging %s failed on every channel; escalating at once "
                        "(retrying %s later)", page.incident, page.person, page.person)  # fmt: skip
            self.wake.set()

    def _page_again(self, now: float) -> None:
        """Write the retries that are due, for incidents still firing."""
        due = [r for r in self._retries if r.at <= now]
        for retry in due:
            page = retry.page
            incident = self.store.incident(page.incident) if page.incident is not None else None
            if incident is not None and incident.status == "firing":
                with self.store.transaction() as conn:
                    again = self.store.add_page(conn, "page", page.person, now,
                                                incident=page.incident, step=page.step,
                                                round_=page.round, detail=page.detail)  # fmt: skip
                self._retry_of[again] = retry.tries
                log.info("incident %d: paging %s again (retry %d of %d)", incident.id,
                         page.person, retry.tries, PAGE_RETRIES)  # fmt: skip
            self._retries.remove(retry)

    def _record(self, page_id: int, result: Delivered) -> None:
        """Write a page's outcome; if the database refuses, keep it in memory (so the page
        is not delivered again) and retry from :meth:`deliver_pending` with backoff."""
        pending = _Unrecorded(result, self.clock())
        self._unrecorded[page_id] = pending
        self._try_record(page_id, pending)

    def _try_record(self, page_id: int, pending: _Unrecorded) -> None:
        result = pending.result
        try:
            self.store.finish_page(page_id, ok=result.ok, channel=result.channel,
                                   error=result.error, now=pending.done_at)  # fmt: skip
        except sqlite3.Error as exc:
            pending.tries += 1
            backoff = min(RECORD_RETRY_MAX, RECORD_RETRY_FIRST * 2 ** (pending.tries - 1))
            pending.retry_at = time.monotonic() + backoff
            self._db_error(f"recording page {page_id}", exc)
            return
        del self._unrecorded[page_id]
        if pending.tries:
            log.info("page %d recorded after %d failed tries", page_id, pending.tries)
        self._db_ok()

    def _retry_records(self) -> None:
        now = time.monotonic()
        for page_id, pending in list(self._unrecorded.items()):
            if pending.retry_at <= now:
                self._try_record(page_id, pending)

    def flush_records(self) -> None:
        """One last try to record what was delivered (the service is stopping); pages that
        still cannot be recorded are named: they go out again after the restart."""
        for page_id, pending in list(self._unrecorded.items()):
            self._try_record(page_id, pending)
        if self._unrecorded:
            log.error("stopping with delivered pages %s unrecorded: they will be sent again "
                      "after a restart", sorted(self._unrecorded))  # fmt: skip

    def _db_error(self, what: str, exc: sqlite3.Error) -> None:
        """A database error the engine survives: logged at ERROR once while the database
        keeps failing (not every tick), at DEBUG after that."""
        self.metrics.database_error(exc)
        if self._db_failing is None:
            log.error("on-call database error while %s: %s (retrying; delivered pages are "
                      "remembered and not sent again)", what, exc)  # fmt: skip
            self._db_failing = what
        else:
            log.debug("on-call database error while %s: %s", what, exc)

    def _db_ok(self) -> None:
        if self._db_failing is not None and not self._unrecorded:
            log.warning("on-call database writable again (it failed while %s)", self._db_failing)
            self._db_failing = None

    def health(self) -> list[str]:
        """Why the service is not well ([] if it is): the database does not answer, the
        loop has stopped ticking, or delivered pages wait to be recorded."""
        problems = []
        broken = self.store.healthy()
        if broken:
            problems.append(broken)
        if self._last_tick_mono is None:
            problems.append("the escalation loop has not ticked yet")
        else:
            late = time.monotonic() - self._last_tick_mono
            if late > 3 * self.oncall.tick + 10:
                problems.append(f"the escalation loop last ticked {late:.0f} s ago")
        if not self.last_tick_ok:
            problems.append(f"the last escalation tick failed ({self._db_failing or 'error'})")
        if self._unrecorded:
            problems.append(f"{len(self._unrecorded)} delivered page(s) not yet recorded "
                            f"(database: {self._db_failing})")  # fmt: skip
        return problems

    def _message(self, page: Page, now: float) -> messages.Message | None:
        incident = self.store.incident(page.incident) if page.incident is not None else None
        person = self.oncall.person(page.person) if page.person else None
        if incident is None or person is None:
            return None
        lang = person.lang or self.oncall.lang
        zone = self.oncall.zone()
        if page.kind == "page":
            until = int(now + self.oncall.link_ttl)
            link = self.signer.link(self.base_url, incident.id, incident.nonce, person.id, until)
            # the step being paged, not the incident's next one
            shown = replace(incident, step=page.step or 0, round=page.round or 0)
            return messages.page(shown, lang, zone, reason=page.detail, ack_link=link,
                                 until=until)  # fmt: skip
        if page.kind == "resolved":
            return messages.resolved(incident, lang, zone)
        if page.kind == "reminder":
            clock = self.store.clock(incident.id, page.detail)
            if clock is None:
                return None
            return messages.reminder(incident, clock.kind, clock.due_at, now, lang, zone)
        return None

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = self.clock()
            try:
                self.tick(now)
                self.deliver_pending()
            except sqlite3.Error as exc:
                self.last_tick_ok = False
                self._db_error("running the escalation tick", exc)
            except Exception:
                self.last_tick_ok = False
                log.exception("escalation tick failed; trying again at the next tick")
            else:
                self.last_tick_ok = True
                self.last_good_tick = now
                self._db_ok()
            self.last_tick, self._last_tick_mono = now, time.monotonic()
            if self.after_tick is not None:
                self.after_tick(now)
            wake = asyncio.create_task(self.wake.wait())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait(
                {wake, stopping}, timeout=self._sleep(), return_when=asyncio.FIRST_COMPLETED
            )
            wake.cancel()
            stopping.cancel()
            self.wake.clear()

    def _sleep(self) -> float:
        """Until the next due step, at most one tick."""
        tick = self.oncall.tick
        try:
            due = self.store.next_due()
        except sqlite3.Error:
            return tick
        return tick if due is None else max(0.05, min(tick, due - self.clock()))


_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class _Alert:
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    fingerprint: str
    starts: float | None
    ends: float | None  # None: Alertmanager's zero time (still firing)
    sent_starts: float | None = None  # startsAt as sent, before clamping: the episode's name

    def record(self, received: float) -> dict[str, Any]:
        """What an incident keeps of it (``Incident.alerts``), with when it was received."""
        return {"status": self.status, "labels": self.labels, "startsAt": self.starts,
                "endsAt": self.ends, "received": received,
                "startsAtSent": self.sent_starts}  # fmt: skip


def _clamped(alert: _Alert, now: float) -> _Alert:
    """``alert`` with times in the future (a skewed clock) moved back to ``now``, the time
    of receipt: an incident opened by a firing from the future must be resolvable now."""
    starts = None if alert.starts is None else min(alert.starts, now)
    ends = None if alert.ends is None else min(alert.ends, now)
    return replace(alert, starts=starts, ends=ends, sent_starts=alert.starts)


def _stale(alert: _Alert, known: Mapping[str, Any] | None, now: float, window: float) -> bool:
    """Whether ``alert`` is older news than ``known``, the record of its fingerprint.

    A "firing" that started no later than the recorded resolution ended is a replay of the
    episode that ended, but only within ``window`` of receiving that resolution: later, it
    may be a real re-fire with the same start (Alertmanager resolved it by timeout), and a
    page too many beats none. A firing older than the firing held is stale. A "resolved"
    that ended before the held firing started resolves an earlier episode. Without times (a
    hand-made payload, a record of an older portal-ops) nothing is stale. A "resolved" with
    the very ``startsAt`` the held firing was sent with ends that episode, whenever it says
    it ended (a clock ahead sent the firing from the future)."""
    if known is None or alert.starts is None:
        return False
    held_starts, held_ends = known.get("startsAt"), known.get("endsAt")
    if alert.status == "firing":
        if known.get("status") == "resolved" and held_ends is not None:
            received = known.get("received")
            recent = isinstance(received, int | float) and 0 <= now - received <= window
            return recent and alert.starts <= held_ends
        return held_starts is not None and alert.starts < held_starts
    sent = known.get("startsAtSent", held_starts)
    if alert.sent_starts is not None and alert.sent_starts == sent:
        return False  # the resolution of the very episode held (the same startsAt as sent)
    ended = alert.ends if alert.ends is not None else alert.starts
    return known.get("status") == "firing" and held_starts is not None and ended < held_starts


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


def _stamp(value: Any, name: str) -> float | None:
    """An alert's ``startsAt``/``endsAt`` as seconds since the epoch; None when absent or
    Alertmanager's zero time (year 1: not ended)."""
    if value is None or value == "":
        return None
    match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"alert {name} is not an RFC 3339 time")
    day, fraction, zone = match.groups()
    micro = ((fraction or "") + "000000")[:6]
    try:
        at = datetime.fromisoformat(f"{day}.{micro}{'+00:00' if zone == 'Z' else zone}")
        if at.year <= 1:
            return None
        return at.astimezone(UTC).timestamp()
    except (ValueError, OverflowError):  # 2026-13-01, +99:99, year 9999 at -14:00
        raise ValueError(f"alert {name} is not a valid time") from None


def _alert_fields(alert: Any) -> _Alert:
    if not isinstance(alert, dict):
        raise ValueError("an alert is not an object")
    status = alert.get("status")
    labels = alert.get("labels")
    annotations = alert.get("annotations") or {}
    fingerprint = alert.get("fingerprint")
    if status not in ("firing", "resolved"):
        raise ValueError(f"alert status {status!r} is neither 'firing' nor 'resolved'")
    if not isinstance(labels, dict) or not isinstance(annotations, dict):
        raise ValueError("alert labels and annotations must be objects")
    if not isinstance(fingerprint, str) or not fingerprint:
        # Alertmanager always sends one; a hand-made payload gets one from its labels
        fingerprint = _json(dict(sorted(labels.items())))
    return _Alert(
        status,
        {str(k): str(v) for k, v in labels.items()},
        {str(k): str(v) for k, v in annotations.items()},
        fingerprint,
        _stamp(alert.get("startsAt"), "startsAt"),
        _stamp(alert.get("endsAt"), "endsAt"),
    )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
