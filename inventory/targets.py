"""Prometheus scrape targets from ``inventory/servers.yaml``: every server's node_exporter, and
which server serves each portal domain.

Every managed server runs node_exporter (its textfile collector carries the backup and drill
metrics), so every server is a target of the monitoring hosts' ``node`` job. The target list is
Prometheus's file_sd format; the monitoring role writes it to the file ``prometheus.yml`` names.

Labels are chosen for PromQL and bounded in size:

- ``host``: the inventory name. It replaces the ``host`` label the backup jobs write (their
  ``socket.gethostname()``, kept as ``exported_host``), so every series of a server, backups
  included, names it the way the inventory and the runbooks do.
- ``roles``: the server's roles sorted and joined with commas, with a comma at both ends
  (``,agent,web,``), so one role is selected with ``roles=~".*,web,.*"`` whatever the others.
  One target group per role would scrape a server once per role.
- ``portal_kinds``: the unit kinds of the portals a web server serves, in the same form
  (``,commune,district,``); at most four values, so a label never grows with the estate.

Which domains a web server serves is not a target label: a server of communes would carry
hundreds of names in every one of its series. It is an info metric instead,
``portalops_portal_server_info{domain, portal, unit_kind, server} 1``, written as a textfile for
the monitoring host's node_exporter and joined on ``domain`` with the prober's series (which
carry the same three portal labels), e.g.
``probe_success == 0 and on(domain) portalops_portal_server_info{server="web2"}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from portalops.core.atomic import write_atomic
from portalops.core.errors import OpsError

if TYPE_CHECKING:
    from portalops.inventory.servers import Server, Servers

#: node_exporter's port (Debian's prometheus-node-exporter).
NODE_EXPORTER_PORT = 9100
#: The file the monitoring role writes and config/prometheus/prometheus.yml reads.
FILE_SD_PATH = Path("/etc/prometheus/file_sd/portal-ops-nodes.json")
INFO_METRIC = "portalops_portal_server_info"
_INFO_HELP = (
    "The web server (inventory/servers.yaml) that serves a portal domain; 1 for every "
    "domain, legacy names included. Join on domain with the prober's series."
)


class TargetsWriteError(OpsError):
    """cannot write {}: {}"""


def joined(values: list[str]) -> str:
    """``,a,b,``: sorted, deduplicated, with a comma at both ends so that a regex
    ``.*,a,.*`` matches one value exactly; empty when there is none."""
    unique = sorted(set(values))
    return f",{','.join(unique)}," if unique else ""


def node_target(server: Server, port: int = NODE_EXPORTER_PORT) -> dict[str, Any]:
    """One server's target group: its IPv4 address (one target per server: scraping the IPv6
    address as well would double every series)."""
    labels = {
        "host": server.name,
        "roles": joined([role.value for role in server.roles]),
    }
    kinds = joined([site.portal.kind.value for site in server.sites])
    if kinds:
        labels["portal_kinds"] = kinds
    return {"targets": [f"{server.address}:{port}"], "labels": labels}


def node_targets(servers: Servers, port: int = NODE_EXPORTER_PORT) -> list[dict[str, Any]]:
    """Prometheus file_sd: every server's node_exporter, in servers-file order."""
    return [node_target(server, port) for server in servers.servers]


def _escape(value: str) -> str:
    """A label value in the text exposition format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def portal_server_info(servers: Servers) -> str:
    """The info metric as a node_exporter textfile: one line per domain of every served
    portal (primary, aliases, legacy names), sorted by domain for a stable file."""
    rows: list[tuple[str, str, str, str]] = []
    for server in servers.servers:
        for site in server.sites:
            portal = site.portal
            for domain in portal.all_domains:
                rows.append((domain, portal.unit, portal.kind.value, server.name))
    lines = [f"# HELP {INFO_METRIC} {_INFO_HELP}", f"# TYPE {INFO_METRIC} gauge"]
    for domain, unit, kind, server_name in sorted(rows):
        labels = (
            f'domain="{_escape(domain)}",portal="{_escape(unit)}",'
            f'unit_kind="{_escape(kind)}",server="{_escape(server_name)}"'
        )
        lines.append(f"{INFO_METRIC}{{{labels}}} 1")
    return "\n".join(lines) + "\n"


def write_file(path: Path, text: str) -> None:
    """Write atomically (Prometheus and node_exporter re-read these files at any moment); a
    missing directory or a refused write is an error naming the file, not a traceback."""
    try:
        write_atomic(path, text.encode("utf-8"))
    except OSError as exc:
        raise TargetsWriteError(path, exc.strerror or exc) from exc
