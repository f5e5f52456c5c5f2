"""``ops config check``: validate config/ops.yaml and show the effective settings."""

from __future__ import annotations

import argparse

from portalops.cli.context import Context
from portalops.cli.output import Outcome


def build_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("config", help="the operations config (config/ops.yaml)")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("check", help="validate the config; print the effective settings")
    parser.set_defaults(run=run)


def run(ctx: Context, args: argparse.Namespace) -> Outcome:
    settings = ctx.settings
    path = ctx.config_path
    source = str(path) if path else "built-in defaults (no config/ops.yaml found)"
    backup = settings.backup
    data = {"file": str(path) if path else None, "settings": settings.model_dump(mode="json")}
    lines = [
        f"{source}: OK",
        f"  state_dir      {settings.state_dir}",
        f"  repositories   {', '.join(r.name for r in backup.repositories) or '(none)'}",
        f"  sources        {', '.join(s.name for s in backup.sources) or '(none)'}",
        f"  writer key     {backup.writer_key or '(not set)'}",
        f"  identity       {backup.identity or '(not set: restores and drills run elsewhere)'}",
    ]
    return Outcome(data, ["\n".join(lines)])
