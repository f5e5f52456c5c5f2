"""``ops demo``: the README's first command."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from portalops.cli.context import Context
from portalops.cli.output import Outcome
from portalops.core.errors import BadInput, ExitCode

if TYPE_CHECKING:
    from portalops.demo import Step


def build_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "demo", help="back up a sample commune portal twice, then drill it (nothing else needed)"
    )
    parser.add_argument(
        "--dir", type=Path, default=Path("demo"), metavar="DIR",
        help="where the sample portal, keys and repository go (default: ./demo; emptied first)",
    )  # fmt: skip
    parser.set_defaults(run=run)


def run(ctx: Context, args: argparse.Namespace) -> Outcome:
    from portalops.demo import run_demo

    root = args.dir.resolve()

    def show(step: Step) -> None:
        if args.json:
            return
        out = ctx.env.stdout
        print(f"\n== {step.title}\n$ {' '.join(step.argv)}", file=out)
        print(step.output, file=out)
        out.flush()

    try:
        result = run_demo(root, show)
    except FileExistsError as exc:
        raise BadInput(f"{exc}; pick another --dir") from None
    data = {
        "ok": result.ok,
        "directory": str(root),
        "database": result.database,
        "steps": [
            {"title": s.title, "command": s.argv, "exit_code": s.returncode, "output": s.output}
            for s in result.steps
        ],
    }
    summary = (
        f"\nDemo {'finished' if result.ok else 'FAILED'}: everything is under {root} "
        f"(config {root / 'ops.yaml'}); run any command above yourself."
    )
    if result.database.startswith("PostgreSQL"):
        summary += (
            "\nThe portal's database ran on a throwaway PostgreSQL cluster, stopped now: "
            "a new 'backup run' reports portal-db failed, as for any database that is down."
        )
    return Outcome(data, [summary], ExitCode.OK if result.ok else ExitCode.PROBLEM_FOUND)
