"""alertmanager.yml rendered from ops.yaml (``oncall``): ``ops oncall alertmanager-config``.

Every alert goes to the on-call service, which decides whom to page; what
Alertmanager decides is *when* and *how bundled*:

- ``severity="info"`` goes to ``blackhole`` (dashboards only, never a page);
- ``critical`` waits less before the first notification and repeats more often;
- district and commune portals are grouped by ``(alertname, unit_kind)``, so a hundred
  communes failing at once (a provincial link, a shared hosting server) page once;
- maintenance windows become ``time_intervals`` (with the on-call time zone as
  ``location``, Alertmanager 0.25+) muting the routes of the portals they cover;
- inhibition rules drop the alerts that merely echo another alert's cause (:data:`INHIBIT`);
- the always-firing ``Watchdog`` has a route of its own, first and never muted, to the
  on-call service and every ``oncall.watchdog.witnesses`` webhook, repeated every
  ``oncall.watchdog.repeat_interval``: the dead man's switch (:mod:`portalops.oncall.watchdog`);
- the alerts about the paging chain itself (:data:`CHAIN_ALERTS`: the on-call service down,
  Alertmanager's or the service's deliveries failing) go to receiver ``paging-chain``: the
  on-call service *and* every witness, since the service they are about may be the one that
  cannot take them (dead, or refusing Alertmanager's token). Without a witness they have no
  independent path, and :func:`render` warns.

Written for Alertmanager 0.25: ``matchers``/``source_matchers`` syntax, ``time_intervals``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from datetime import time
from pathlib import Path
from typing import Any

import yaml

from portalops.oncall.config import (
    CRITICAL_GROUP_WAIT,
    DAY_NAMES,
    WEEKDAYS,
    AlertmanagerRouting,
    Maintenance,
    Oncall,
    format_duration,
)

log = logging.getLogger(__name__)

RECEIVER = "oncall"
BLACKHOLE = "blackhole"
#: the dead man's switch: the always-firing alert and the receiver it alone goes to
WATCHDOG = "Watchdog"
WATCHDOG_RECEIVER = "watchdog"
#: portals numerous enough that one cause fails many of them at once: grouped per kind
#: alerts about the paging chain itself, which the on-call service alone may never receive
#: (it is down, or refuses Alertmanager's token): sent to it and to every witness.
#: AlertmanagerDown is not here: a dead Alertmanager delivers nothing (the Watchdog covers it).
CHAIN_ALERTS = ("OncallDown", "AlertmanagerNotificationsFailing", "OncallDeliveriesFailing")
CHAIN_RECEIVER = "paging-chain"
MASS_KINDS = ("district", "commune")
MASS_GROUP_BY = ["alertname", "unit_kind"]

#: The stable alert names of the Prometheus rules; the inhibitions below refer to them.
ALERTS = (
    "PortalDown", "PortalSlow", "CertificateExpiringSoon", "CertificateExpired",
    "LegacyTLSAccepted", "SecurityGradeLow", "SensitivePathExposed", "DefacementSuspected",
    "IPv6Unreachable", "BackupMissing", "BackupFailed", "DrillOverdue", "DrillFailed",
    "RestoreObjectiveExceeded", "ExporterAbsent", "HostDown", "DiskFilling", "MonitoringBlind",
    "ScheduledJobFailed", "Watchdog", "ProbeStale", "AlertmanagerDown",
    "AlertmanagerNotificationsFailing", "PrometheusNotificationsDropped", "OncallDown",
    "OncallDeliveriesFailing",
)  # fmt: skip

#: (source, targets, equal): while an alert matching ``source`` fires, alerts matching
#: ``targets`` whose ``equal`` labels agree with it are not sent.
INHIBIT: tuple[tuple[list[str], list[str], list[str]], ...] = (
    # A blind monitoring host (no uplink address answers, or 90% of the portals fail at once:
    # config/prometheus/rules, both MonitoringBlind) fails every probe: its PortalDown,
    # PortalSlow and IPv6Unreachable say nothing about the portals, and its ProbeStale
    # (probes running into their deadline while the uplink is gone) nothing about the
    # prober. ``equal: [instance]`` (the exporter both come from) keeps one blind prober
    # from hiding what another sees.
    # Nothing else is inhibited: certificate, TLS, header, exposure and defacement metrics
    # are emitted only when the check ran (a blind probe leaves them absent, not false), and
    # security findings must never hide behind a monitoring fault; HostDown comes from
    # Prometheus scraping the LAN, which the uplink check does not measure; ExporterAbsent
    # says the watcher itself is broken.
    (['alertname="MonitoringBlind"'],
     ['alertname=~"PortalDown|PortalSlow|IPv6Unreachable|ProbeStale"'], ["instance"]),
    # A down portal is also unreachable over IPv6, and whatever answers in its place (a
    # proxy's 502 page) has poor headers, the proxy's TLS and a "drifted" home page. The
    # inhibition ends with PortalDown, so a real defacement still pages once the portal is
    # back. Certificates are not inhibited: an expired one may be why the portal is down.
    (['alertname="PortalDown"'],
     ['alertname=~"PortalSlow|IPv6Unreachable|SecurityGradeLow|LegacyTLSAccepted'
      '|DefacementSuspected"'], ["domain"]),
    (['alertname="CertificateExpired"'], ['alertname="CertificateExpiringSoon"'], ["domain"]),
    # Alerts in two severities (CertificateExpiringSoon, BackupMissing, DiskFilling) page once,
    # at the higher one, while their bands hand over. ``equal`` names every label that tells
    # one object from another (a domain; a host's instance, mountpoint; a backup's source,
    # repository): labels missing on both sides count as equal, so without them a critical
    # DiskFilling on one host would silence a warning one on another.
    (['severity="critical"'], ['severity="warning"'],
     ["alertname", "domain", "instance", "mountpoint", "source", "repository"]),
    # A host that is down (its node_exporter unscraped) leaves its disk metrics stale: the
    # DiskFilling of that same target is not news. ExporterAbsent is not inhibited: it comes
    # from absent() without an instance, and a dead watcher must always page.
    (['alertname="HostDown"'], ['alertname="DiskFilling"'], ["instance"]),
)  # fmt: skip

_DAYS = WEEKDAYS
_END_OF_DAY = "24:00"
#: listen addresses that are no address to connect to, and what to connect to instead
_LOOPBACK_FOR = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "[::1]", "[::]": "[::1]"}  # noqa: S104


def render(oncall: Oncall, state_dir: Path, source: Path | str | None = "config/ops.yaml") -> str:
    """alertmanager.yml for the ``oncall`` section, headed by a do-not-edit comment naming
    ``source`` (the ops.yaml it came from; ``None``: the built-in defaults). ``state_dir`` is
    where the service keeps its webhook token, which Alertmanager reads."""
    origin = f"from {source}" if source is not None else "from the built-in defaults"
    header = (
        f"# Generated by `ops oncall alertmanager-config` {origin} (section oncall).\n"
        "# Do not edit by hand: change ops.yaml and regenerate; amtool check-config FILE.\n"
    )
    body = yaml.safe_dump(build(oncall, state_dir), sort_keys=False, allow_unicode=True, width=100)
    if not oncall.watchdog.witnesses:
        log.warning(
            "no oncall.watchdog.witnesses: %s reach only this on-call service, so nobody is "
            "paged when it is down or refuses Alertmanager; configure a witness on another "
            "host (docs/alerting.md, 'An external witness')",
            ", ".join(CHAIN_ALERTS),
        )
    return header + body


def build(oncall: Oncall, state_dir: Path) -> dict[str, Any]:
    """The alertmanager.yml document as a dict (what :func:`render` dumps)."""
    routing = oncall.alertmanager
    config: dict[str, Any] = {
        "route": {
            "receiver": RECEIVER,
            "group_by": list(routing.group_by),
            "group_wait": format_duration(routing.group_wait),
            "group_interval": format_duration(routing.group_interval),
            "repeat_interval": format_duration(routing.repeat_interval),
            # the Watchdog first (never muted, never grouped with anything), then the muted
            # copies: the first matching sibling wins and nothing has ``continue: true``, so
            # a muted alert never reaches the unmuted routes below
            "routes": [
                *_watchdog_routes(oncall),
                *_maintenance_routes(routing),
                *_routes(routing, mute=[]),
            ],
        },
        "inhibit_rules": [
            {
                "source_matchers": list(src),
                "target_matchers": list(dst),
                **({"equal": list(eq)} if eq else {}),
            }
            for src, dst, eq in INHIBIT
        ],
        "receivers": [
            {
                "name": RECEIVER,
                "webhook_configs": [
                    _webhook(webhook_url(oncall), oncall.state_paths(state_dir)[2], resolved=True)
                ],
            },
            {"name": BLACKHOLE},
            *_watchdog_receivers(oncall, state_dir),
            {"name": CHAIN_RECEIVER, "webhook_configs": _chain_webhooks(oncall, state_dir)},
        ],
    }
    if routing.maintenance:
        config["time_intervals"] = [
            {"name": window.name, "time_intervals": _intervals(window, i, oncall.timezone)}
            for i, window in enumerate(routing.maintenance)
        ]
    return config


def _webhook(url: str, token_file: Path, *, resolved: bool) -> dict[str, Any]:
    return {
        "url": url,
        "send_resolved": resolved,
        "max_alerts": 0,
        "http_config": {
            "authorization": {"type": "Bearer", "credentials_file": str(token_file.absolute())}
        },
    }


def _watchdog_routes(oncall: Oncall) -> list[dict[str, Any]]:
    """The Watchdog's own route: sent at once and every ``watchdog.repeat_interval`` to the
    on-call service (and the witnesses), which pages when it stops arriving. Without the
    switch the Watchdog goes nowhere (it must never reach a person)."""
    matchers = [_matcher("alertname", "=", WATCHDOG)]
    if not oncall.watchdog.enabled:
        return [{"matchers": matchers, "receiver": BLACKHOLE}]
    repeat = oncall.watchdog.repeat_interval
    return [
        {
            "matchers": matchers,
            "receiver": WATCHDOG_RECEIVER,
            "group_by": ["alertname"],
            "group_wait": "0s",
            # Alertmanager re-sends on a group_interval tick once repeat_interval has passed:
            # ticks twice as often keep the period at repeat_interval, not twice it
            "group_interval": format_duration(max(1.0, repeat / 2)),
            "repeat_interval": format_duration(repeat),
            "continue": False,
        }
    ]


def _watchdog_receivers(oncall: Oncall, state_dir: Path) -> list[dict[str, Any]]:
    if not oncall.watchdog.enabled:
        return []
    own = _webhook(webhook_url(oncall), oncall.state_paths(state_dir)[2], resolved=False)
    witnesses = [_webhook(w.url, w.token_file, resolved=False) for w in oncall.watchdog.witnesses]
    return [{"name": WATCHDOG_RECEIVER, "webhook_configs": [own, *witnesses]}]


def _chain_webhooks(oncall: Oncall, state_dir: Path) -> list[dict[str, Any]]:
    """The on-call service and every witness, with resolutions: a witness opens an
    incident for a paging-chain alert and pages through its own channels, and closes it when
    the alert resolves."""
    own = _webhook(webhook_url(oncall), oncall.state_paths(state_dir)[2], resolved=True)
    witnesses = [_webhook(w.url, w.token_file, resolved=True) for w in oncall.watchdog.witnesses]
    return [own, *witnesses]


def webhook_url(oncall: Oncall) -> str:
    """``oncall.alertmanager.webhook_url``, else ``http://<oncall.listen>/alertmanager`` with
    a wildcard listen address (``0.0.0.0``, ``::``, empty) replaced by loopback."""
    if oncall.alertmanager.webhook_url:
        return oncall.alertmanager.webhook_url
    host, _, port = oncall.listen.rpartition(":")
    host = _LOOPBACK_FOR.get(host, host)
    return f"http://{host}:{port}/alertmanager"


# -- routes ----------------------------------------------------------------------------------


def _routes(routing: AlertmanagerRouting, mute: list[str]) -> list[dict[str, Any]]:
    """The paging-chain, severity and unit-kind routes, each muted by ``mute``.

    Alertmanager does not inherit ``mute_time_intervals`` from a parent route (each route
    takes its own, or none), so every node of a muted subtree names the intervals itself.
    """

    def muted() -> dict[str, Any]:  # fresh lists: the YAML dump then holds no &anchors
        return {"mute_time_intervals": list(mute)} if mute else {}

    def severity(name: str) -> list[str]:
        return [_matcher("severity", "=", name)]

    def per_kind(**timing: str) -> dict[str, Any]:
        mass = _matcher("unit_kind", "=~", "|".join(MASS_KINDS))
        return {"matchers": [mass], "group_by": list(MASS_GROUP_BY), **timing, **muted()}

    chain = {
        "matchers": [_matcher("alertname", "=~", "|".join(CHAIN_ALERTS))],
        "receiver": CHAIN_RECEIVER,
        # the chain's alerts are critical: the same timing as the critical route's
        "group_wait": format_duration(min(routing.group_wait, CRITICAL_GROUP_WAIT)),
        "repeat_interval": format_duration(routing.critical_repeat_interval),
        **muted(),
    }
    return [
        # first: whatever severity the rules give them, they must reach the witnesses too
        chain,
        {"matchers": severity("info"), "receiver": BLACKHOLE, **muted()},
        {
            "matchers": severity("critical"),
            "group_wait": format_duration(min(routing.group_wait, CRITICAL_GROUP_WAIT)),
            "repeat_interval": format_duration(routing.critical_repeat_interval),
            **muted(),
            # a province-wide failure is reported by the monitor within one sweep: the
            # ordinary group_wait gathers all of it into the first page
            "routes": [per_kind(group_wait=format_duration(routing.group_wait))],
        },
        {"matchers": severity("warning"), **muted(), "routes": [per_kind()]},
        per_kind(),  # alerts without a known severity still reach the on-call service
    ]


def _maintenance_routes(routing: AlertmanagerRouting) -> list[dict[str, Any]]:
    """One route per class of alerts that the same set of windows covers.

    Windows overlap (a commune's portal may be named by one window and be a commune for
    another), and only the first matching route applies; so the alerts are split by
    portal (each named one, then the rest) and unit kind (each named one, then the rest),
    and each class gets one route muted by every window that covers it.
    """
    windows = routing.maintenance
    if not windows:
        return []
    portals = _unique(p for w in windows for p in w.portals)
    kinds = _unique(k for w in windows for k in w.unit_kinds)
    routes = []
    for portal in [*portals, None]:
        covered: dict[tuple[str, ...], list[str | None]] = {}
        for kind in [*kinds, None]:
            names = tuple(w.name for w in windows if _covers(w, portal, kind))
            covered.setdefault(names, []).append(kind)
        for names, kind_class in covered.items():
            if not names:
                continue
            matchers = (
                [_matcher("portal", "=", portal)]
                if portal is not None
                else [_matcher("portal", "!=", p) for p in portals]
            )
            matchers += _kind_matchers(kind_class, kinds)
            routes.append(
                {
                    **({"matchers": matchers} if matchers else {}),
                    "mute_time_intervals": list(names),
                    "routes": _routes(routing, list(names)),
                }
            )
    return routes


def _covers(window: Maintenance, portal: str | None, kind: str | None) -> bool:
    """Whether ``window`` mutes alerts of ``portal`` and ``kind`` (``None``: any other)."""
    if not window.portals and not window.unit_kinds:
        return True  # the whole estate: every alert, host and backup alerts included
    return portal in window.portals or kind in window.unit_kinds


def _kind_matchers(kind_class: list[str | None], kinds: list[str]) -> list[str]:
    """Matchers selecting the unit kinds of ``kind_class`` (``None``: every kind not named
    in ``kinds``, and alerts without the label)."""
    if None in kind_class:
        return [_matcher("unit_kind", "!=", k) for k in kinds if k not in kind_class]
    named = [k for k in kind_class if k is not None]
    if len(named) == 1:
        return [_matcher("unit_kind", "=", named[0])]
    return [_matcher("unit_kind", "=~", "|".join(named))]  # unit kinds are plain words


def _matcher(label: str, op: str, value: str) -> str:
    """``label="value"``, quoted as Alertmanager's matcher parser unquotes."""
    quoted = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{label}{op}"{quoted}"'


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


# -- time intervals --------------------------------------------------------------------------


def _intervals(window: Maintenance, index: int, zone: str) -> list[dict[str, Any]]:
    """Alertmanager ``time_intervals`` entries for ``window``, in local time of ``zone``.

    A range that ends at or before its start runs past midnight: its part after midnight
    belongs to the day after each listed weekday. An end of 23:59 means the end of the day
    (``24:00``, which a time of day cannot spell); otherwise ends are exclusive.
    """
    days = _weekdays(window.weekdays)
    same: list[dict[str, str]] = []
    after_midnight: list[dict[str, str]] = []
    for span in window.times:
        start = span.start.strftime("%H:%M")
        end = _END_OF_DAY if span.end == time(23, 59) else span.end.strftime("%H:%M")
        if span.end > span.start:
            same.append({"start_time": start, "end_time": end})
            continue
        same.append({"start_time": start, "end_time": _END_OF_DAY})
        if span.end != time(0, 0):
            after_midnight.append({"start_time": "00:00", "end_time": end})
    location = {"location": zone}
    if days is None:  # every day: the part after midnight falls on a listed day too
        spans = same + after_midnight
        return [{**({"times": spans} if spans else {}), **location}]
    entries = [{"weekdays": _day_ranges(days), **({"times": same} if same else {}), **location}]
    if after_midnight:
        next_days = {(d + 1) % 7 for d in days}
        entries.append({"weekdays": _day_ranges(next_days), "times": after_midnight, **location})
    return entries


def _weekdays(specs: list[str]) -> set[int] | None:
    """Days (0 = Monday) named by ``specs``: ``saturday``, ``sat``, ``saturday:sunday``
    (ranges run forward and may wrap past Sunday); ``None`` for every day."""
    days: set[int] = set()
    for spec in specs:
        first, _, last = spec.strip().lower().partition(":")  # checked by the config model
        begin, end = DAY_NAMES[first], DAY_NAMES[last or first]
        days.update((begin + step) % 7 for step in range((end - begin) % 7 + 1))
    return days if days and len(days) < 7 else None


def _day_ranges(days: set[int]) -> list[str]:
    """``weekdays`` for Alertmanager, which numbers Sunday first and rejects a range whose
    start comes later in that week than its end (``saturday:sunday``)."""
    ordered = sorted((d + 1) % 7 for d in days)  # 0 = Sunday
    ranges = []
    for _, run in itertools.groupby(enumerate(ordered), key=lambda pair: pair[1] - pair[0]):
        span = [day for _, day in run]
        first, last = _DAYS[(span[0] - 1) % 7], _DAYS[(span[-1] - 1) % 7]
        ranges.append(first if first == last else f"{first}:{last}")
    return ranges
