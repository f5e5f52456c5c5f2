#!/usr/bin/env python3
"""portal-ops: the command line.

Parses arguments, loads inventory and config once (on first use), calls one command, prints a
table or --json, and maps errors to exit codes (0 ok, 1 problem found, 2 bad input,
3 operational failure, 130 interrupted). No traceback reaches the user unless -v.

Everything it prints goes to the streams of an Environment (the process's own unless one is
given), so tests run ``main(argv, env)`` in-process and read what a user would have seen.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import TextIO

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
    systemd,
)
from portalops.cli.context import Context
from portalops.cli.environment import Environment
from portalops.cli.output import emit
from portalops.core.errors import ExitCode, OpsError

COMMANDS = (inventory, config, backup, drill, monitor, oncall, cron, systemd, demo, provision)

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


def _parse(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, env: Environment
) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code argparse chose (2 on bad arguments, 0 after
    --help or --version); its usage and messages go to the Environment's streams."""
    try:
        with redirect_stdout(env.stdout), redirect_stderr(env.stderr):
            return parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code is None:
            return int(ExitCode.OK)
        return exc.code if isinstance(exc.code, int) else int(ExitCode.BAD_INPUT)


@contextmanager
def _logging_to(stream: TextIO, verbose: bool) -> Iterator[None]:
    """What logging.basicConfig did in a fresh process, onto the Environment's stderr, undone
    afterwards so that in-process runs (tests) see their own logs and do not pile up handlers."""
    root = logging.getLogger()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # Only this run's records: threads that were there before it (none in a fresh process;
    # a test's servers when ops runs in-process) log elsewhere, not into this command's stderr.
    earlier = {t.ident for t in threading.enumerate()} - {threading.get_ident()}
    handler.addFilter(lambda record: record.thread not in earlier)
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    """Run one ``ops`` command line and return its exit code (with -v, a bug's exception
    propagates so that Python prints its traceback)."""
    env = env if env is not None else Environment.from_process()
    parsed = _parse(build_parser(), argv, env)
    if isinstance(parsed, int):
        return parsed
    with _logging_to(env.stderr, parsed.verbose):
        return _run(Context(parsed, env), env)


def _run(ctx: Context, env: Environment) -> int:
    args = ctx.args
    try:
        outcome = args.run(ctx, args)
    except OpsError as exc:
        if args.verbose:
            log.exception("command failed")
        print(f"ops: {exc}", file=env.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("ops: interrupted", file=env.stderr)
        return 130
    except Exception as exc:  # a bug, not a user mistake: say so, and how to see more
        if args.verbose:
            raise
        print(
            f"ops: internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)",
            file=env.stderr,
        )
        return int(ExitCode.OPERATIONAL)
    try:
        emit(outcome, args.json, env)
        env.stdout.flush()
    except BrokenPipeError:
        # The reader went away (ops --json ... | head): the command's work is done; say
        # nothing more to it, and keep Python from complaining when it flushes at exit.
        if env.stdout is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return int(outcome.exit_code)


if __name__ == "__main__":
    sys.exit(main())
