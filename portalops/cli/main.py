#!/usr/bin/env python3
"""portal-ops: the command line.

Parses arguments, loads inventory and config once (on first use), calls one command, prints a
table or --json, and maps errors to exit codes (0 ok, 1 problem found, 2 bad input,
3 operational failure). No traceback reaches the user unless -v.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from portalops import __version__
from portalops.cli import (
    backup,
    config,
    cron,
    demo,
    drill,
    inventory,
    monitor,
    oncall,
    provision,
)
from portalops.cli.context import Context
from portalops.cli.output import emit
from portalops.core.errors import ExitCode, OpsError

COMMANDS = (inventory, config, backup, drill, monitor, oncall, cron, demo, provision)

log = logging.getLogger("portalops")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ops",
        description="Operations toolkit for the e-portals of a province's state agencies "
        "(Decision 32/2023/QĐ-UBND): provisioning, Art. 11 backups, Art. 19 monitoring.",
        epilog="Exit codes: 0 all good; 1 a problem was found; 2 bad input; 3 operational failure.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="operations config (default: config/ops.yaml; without one, safe defaults)",
    )
    parser.add_argument(
        "--units",
        type=Path,
        metavar="FILE",
        help="estate model (default: inventory/units.yaml)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logs and tracebacks on stderr"
    )
    parser.add_argument("--version", action="version", version=f"portal-ops {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.build_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse exits 2 on bad arguments, as we want
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    ctx = Context(args)
    try:
        outcome = args.run(ctx, args)
    except OpsError as exc:
        if args.verbose:
            log.exception("command failed")
        print(f"ops: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("ops: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a user mistake: say so, and how to see more
        if args.verbose:
            raise
        print(
            f"ops: internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)",
            file=sys.stderr,
        )
        return int(ExitCode.OPERATIONAL)
    emit(outcome, args.json)
    return int(outcome.exit_code)


if __name__ == "__main__":
    sys.exit(main())
