"""The parser every ``ops`` command line is read with.

Three habits of the command line live here, not in each command group:

- the global options (``--config``, ``--units``, ``--json``, ``-v``) are accepted before or
  after the command (``ops --json backup list`` and ``ops backup list --json``): every
  subcommand gets a copy whose default is ``argparse.SUPPRESS``, so a copy not given leaves
  the value read before the command alone;
- descriptions and epilogs are wrapped paragraph by paragraph, but indented lines (examples)
  are kept as written;
- a walk over every subcommand, for the help-completeness test, the man page and completion.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

GLOBAL_TITLE = "global options (before or after the command)"
#: Set (to its group's name) on the namespace by a command that stands in for its group until
#: the group is built (cli.main parses a command line in two passes); :func:`finish` skips it.
PLACEHOLDER = "_ops_group"
#: ``--servers`` of the commands that read the servers file (inventory, provision); here, not
#: beside the servers model, so that building the parser does not build that model.
SERVERS_HELP = "the servers file (default: servers.yaml beside the units file)"


class Formatter(argparse.HelpFormatter):
    """Fill each paragraph of a description or epilog to the terminal width, except indented
    lines (examples, lists), which are printed as written. Lines break at spaces only, never
    inside /etc/portal-ops or on-call."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out: list[str] = []
        for paragraph in textwrap.dedent(text).strip("\n").split("\n\n"):
            lines = paragraph.splitlines()
            if any(line.startswith(" ") for line in lines):
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(
                    textwrap.fill(
                        " ".join(line.strip() for line in lines),
                        width,
                        initial_indent=indent,
                        subsequent_indent=indent,
                        break_on_hyphens=False,
                    )
                )
        return "\n\n".join(out)


class Parser(argparse.ArgumentParser):
    """ArgumentParser with the paragraph-aware formatter; subparsers are made of this class
    too (argparse's add_subparsers uses the parent's class), so every command has it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


def add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The options every command accepts. At the top they carry the defaults; in each
    subcommand (``top=False``) a copy whose absence changes nothing (SUPPRESS)."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group(GLOBAL_TITLE)
    group.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        default=default(None),
        help="operations config (default: $PORTAL_OPS_CONFIG, else /etc/portal-ops/ops.yaml, "
        "else ./config/ops.yaml; without any, safe defaults)",
    )
    group.add_argument(
        "--units",
        type=Path,
        metavar="FILE",
        default=default(None),
        help="estate model (default: inventory/units.yaml here, else the packaged one)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print one JSON document on stdout instead of tables",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default(False),
        help="debug logs, and tracebacks, on stderr",
    )


@dataclass(frozen=True)
class Command:
    """One subcommand: its parser and the help line its parent lists it with."""

    name: str  # the full command line, e.g. "ops backup list"
    parser: argparse.ArgumentParser
    help: str | None


def subcommands(parser: argparse.ArgumentParser) -> Iterator[Command]:
    """Every subcommand below ``parser``, depth first, each once (aliases skipped)."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help for choice in action._choices_actions}
        seen: set[int] = set()
        for name, sub in action.choices.items():
            if id(sub) in seen:
                continue
            seen.add(id(sub))
            yield Command(sub.prog, sub, helps.get(name))
            yield from subcommands(sub)


def finish(parser: argparse.ArgumentParser) -> None:
    """Once every command group has added its parsers: give each subcommand the global
    options, and its help line as description where it has none of its own."""
    for command in subcommands(parser):
        if command.parser.get_default(PLACEHOLDER) is not None:
            continue
        add_global_options(command.parser, top=False)
        if command.parser.description is None and command.help:
            command.parser.description = command.help[0].upper() + command.help[1:] + "."


def global_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The copies of the global options in one subcommand (the man page lists them once)."""
    return [
        action
        for group in parser._action_groups
        if group.title == GLOBAL_TITLE
        for action in group._group_actions
    ]
