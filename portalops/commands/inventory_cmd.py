"""``ops inventory check | domains | ansible --list | --host H``."""

from __future__ import annotations

import argparse

from inventory.ansible import inventory_host, inventory_list
from portalops.context import Context
from portalops.errors import BadInput
from portalops.output import Outcome, table


def build_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "inventory", help="the estate model: units, portals, domains (Art. 3)"
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("check", help="validate the units file and count units per kind")
    sub.add_parser("domains", help="every portal's domains, primary first")
    ansible = sub.add_parser("ansible", help="the estate as an Ansible dynamic inventory")
    mode = ansible.add_mutually_exclusive_group(required=True)
    mode.add_argument("--list", action="store_true", help="all groups and host variables")
    mode.add_argument("--host", metavar="H", help="one portal's variables")
    parser.set_defaults(run=run)


def run(ctx: Context, args: argparse.Namespace) -> Outcome:
    estate = ctx.estate
    if args.action == "check":
        counts = estate.counts()
        data = {
            "file": str(estate.path),
            "province": estate.province,
            "zone": estate.zone,
            "levels": estate.levels,
            "counts": counts,
            "portals": len(estate.portals),
            "domains": sum(len(p.domains) for p in estate.portals),
            "legacy_redirects": len(estate.redirects),
        }
        counted = [*counts.items(), ("legacy redirects", len(estate.redirects))]
        summary = (
            f"{estate.path}: OK — {estate.province} ({estate.zone}), {estate.levels} levels, "
            f"{len(estate.portals)} portals, {data['domains']} domains"
        )
        return Outcome(data, [summary, table(None, ["unit kind", "count"], counted)])
    if args.action == "domains":
        docs = [
            {
                "unit": p.unit,
                "kind": p.kind.value,
                "parent": p.parent,
                "domains": list(p.all_domains),
                "legacy": list(p.legacy),
            }
            for p in estate.portals
        ]
        rows = [
            (p.kind.value, p.unit, p.parent or "", ", ".join(p.domains), ", ".join(p.legacy))
            for p in estate.portals
        ]
        return Outcome(
            docs, [table(None, ["kind", "unit", "parent", "domains", "legacy (redirects)"], rows)]
        )
    # ansible: the script protocol prints JSON whatever --json says.
    if args.list:
        return Outcome(inventory_list(estate), force_json=True)
    found = inventory_host(estate, args.host)
    if found is None:
        raise BadInput(
            f"{estate.path}: no portal has the domain '{args.host}'; "
            "'ops inventory domains' lists them"
        )
    return Outcome(found, force_json=True)
