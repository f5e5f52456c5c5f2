"""The estate as an Ansible dynamic inventory (the script protocol: --list / --host).

Hosts are the servers of ``inventory/servers.yaml``; groups are their roles (``web``,
``database``, ``dns``, ``monitoring``, ``agent``). Each host carries what the roles need,
derived from the units file: the sites it serves, the databases it keeps, the zone's records.
"""

from __future__ import annotations

from typing import Any

from portalops.inventory.servers import DB_PREFIX, Engine, Server, ServerRole, Servers, Site
from portalops.inventory.targets import node_targets, portal_server_info


def _site(site: Site) -> dict[str, Any]:
    portal = site.portal
    return {
        "domain": portal.domain,
        "aliases": list(portal.domains[1:]),
        "legacy": list(portal.legacy),
        "unit": portal.unit,
        "kind": portal.kind.value,
        "slug": site.slug,
        "database": None if site.database is Engine.NONE else site.database.value,
    }


def _database(site: Site) -> dict[str, Any]:
    name = DB_PREFIX + site.slug
    return {"name": name, "owner": name, "engine": site.database.value, "site": site.domain}


def dns_records(servers: Servers) -> list[dict[str, Any]]:
    """A and AAAA data for every name of every served site inside the zone, sorted by name.

    Legacy names outside the zone (a merged province's old zone) are that zone's business."""
    suffix = "." + servers.estate.zone
    records = []
    for web in servers.with_role(ServerRole.WEB):
        for site in web.sites:
            for fqdn in site.portal.all_domains:
                if not fqdn.endswith(suffix):
                    continue
                records.append(
                    {
                        "name": fqdn[: -len(suffix)],
                        "ipv4": str(web.address),
                        "ipv6": None if web.ipv6 is None else str(web.ipv6),
                    }
                )
    return sorted(records, key=lambda r: str(r["name"]))


def hostvars(servers: Servers, server: Server) -> dict[str, Any]:
    """Variables Ansible sees for one server; the playbooks read these."""
    out: dict[str, Any] = {"ansible_host": str(server.address)}
    # the server's own address, also where a test or an operator points ansible_host elsewhere
    # (a jump host, a tunnel): node_exporter listens there
    out["portal_address"] = str(server.address)
    if server.ssh_port is not None:
        out["ansible_port"] = server.ssh_port
    out["portal_ssh_port"] = server.ssh_port or 22
    out["portal_zone"] = servers.estate.zone
    out["portal_server_roles"] = [role.value for role in server.roles]
    out["portal_monitoring_addresses"] = servers.monitoring_addresses()
    if server.ipv6 is not None:
        out["portal_ipv6"] = str(server.ipv6)
    if server.has(ServerRole.WEB):
        out["portal_sites"] = [_site(site) for site in server.sites]
    if server.has(ServerRole.DATABASE):
        out["portal_databases"] = [_database(site) for site in server.databases]
    if server.has(ServerRole.DNS):
        out["portal_dns_records"] = dns_records(servers)
    if server.has(ServerRole.MONITORING):
        # what its Prometheus scrapes (file_sd) and which server serves each domain (textfile)
        out["portal_node_targets"] = node_targets(servers)
        out["portal_server_info"] = portal_server_info(servers)
    return out


def inventory_list(servers: Servers) -> dict[str, Any]:
    """``--list``: a group per server role, every server under its name."""
    groups: dict[str, Any] = {"all": {"children": [role.value for role in ServerRole]}}
    for role in ServerRole:
        groups[role.value] = {"hosts": [s.name for s in servers.with_role(role)]}
    groups["_meta"] = {"hostvars": {s.name: hostvars(servers, s) for s in servers.servers}}
    return groups


def inventory_host(servers: Servers, host: str) -> dict[str, Any] | None:
    """``--host H``: that server's variables, or None if there is no such server."""
    server = servers.by_name(host)
    return None if server is None else hostvars(servers, server)
