"""What the on-call service tells Prometheus about itself: ``GET /metrics``.

The paging chain must be watched like any other part: a page that fails, a database that
errors, an escalation loop that stopped, a Watchdog that no longer arrives. The service
counts them in a registry of its own (never the process-wide default one, so a test running
two services in one process sees each one's figures), served as Prometheus text behind a
bearer token (the figures reveal incidents and channels).

Metric names (all ``portalops_oncall_``):

- ``pages_total{kind,channel,result}``: pages finished, by kind (page, resolved, reminder,
  watchdog), the channel that delivered or was tried last (``1:mailto``; ``none``) and
  result (``sent`` | ``failed``; ``nobody``: a watchdog step found nobody on call, which is
  no failed delivery). Every kind × configured channel (and ``none``) × sent/failed series
  exists from the start at 0 (:meth:`OncallMetrics.precreate`): a counter that appeared
  only at its first increment would start at 1, and ``increase()`` would miss that first
  failure;
- ``escalation_steps_total``: escalation steps run (each pages someone, or nobody on call);
- ``database_errors_total``: SQLite errors the service survived;
- ``last_tick_timestamp_seconds``: when the escalation loop last completed a tick without
  error (a loop that ticks but fails each time leaves it behind; ``/healthz`` says why);
- ``watchdog_last_arrival_timestamp_seconds``: when the Watchdog alert last arrived (0: never);
- ``watchdog_missing``: 1 while the Watchdog is overdue (a blind outage is open: its page is
  being delivered, retried and escalated; each try counts in ``pages_total{kind="watchdog"}``);
- ``incidents_open``: incidents firing or acknowledged, read at scrape time.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

PREFIX = "portalops_oncall_"
#: the kinds of page (:attr:`portalops.oncall.store.Page.kind`, and the watchdog's)
KINDS = ("page", "resolved", "reminder", "watchdog")
#: the channel label of a page that reached no channel (no channels, nobody on call, error)
NO_CHANNEL = "none"
SENT, FAILED, NOBODY = "sent", "failed", "nobody"
CONTENT_TYPE = CONTENT_TYPE_LATEST


class OncallMetrics:
    """The service's counters and gauges, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.pages = Counter(
            f"{PREFIX}pages",
            "Pages the on-call service finished, by kind, channel and result.",
            ["kind", "channel", "result"],
            registry=r,
        )
        self.steps = Counter(f"{PREFIX}escalation_steps", "Escalation steps run.", registry=r)
        self.db_errors = Counter(
            f"{PREFIX}database_errors", "SQLite errors the service survived.", registry=r
        )
        self.last_tick = Gauge(
            f"{PREFIX}last_tick_timestamp_seconds",
            "When the escalation loop last completed a tick without error (Unix time).",
            registry=r,
        )
        self.watchdog_arrival = Gauge(
            f"{PREFIX}watchdog_last_arrival_timestamp_seconds",
            "When the Watchdog alert last arrived from Alertmanager (Unix time; 0: never).",
            registry=r,
        )
        self.watchdog_missing = Gauge(
            f"{PREFIX}watchdog_missing",
            "1 while the Watchdog alert is overdue and the team was paged that monitoring "
            "is blind.",
            registry=r,
        )
        self.open_incidents = Gauge(
            f"{PREFIX}incidents_open",
            "Incidents firing or acknowledged, read when scraped.",
            registry=r,
        )
        self._count_open: Callable[[], int] | None = None
        self._last_tick: Callable[[], float] | None = None

    # -- hooks the engine, the service and the watchdog call ---------------------------------

    def precreate(self, channels: Iterable[str]) -> None:
        """Export every kind × channel (``channels``, the names :func:`notify.channel_name`
        gives, and ``none``) × sent/failed at 0 now, so the first failure is an increase
        Prometheus sees (a series born at 1 has no earlier sample to increase from)."""
        for kind, channel, result in itertools.product(
            KINDS, dict.fromkeys([*channels, NO_CHANNEL]), (SENT, FAILED)
        ):
            self.pages.labels(kind, channel, result)
        self.pages.labels("watchdog", NO_CHANNEL, NOBODY)

    def page_finished(self, kind: str, channel: str | None, ok: bool) -> None:
        self.pages.labels(kind, channel or NO_CHANNEL, SENT if ok else FAILED).inc()

    def nobody_on_call(self, kind: str) -> None:
        """A page that found nobody to go to: not a channel that failed (the rota's gap is
        logged and the next step paged at once)."""
        self.pages.labels(kind, NO_CHANNEL, NOBODY).inc()

    def escalation_step(self) -> None:
        self.steps.inc()

    def database_error(self, exc: BaseException) -> None:
        """Count ``exc`` if it is a database error (the callers catch broader ones)."""
        if isinstance(exc, sqlite3.Error):
            self.db_errors.inc()

    def read_at_scrape(
        self, open_incidents: Callable[[], int], last_tick: Callable[[], float]
    ) -> None:
        """Read the open incidents and the loop's last tick when scraped (they are state
        elsewhere: the database, the escalator)."""
        self._count_open, self._last_tick = open_incidents, last_tick

    # -- what the endpoints serve -----------------------------------------------------------

    def exposition(self) -> bytes:
        if self._count_open is not None:
            try:
                self.open_incidents.set(self._count_open())
            except sqlite3.Error as exc:
                self.database_error(exc)
                log.warning("/metrics: cannot count open incidents: %s", exc)
        if self._last_tick is not None:
            self.last_tick.set(self._last_tick())
        return generate_latest(self.registry)
