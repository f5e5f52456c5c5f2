"""The estate as an Ansible dynamic inventory (the script protocol: --list / --host)."""

from __future__ import annotations

from typing import Any

from inventory.model import Estate, Portal, UnitKind


def hostvars(estate: Estate, portal: Portal) -> dict[str, Any]:
    """Variables Ansible sees for one portal; the playbooks read these."""
    return {
        "portal_unit": portal.unit,
        "portal_kind": portal.kind.value,
        "portal_parent": portal.parent,
        "portal_domain": portal.domain,
        "portal_domains": list(portal.domains),
        "portal_legacy_domains": list(portal.legacy),
        "portal_zone": estate.zone,
        # A portal is a site, not a machine: nothing should try to SSH to its name.
        "ansible_connection": "local",
    }


def inventory_list(estate: Estate) -> dict[str, Any]:
    """``--list``: a group per unit kind, every portal named by its primary domain."""
    groups: dict[str, Any] = {
        "all": {"children": ["portals"]},
        "portals": {"children": [kind.value for kind in UnitKind]},
    }
    for kind in UnitKind:
        groups[kind.value] = {"hosts": [p.domain for p in estate.portals if p.kind is kind]}
    groups["_meta"] = {"hostvars": {p.domain: hostvars(estate, p) for p in estate.portals}}
    return groups


def inventory_host(estate: Estate, host: str) -> dict[str, Any] | None:
    """``--host H``: that portal's variables, or None if the estate has no such portal."""
    portal = estate.by_domain(host)
    return None if portal is None else hostvars(estate, portal)
