"""``ops inventory check | domains | ansible --list | --host H | prometheus-targets``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from portalops.cli.context import Context
from portalops.cli.output import Outcome, table
from portalops.cli.parser import SERVERS_HELP
from portalops.core.errors import BadInput

# Only constants here (no models): the servers model and the Ansible view load when run.
from portalops.inventory.targets import FILE_SD_PATH, NODE_EXPORTER_PORT

if TYPE_CHECKING:
    from rich.console import RenderableType


def build_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "inventory",
        help="the estate model: units, portals, domains (Art. 3)",
        description="Read the estate model: the units file (inventory/units.yaml: the "
        "province, its departments, districts and communes, each portal's domains derived "
        "as Art. 3 prescribes) and the servers file beside it (which server carries what). "
        "Check them, list the domains, or hand them to Ansible and Prometheus.",
        epilog="""\
examples:
  ops inventory check                         validate both files, count the units
  ops inventory domains --json                every portal's domains as JSON
  ops inventory ansible --list                the dynamic inventory ansible-playbook reads
  ops inventory check --units inventory/examples/phutho-2025.yaml""",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = sub.add_parser(
        "check", help="validate the units file (and the servers file beside it) and count units"
    )
    check.add_argument("--servers", type=Path, metavar="FILE", help=SERVERS_HELP)
    sub.add_parser("domains", help="every portal's domains, primary first")
    ansible = sub.add_parser("ansible", help="the estate as an Ansible dynamic inventory")
    mode = ansible.add_mutually_exclusive_group(required=True)
    mode.add_argument("--list", action="store_true", help="all groups and host variables")
    mode.add_argument("--host", metavar="H", help="one server's variables")
    ansible.add_argument("--servers", type=Path, metavar="FILE", help=SERVERS_HELP)
    targets = sub.add_parser(
        "prometheus-targets",
        help="every server's node_exporter as Prometheus file_sd JSON",
        description=(
            "Every server of the servers file as a target of Prometheus's 'node' job, labelled "
            "host, roles (',agent,web,') and portal_kinds; the monitoring role writes the same "
            f"list to {FILE_SD_PATH}. With --info, also which server serves each portal domain "
            "(portalops_portal_server_info, a node_exporter textfile)."
        ),
    )
    targets.add_argument("--servers", type=Path, metavar="FILE", help=SERVERS_HELP)
    targets.add_argument(
        "--port",
        type=int,
        default=NODE_EXPORTER_PORT,
        metavar="N",
        help=f"node_exporter's port on every server (default: {NODE_EXPORTER_PORT})",
    )
    targets.add_argument(
        "--output", type=Path, metavar="FILE", help="write the JSON here (default: stdout)"
    )
    targets.add_argument(
        "--info",
        type=Path,
        metavar="FILE",
        help="also write the portal-to-server info metric here (a .prom textfile)",
    )
    parser.set_defaults(run=run)


def run(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.inventory.servers import default_servers_path, load_servers, servers_for

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
        human: list[RenderableType] = [summary]
        # The servers file is optional here (a host running the agent keeps only the units);
        # when it is there, or named, it must agree with the estate.
        servers_path = args.servers or default_servers_path(estate.path)
        if args.servers is not None or servers_path.is_file():
            servers = load_servers(servers_path, estate)
            data["servers"] = {
                "file": str(servers.path),
                "count": len(servers.servers),
                "unserved": servers.unserved(estate),
            }
            human.append(f"{servers.path}: OK — {len(servers.servers)} servers")
            counted.append(("servers", len(servers.servers)))
        human.append(table(None, ["unit kind", "count"], counted))
        return Outcome(data, human)
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
    if args.action == "prometheus-targets":
        return _prometheus_targets(ctx, args)
    # ansible: the script protocol prints JSON whatever --json says.
    from portalops.inventory.ansible import inventory_host, inventory_list

    servers = servers_for(ctx.estate, args.servers)
    if args.list:
        return Outcome(inventory_list(servers), force_json=True)
    found = inventory_host(servers, args.host)
    if found is None:
        names = ", ".join(s.name for s in servers.servers) or "none"
        raise BadInput(f"{servers.path}: no server is named '{args.host}' (servers: {names})")
    return Outcome(found, force_json=True)


def _prometheus_targets(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.inventory.servers import servers_for
    from portalops.inventory.targets import node_targets, portal_server_info, write_file

    if not 1 <= args.port <= 65535:
        raise BadInput(f"--port {args.port}: a TCP port is 1..65535")
    servers = servers_for(ctx.estate, args.servers)
    groups = node_targets(servers, args.port)
    written: dict[str, str] = {}
    if args.info is not None:
        write_file(args.info, portal_server_info(servers))
        written["info"] = str(args.info)
    if args.output is None:
        # file_sd JSON on stdout whatever --json says: it is the file's content
        return Outcome(groups, force_json=True)
    write_file(args.output, json.dumps(groups, indent=2) + "\n")
    written["targets"] = str(args.output)
    lines: list[RenderableType] = [f"wrote {args.output}: {len(groups)} node_exporter targets"]
    if args.info is not None:
        lines.append(f"wrote {args.info}: which server serves each portal domain")
    return Outcome(written | {"count": len(groups)}, lines)
