"""The dead man's switch: page when the always-firing ``Watchdog`` alert stops arriving.

Prometheus fires ``Watchdog`` (``expr: vector(1)``) all the time; Alertmanager sends it to the
on-call service on a route of its own every ``oncall.watchdog.repeat_interval``
(:mod:`portalops.oncall.amconfig`). Each firing arrival is recorded here, never as an
incident (a resolved Watchdog is no sign of life). When none arrived for
``oncall.watchdog.missing_after``, Prometheus, Alertmanager or the path between them (a rule
file that no longer loads, a token Alertmanager cannot read) is down and no alert at all can
reach anyone: the service pages through its own channels (apprise, not Alertmanager, no
database needed), and sends a notice when the Watchdog is back.

An arrival counts only while the service itself can record incidents
(:meth:`Escalator.health` is empty): a Watchdog reaching a service whose database refuses
writes proves nothing, so the switch pages "monitoring is blind" with the service's reason.

The blind page must not be lost: a person whose every channel failed is paged again with
backoff (:data:`RETRY_FIRST` doubling up to :data:`RETRY_MAX`) until delivered, and the page
walks the escalation chain (``watchdog.notify`` or the first step's target, then the later
steps' targets) on the steps' waits while the Watchdog stays away, at once past a person it
could not reach. "Monitoring is back" goes only to those who received the blind page.

The switch is armed by the first arrival (a service on a host without Prometheus stays
quiet), or at the service's start with ``oncall.watchdog.from_start``. The last arrival, the
open outage and who received its page are kept in ``watchdog.json`` (0600, beside the
database, replaced atomically), so a restart during an outage stays armed: it pages if the
outage was not paged to anyone yet, and does not page again those who already know.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from portalops.core.atomic import write_atomic
from portalops.oncall import rota
from portalops.oncall.config import Oncall, format_duration
from portalops.oncall.messages import Message
from portalops.oncall.metrics import OncallMetrics
from portalops.oncall.notify import Delivered, deliver

log = logging.getLogger(__name__)

ALERTNAME = "Watchdog"
#: how often the switch looks at the clock, at most (seconds)
CHECK_EVERY = 5.0
#: a blind page that failed on every channel is sent again after this, doubling, capped
RETRY_FIRST = 30.0
RETRY_MAX = 300.0
#: the switch's state file, beside the database
STATE_FILE = "watchdog.json"

Sender = Callable[[str, Message], Awaitable[Delivered]]
Health = Callable[[], list[str]]

_TEXT = {
    "vi": {
        "blind_title": "[NGHIÊM TRỌNG] Hệ thống giám sát bị mù: không nhận được Watchdog",
        "blind_body": (
            "Dịch vụ trực không nhận được cảnh báo Watchdog từ Alertmanager trong {missing} "
            "(lần cuối: {last}). Prometheus, Alertmanager hoặc đường nối giữa chúng đang "
            "ngừng hoạt động: mọi cảnh báo khác (cổng thông tin, sao lưu, máy chủ) lúc này "
            "KHÔNG đến được ai. Kiểm tra ngay trên máy giám sát: service prometheus status, "
            "service prometheus-alertmanager status, và tệp token của webhook.\n"
            "Runbook: docs/runbooks/monitoring.md#watchdog"
        ),
        "service_title": "[NGHIÊM TRỌNG] Hệ thống giám sát bị mù: dịch vụ trực không ghi được "
        "cảnh báo",
        "service_body": (
            "Dịch vụ trực không ghi được cảnh báo vào cơ sở dữ liệu ({reason}); không có "
            "Watchdog hợp lệ trong {missing} (lần cuối: {last}): mọi cảnh báo khác lúc này "
            "KHÔNG đến được ai. "
            "Kiểm tra ngay: curl /healthz của dịch vụ trực, tệp cơ sở dữ liệu và ổ đĩa.\n"
            "Runbook: docs/runbooks/monitoring.md#watchdog"
        ),
        "back_title": "[ĐÃ KHẮC PHỤC] Hệ thống giám sát hoạt động trở lại (Watchdog)",
        "back_body": (
            "Cảnh báo Watchdog đã đến trở lại lúc {now} sau {gap} gián đoạn. Các cảnh báo "
            "phát sinh trong thời gian đó có thể đến muộn: xem Alertmanager và Prometheus."
        ),
        "never": "chưa từng nhận",
    },
    "en": {
        "blind_title": "[CRITICAL] Monitoring is blind: the Watchdog alert stopped arriving",
        "blind_body": (
            "The on-call service has had no Watchdog alert from Alertmanager for {missing} "
            "(last: {last}). Prometheus, Alertmanager or the path between them is down: no "
            "other alert (portals, backups, hosts) can reach anyone now. Check on the "
            "monitoring host: service prometheus status, service prometheus-alertmanager "
            "status, and the webhook token file.\n"
            "Runbook: docs/runbooks/monitoring.md#watchdog"
        ),
        "service_title": "[CRITICAL] Monitoring is blind: the on-call service cannot record alerts",
        "service_body": (
            "The on-call service cannot record alerts ({reason}); no Watchdog counted for "
            "{missing} (last: {last}): no other alert can reach anyone now. Check at "
            "once: the on-call service's /healthz, its database file and disk.\n"
            "Runbook: docs/runbooks/monitoring.md#watchdog"
        ),
        "back_title": "[RESOLVED] Monitoring is back (Watchdog arrives again)",
        "back_body": (
            "The Watchdog alert arrived again at {now} after a gap of {gap}. Alerts raised "
            "meanwhile may arrive late: look at Alertmanager and Prometheus."
        ),
        "never": "never",
    },
}


def split(payload: Mapping[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """(number of *firing* Watchdog alerts in ``payload``, the payload without any Watchdog;
    None if nothing else is left). A resolved Watchdog (Prometheus stopped evaluating it) is
    taken out but not counted: it is no sign of life. Anything that is not an Alertmanager
    payload is passed on untouched, for the engine to refuse."""
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        return 0, dict(payload)
    rest = [a for a in alerts if not _is_watchdog(a)]
    if len(rest) == len(alerts):
        return 0, dict(payload)
    count = sum(1 for a in alerts if _is_watchdog(a) and a.get("status") == "firing")
    return count, ({**payload, "alerts": rest} if rest else None)


def _is_watchdog(alert: object) -> bool:
    if not isinstance(alert, dict):
        return False
    labels = alert.get("labels")
    return isinstance(labels, dict) and labels.get("alertname") == ALERTNAME


def state_path(database: Path) -> Path:
    """Where the switch keeps its state: beside the on-call database."""
    return database.parent / STATE_FILE


@dataclass
class _Retry:
    tries: int
    at: float


@dataclass
class Switch:
    """The switch's state over one service run; :meth:`check` is called on the service's
    clock, so a test moves time instead of waiting ``missing_after``."""

    oncall: Oncall
    metrics: OncallMetrics
    started: float
    send: Sender | None = None
    health: Health | None = None
    """What keeps the service from recording incidents ([] if nothing): the escalator's."""
    state: Path | None = None
    last: float | None = None
    armed: float | None = None  # an arrival that did not count (service unwell) still arms
    missing: bool = False
    since: float | None = None  # when the open outage was paged
    reason: str = ""  # the service's own problems when it was
    received: set[str] = field(default_factory=set)
    paged: set[str] = field(default_factory=set)  # paged this outage (delivered or not)
    step: int = 0  # the next escalation step of the blind page
    next_step_at: float | None = None
    retries: dict[str, _Retry] = field(default_factory=dict)
    outage: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def load(
        cls, oncall: Oncall, metrics: OncallMetrics, started: float, state: Path, **kw: Any
    ) -> Switch:
        """A switch armed from ``state`` if a previous run left one (unreadable: a fresh one,
        said in the log)."""
        switch = cls(oncall, metrics, started, state=state, **kw)
        try:
            doc = json.loads(state.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return switch
        except (OSError, ValueError) as exc:
            log.warning("watchdog: ignoring unreadable state %s: %s", state, exc)
            return switch
        if not isinstance(doc, dict):
            return switch
        switch.last = _number(doc.get("last"))
        switch.armed = _number(doc.get("armed"))
        received = doc.get("received")
        people = {str(p) for p in received} if isinstance(received, list) else set()
        if doc.get("missing") is True and people:
            # paged before the restart: those who know are not paged again; no more steps
            switch.missing, switch.received, switch.paged = True, people, set(people)
            switch.since, switch.reason = _number(doc.get("since")), str(doc.get("reason", ""))
            switch.step = len(switch._chain())
            metrics.watchdog_missing.set(1)
        if switch.last is not None:
            metrics.watchdog_arrival.set(switch.last)
        log.info("watchdog: armed from %s (last arrival %s, outage open: %s)", state,
                 switch.last, switch.missing)  # fmt: skip
        return switch

    def armed_since(self) -> float | None:
        if self.last is not None:
            return self.last
        if self.armed is not None:
            return self.armed
        return self.started if self.oncall.watchdog.from_start else None

    def problems(self) -> list[str]:
        if self.health is None:
            return []
        try:
            return self.health()
        except Exception as exc:  # a health probe that breaks is a problem in itself
            return [f"health check failed: {type(exc).__name__}"]

    def arrived(self, now: float) -> None:
        """A firing Watchdog notification arrived (Alertmanager's webhook)."""
        problems = self.problems()
        if problems:
            if self.armed_since() is None:
                self.armed = now
                self._save()
            log.warning("watchdog: arrival not counted, the service cannot record alerts: %s",
                        "; ".join(problems))  # fmt: skip
            return
        gap = now - (self.armed_since() or now)
        self.last = now
        self.metrics.watchdog_arrival.set(now)
        if self.missing:
            self.missing = False
            self.metrics.watchdog_missing.set(0)
            log.warning("watchdog: the Watchdog alert arrives again after %.0f s", gap)
            if self.received:
                for person_id in sorted(self.received):
                    self._page(person_id, "back", now, gap)
            else:
                log.error("watchdog: the blind page reached nobody; no 'monitoring is back'")
            self.received, self.retries, self.next_step_at = set(), {}, None
        self._save()

    def check(self, now: float) -> bool:
        """Page if the Watchdog is overdue and this outage has not paged yet (True if so);
        during an outage, retry undelivered blind pages and walk the escalation chain."""
        since = self.armed_since()
        if not self.oncall.watchdog.enabled or since is None:
            return False
        if self.missing:
            self._follow_up(now)
            return False
        if now - since <= self.oncall.watchdog.missing_after:
            return False
        problems = self.problems()
        self.missing, self.since, self.reason = True, now, "; ".join(problems)
        self.outage += 1
        self.received, self.paged, self.retries, self.step = set(), set(), {}, 0
        self.metrics.watchdog_missing.set(1)
        log.error("watchdog: no Watchdog alert that counted for %.0f s: monitoring is blind%s; "
                  "paging", now - since, f" ({self.reason})" if self.reason else "")  # fmt: skip
        self._next_step(now)
        self._save()
        return True

    async def run(self, stop: asyncio.Event, clock: Callable[[], float]) -> None:
        """Check every few seconds until ``stop``; then wait (bounded) for pages in flight."""
        every = min(CHECK_EVERY, max(0.1, self.oncall.watchdog.missing_after / 10))
        while not stop.is_set():
            try:
                self.check(clock())
            except Exception:
                log.exception("watchdog check failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.oncall.delivery.timeout)

    # -- the blind page's escalation ----------------------------------------------------------

    def _chain(self) -> list[tuple[str, float]]:
        """(target, wait) in order: ``watchdog.notify`` (else the first step), then the later
        escalation steps."""
        steps = self.oncall.escalation.steps
        first = self.oncall.watchdog.notify or steps[0].notify
        return [(first, steps[0].wait)] + [(s.notify, s.wait) for s in steps[1:]]

    def _next_step(self, now: float) -> None:
        """Page the chain's next target; the one after falls due after this one's wait."""
        chain = self._chain()
        while self.step < len(chain):
            target, wait = chain[self.step]
            self.step += 1
            self.next_step_at = now + wait if self.step < len(chain) else None
            person_id = rota.resolve_step(
                self.oncall, target, datetime.fromtimestamp(now, self.oncall.zone())
            )
            if person_id is None:
                log.error("watchdog: nobody on call for %s; next step at once", target)
                self.metrics.nobody_on_call("watchdog")
                continue
            if person_id not in self.paged:
                self.paged.add(person_id)
                self._page(person_id, "blind", now, now - (self.armed_since() or now))
            return
        self.next_step_at = None

    def _follow_up(self, now: float) -> None:
        if self.next_step_at is not None and now >= self.next_step_at:
            self._next_step(now)
        for person_id, retry in list(self.retries.items()):
            if now >= retry.at and person_id not in self.received:
                retry.at = float("inf")  # in flight; the result reschedules it
                self._page(person_id, "blind", now, now - (self.armed_since() or now))

    # -- paging -----------------------------------------------------------------------------

    def _page(self, person_id: str, what: str, now: float, gap: float) -> None:
        message = self.message(what, person_id, now, gap)
        task = asyncio.get_running_loop().create_task(
            self._send(person_id, what, message, now, self.outage)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self, person_id: str, what: str, message: Message, now: float, outage: int
    ) -> None:
        try:
            if self.send is not None:
                result = await self.send(person_id, message)
            else:
                person = self.oncall.person(person_id)
                if person is None:
                    result = Delivered(False, None, f"{person_id} is not in oncall.people")
                else:
                    result = await deliver(person, message, self.oncall.delivery)
        except Exception as exc:  # a page that cannot go out is counted, never fatal
            log.exception("watchdog page to %s failed", person_id)
            result = Delivered(False, None, type(exc).__name__)
        self.metrics.page_finished("watchdog", result.channel, result.ok)
        log.info("watchdog %s page to %s: %s via %s", what, person_id,
                 "sent" if result.ok else "FAILED", result.channel)  # fmt: skip
        if what == "blind" and self.missing and outage == self.outage:
            self._blind_done(person_id, result.ok, now)

    def _blind_done(self, person_id: str, ok: bool, now: float) -> None:
        if ok:
            self.received.add(person_id)
            self.retries.pop(person_id, None)
            self._save()
            return
        tries = self.retries[person_id].tries if person_id in self.retries else 0
        delay = min(RETRY_MAX, RETRY_FIRST * 2**tries)
        self.retries[person_id] = _Retry(tries + 1, now + delay)
        log.warning("watchdog: blind page to %s undelivered; again in %.0f s%s", person_id,
                    delay, "; escalating at once" if tries == 0 else "")  # fmt: skip
        if tries == 0 and self.next_step_at is not None:
            self.next_step_at = now  # nobody reached: the next step need not wait

    def _save(self) -> None:
        """Keep what a restart needs; a state file that cannot be written is logged, and the
        switch works on in memory."""
        if self.state is None:
            return
        doc = {"last": self.last, "armed": self.armed, "missing": self.missing,
               "since": self.since, "reason": self.reason,
               "received": sorted(self.received)}  # fmt: skip
        try:
            write_atomic(self.state, json.dumps(doc).encode(), mode=0o600)
        except OSError as exc:
            log.error("watchdog: cannot keep state in %s: %s", self.state, exc)

    def message(self, what: str, person_id: str, now: float, gap: float) -> Message:
        person = self.oncall.person(person_id)
        lang = (person.lang if person else None) or self.oncall.lang
        text = _TEXT[lang]
        zone = self.oncall.zone()
        if what == "blind" and self.reason:
            what = "service"
        last = (
            datetime.fromtimestamp(self.last, zone).strftime("%H:%M:%S %d/%m/%Y")
            if self.last is not None
            else text["never"]
        )
        fields = {
            "missing": format_duration(gap),
            "gap": format_duration(gap),
            "last": last,
            "now": datetime.fromtimestamp(now, zone).strftime("%H:%M:%S %d/%m/%Y"),
            "reason": self.reason,
        }
        title, body = text[f"{what}_title"], text[f"{what}_body"].format(**fields)
        return Message(_nfc(title), _nfc(body + "\n"))


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)
