"""What to probe: every portal domain of the estate (Art. 3), its English channel and legacy
names (which must redirect), plus any URL the config or the command line adds."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from portalops.core.errors import BadInput
from portalops.inventory.model import Estate
from portalops.monitors.config import Monitor
from portalops.monitors.probe import Expect, Target


def _url(scheme: str, domain: str, port: int, default: int) -> str:
    return f"{scheme}://{domain}/" if port == default else f"{scheme}://{domain}:{port}/"


def expect_for(monitor: Monitor, zone: str) -> Expect:
    rules = monitor.expect
    return Expect(
        links=tuple(link.replace("{zone}", zone) for link in rules.links),
        elements=tuple(rules.elements),
        forbidden=tuple(rules.forbidden),
    )


def estate_targets(estate: Estate, monitor: Monitor) -> list[Target]:
    """Every domain of every portal: primary and English channel probed in full, legacy names
    for their redirect."""
    expect = expect_for(monitor, estate.zone)
    targets = []
    for portal in estate.portals:
        for domain in portal.domains:
            targets.append(
                Target(
                    portal=portal.unit,
                    unit_kind=portal.kind.value,
                    domain=domain,
                    url=_url("https", domain, monitor.https_port, 443),
                    http_url=_url("http", domain, monitor.http_port, 80),
                    expect=expect,
                )
            )
        for legacy in portal.legacy:
            targets.append(
                Target(
                    portal=portal.unit,
                    unit_kind=portal.kind.value,
                    domain=legacy,
                    url=_url("https", legacy, monitor.https_port, 443),
                    http_url=_url("http", legacy, monitor.http_port, 80),
                    redirect_to=estate.redirects.get(legacy, portal.domain),
                )
            )
    return targets


def url_target(url: str, monitor: Monitor, estate: Estate | None = None) -> Target:
    """An ad-hoc URL; if its host is an estate domain, it carries that portal's labels."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput(f"target {url!r} is not a portal domain of the estate or an http(s) URL")
    domain = parts.hostname.lower()
    portal = estate.by_domain(domain) if estate is not None else None
    https = parts.scheme == "https"
    return Target(
        portal=portal.unit if portal else domain,
        unit_kind=portal.kind.value if portal else "url",
        domain=domain,
        # an http:// URL is probed as given (and must redirect to HTTPS)
        url=url,
        http_url=_url("http", domain, monitor.http_port, 80) if https else url,
        redirect_to=(
            estate.redirects.get(domain) if estate is not None and portal is not None else None
        ),
        expect=expect_for(monitor, estate.zone) if portal is not None and estate else Expect(),
    )


def select(wanted: Sequence[str], monitor: Monitor, estate: Estate | None) -> list[Target]:
    """The targets named on the command line (domains or URLs), or all of them."""
    every = (estate_targets(estate, monitor) if estate is not None else []) + [
        url_target(u, monitor, estate) for u in monitor.urls
    ]
    if not wanted:
        return every
    by_domain = {t.domain: t for t in every}
    chosen = []
    for item in wanted:
        if "://" in item:
            chosen.append(url_target(item, monitor, estate))
        elif item.lower().rstrip(".") in by_domain:
            chosen.append(by_domain[item.lower().rstrip(".")])
        else:
            raise BadInput(
                f"{item!r} is not a portal domain of the estate; give a domain it lists "
                "(ops inventory domains) or a full URL"
            )
    return chosen


def _url_key(url: str) -> tuple[str, str, int, str, str] | None:
    """A URL's identity for matching: scheme and host in lower case, the port spelled out,
    an empty path as "/"; None for what is not an http(s) URL."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    default = 443 if scheme == "https" else 80
    host = parts.hostname.lower().rstrip(".")
    return scheme, host, port or default, parts.path or "/", parts.query


def configured(item: str, targets: Iterable[Target]) -> Target | None:
    """The target ``item`` names among ``targets`` (the ones swept), or None: a domain names
    the target of that domain; a URL must be a target's own URL (its HTTPS page or the plain
    HTTP URL it is reached at), not merely on its host, so that no path of a portal can be
    fetched through it."""
    item = item.strip()
    if "://" not in item:
        domain = item.lower().rstrip(".")
        return next((t for t in targets if t.domain == domain), None)
    key = _url_key(item)
    if key is None:
        return None
    for target in targets:
        if key in (_url_key(target.url), target.http_url and _url_key(target.http_url)):
            return target
    return None


def shard_hash(key: str, count: int) -> int:
    """Prometheus' ``hashmod`` of ``key``: the MD5 of its UTF-8 bytes, the digest's LAST 8
    bytes read as a big-endian uint64, modulo ``count`` (model/relabel/relabel.go, kept so
    since the first version, whose shifts past 64 bits dropped the first 8 bytes)."""
    digest = hashlib.md5(key.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[8:], "big") % count


def shard_key(target: Target) -> str:
    """What a target is sharded by: its domain (the URL's host, lower case, no port), so that
    a file_sd listing domains or URLs, reduced to the host by the relabelling of
    docs/monitoring.md, hashes to the same shard as the exporter's own sweep."""
    return target.domain


def in_shard(targets: Iterable[Target], shard: tuple[int, int] | None) -> list[Target]:
    """The targets shard ``(index, count)`` sweeps (``monitor.shard``); all when None."""
    if shard is None:
        return list(targets)
    index, count = shard
    return [t for t in targets if shard_hash(shard_key(t), count) == index]
