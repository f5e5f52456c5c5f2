"""The dead man's switch: page when the always-firing ``Watchdog`` alert stops arriving.

Prometheus fires ``Watchdog`` (``expr: vector(1)``) all the time; Alertmanager sends it to the
on-call service on a route of its own every ``oncall.watchdog.repeat_interval``
(:mod:`portalops.oncall.amconfig`). Each arrival is recorded here, never as an incident. When
none arrived for ``oncall.watchdog.missing_after``, Prometheus, Alertmanager or the path
between them (a rule file that no longer loads, a token Alertmanager cannot read) is down and
no alert at all can reach anyone: the service pages the on-call person through its own
channels (apprise, not Alertmanager), once per outage, and sends a notice when the Watchdog
is back.

The switch is armed by the first arrival (a service on a host without Prometheus stays
quiet), or at the service's start with ``oncall.watchdog.from_start`` (then a service
started while Prometheus is already down pages too). The state is in memory: a restart
during an outage re-arms the switch, and pages again only if ``from_start``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from portalops.oncall import rota
from portalops.oncall.config import Oncall, format_duration
from portalops.oncall.messages import Message
from portalops.oncall.metrics import OncallMetrics
from portalops.oncall.notify import Delivered, deliver

log = logging.getLogger(__name__)

ALERTNAME = "Watchdog"
#: how often the switch looks at the clock, at most (seconds)
CHECK_EVERY = 5.0

Sender = Callable[[str, Message], Awaitable[Delivered]]

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
        "back_title": "[RESOLVED] Monitoring is back (Watchdog arrives again)",
        "back_body": (
            "The Watchdog alert arrived again at {now} after a gap of {gap}. Alerts raised "
            "meanwhile may arrive late: look at Alertmanager and Prometheus."
        ),
        "never": "never",
    },
}


def split(payload: Mapping[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """(number of Watchdog alerts in ``payload``, the payload without them; None if nothing
    else is left). Anything that is not an Alertmanager payload is passed on untouched, for
    the engine to refuse."""
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        return 0, dict(payload)
    rest = [a for a in alerts if not _is_watchdog(a)]
    count = len(alerts) - len(rest)
    if count == 0:
        return 0, dict(payload)
    return count, ({**payload, "alerts": rest} if rest else None)


def _is_watchdog(alert: object) -> bool:
    if not isinstance(alert, dict):
        return False
    labels = alert.get("labels")
    return isinstance(labels, dict) and labels.get("alertname") == ALERTNAME


@dataclass
class Switch:
    """The switch's state over one service run; :meth:`check` is called on the service's
    clock, so a test moves time instead of waiting ``missing_after``."""

    oncall: Oncall
    metrics: OncallMetrics
    started: float
    send: Sender | None = None
    last: float | None = None
    missing: bool = False
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def armed_since(self) -> float | None:
        if self.last is not None:
            return self.last
        return self.started if self.oncall.watchdog.from_start else None

    def arrived(self, now: float) -> None:
        """A Watchdog notification arrived (Alertmanager's webhook)."""
        gap = now - (self.armed_since() or now)
        self.last = now
        self.metrics.watchdog_arrival.set(now)
        if self.missing:
            self.missing = False
            self.metrics.watchdog_missing.set(0)
            log.warning("watchdog: the Watchdog alert arrives again after %.0f s", gap)
            self._notify("back", now, gap)

    def check(self, now: float) -> bool:
        """Page if the Watchdog is overdue and this outage has not paged yet; True if it did."""
        since = self.armed_since()
        if self.missing or since is None or not self.oncall.watchdog.enabled:
            return False
        if now - since <= self.oncall.watchdog.missing_after:
            return False
        self.missing = True
        self.metrics.watchdog_missing.set(1)
        log.error("watchdog: no Watchdog alert for %.0f s: monitoring is blind; paging",
                  now - since)  # fmt: skip
        self._notify("blind", now, now - since)
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

    # -- paging -----------------------------------------------------------------------------

    def _notify(self, what: str, now: float, gap: float) -> None:
        person_id = self._person(now)
        if person_id is None:
            log.error("watchdog: nobody to page (oncall.watchdog.notify / escalation)")
            self.metrics.page_finished("watchdog", None, ok=False)
            return
        message = self.message(what, person_id, now, gap)
        task = asyncio.get_running_loop().create_task(self._send(person_id, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, person_id: str, message: Message) -> None:
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
        log.info("watchdog page to %s: %s via %s", person_id,
                 "sent" if result.ok else "FAILED", result.channel)  # fmt: skip

    def _person(self, now: float) -> str | None:
        notify = self.oncall.watchdog.notify or self.oncall.escalation.steps[0].notify
        return rota.resolve_step(
            self.oncall, notify, datetime.fromtimestamp(now, self.oncall.zone())
        )

    def message(self, what: str, person_id: str, now: float, gap: float) -> Message:
        person = self.oncall.person(person_id)
        lang = (person.lang if person else None) or self.oncall.lang
        text = _TEXT[lang]
        zone = self.oncall.zone()
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
        }
        title, body = text[f"{what}_title"], text[f"{what}_body"].format(**fields)
        return Message(_nfc(title), _nfc(body + "\n"))


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)
