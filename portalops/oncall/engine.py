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
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from portalops.oncall import messages, rota
from portalops.oncall.config import Oncall
from portalops.oncall.metrics import OncallMetrics
from portalops.oncall.notify import deliver
from portalops.oncall.secrets import LinkSigner
from portalops.oncall.store import Incident, Page, Store

log = logging.getLogger(__name__)

#: Seconds since the epoch; :data:`time.time` in service, a clock the test moves in tests.
Clock = Callable[[], float]
#: Called after each tick of :meth:`Escalator.run` with the time the tick ran at.
TickHook = Callable[[float], None]


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
        parsed = [_alert_fields(a) for a in alerts]
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
        known = dict(incident.alerts) if incident else {}
        for alert in members:
            known[alert.fingerprint] = {"status": alert.status, "labels": alert.labels}
        firing = [a for a in members if a.status == "firing"]
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
            return  # resolved news of an incident we never opened (or already closed)
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

    # -- bookkeeping ------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Run every escalation step that is due and every report reminder that is due."""
        for incident in self.store.due(now):
            self._step(incident, now)
        self._reminders(now)

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
        """Start delivering every pending page not already on its way."""
        for page in self.store.pending():
            if page.id in self._in_flight:
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
                self.store.finish_page(page.id, ok=False, channel=None, error=why,
                                       now=self.clock())  # fmt: skip
                return
            result = await deliver(person, message, self.oncall.delivery)
            self.metrics.page_finished(page.kind, result.channel, result.ok)
            self.store.finish_page(
                page.id, ok=result.ok, channel=result.channel, error=result.error, now=self.clock()
            )
            log.info("page %d (%s, incident %s) to %s: %s via %s", page.id, page.kind,
                     page.incident, page.person, "sent" if result.ok else "FAILED",
                     result.channel)  # fmt: skip
        finally:
            self._in_flight.discard(page.id)

    def _message(self, page: Page, now: float) -> messages.Message | None:
        incident = self.store.incident(page.incident) if page.incident is not None else None
        person = self.oncall.person(page.person) if page.person else None
        if incident is None or person is None:
            return None
        lang = person.lang or self.oncall.lang
        zone = self.oncall.zone()
        if page.kind == "page":
            until = int(now + self.oncall.link_ttl)
            link = self.signer.link(self.base_url, incident.id, person.id, until)
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
            except Exception:
                log.exception("escalation tick failed; trying again at the next tick")
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
        due = self.store.next_due()
        tick = self.oncall.tick
        return tick if due is None else max(0.05, min(tick, due - self.clock()))


_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class _Alert:
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    fingerprint: str


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
    )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
