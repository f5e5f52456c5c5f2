"""``ops completion bash|zsh`` and ``ops manpage``: shell completion (shtab) and the manual
page (argparse-manpage), both generated from the command line's own parser, so that they
list exactly the commands and options this ``ops`` has. The agent role installs them
(playbooks/roles/ops_agent/tasks/shell.yml)."""

from __future__ import annotations

import argparse
import re
import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import portalops
from portalops import __version__
from portalops.cli.context import Context
from portalops.cli.output import Outcome
from portalops.cli.parser import global_actions, subcommands
from portalops.core.atomic import write_atomic
from portalops.core.errors import OpsError

SHELLS = ("bash", "zsh")


class CannotWrite(OpsError):
    """cannot write {}: {}"""


COMPLETION_EPILOG = """\
examples:
  source <(ops completion bash)                       try it in this shell
  ops completion bash --output /etc/bash_completion.d/ops
  ops completion zsh --output /usr/local/share/zsh/site-functions/_ops

The agent role installs the bash completion on every managed host."""

MANPAGE_EPILOG = """\
examples:
  ops manpage | man -l -                                 read it now
  ops manpage --output /usr/local/share/man/man1/ops.1   install it (then: man ops)"""

# Lines argparse-manpage emits as requests; any other line starting with "." or "'" is text
# that roff would take for a request and drop (a wrapped "'ops --json ...'" for one).
_REQUEST = re.compile(r"^\.(TH|SH|SS|TP|RS|RE|nf|fi|UR|UE|B|IP|PP)( |$)")


def build_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "completion",
        help="print the shell completion script for ops (bash or zsh)",
        description="Print a completion script for ops, generated from its own parser: "
        "every command, subcommand and option, with file names completed where an option "
        "takes a file.",
        epilog=COMPLETION_EPILOG,
    )
    p.add_argument("shell", choices=SHELLS, help="the shell to complete for")
    _output_option(p)
    p.set_defaults(run=_completion)

    p = commands.add_parser(
        "manpage",
        help="print the ops(1) manual page (roff)",
        description="Print the manual page of ops in roff, generated from its own parser: "
        "every command with its description, examples and options.",
        epilog=MANPAGE_EPILOG,
    )
    _output_option(p)
    p.set_defaults(run=_manpage)


def _output_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output", type=Path, metavar="FILE", help="write it here, 0644 (default: stdout)"
    )


def _parser(ctx: Context) -> argparse.ArgumentParser:
    if ctx.parser is None:
        raise OpsError("no command line parser to describe (a Context built without one)")
    return ctx.parser


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for ``shell``; options that take a path complete file names."""
    import shtab

    for action in _all_actions(parser):
        if action.type is Path:
            directory = action.metavar == "DIR"
            action.complete = shtab.DIRECTORY if directory else shtab.FILE  # type: ignore[attr-defined]
    return shtab.complete(parser, shell=shell)


def manual_page(parser: argparse.ArgumentParser, date: str) -> str:
    """ops(1) in roff, dated ``date``. This rewrites the help of the parser it is given
    (meant for one invocation's own): the global options are listed once, at the top, not
    under every command, and each command's examples (its epilog) follow its description."""
    from argparse_manpage.manpage import Manpage  # type: ignore[import-untyped]

    for command in subcommands(parser):
        for action in global_actions(command.parser):
            action.help = argparse.SUPPRESS
        text = "\n\n".join(t for t in (command.parser.description, command.parser.epilog) if t)
        command.parser.description = _roff_paragraphs(text) if text else None
    parser.description = _roff_paragraphs(parser.description or "")
    parser.epilog = _roff_paragraphs(parser.epilog or "")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    page = Manpage(parser, format="single-commands-section")
    page.date = date
    page.description = "operations toolkit for a province's e-portals"
    page.source = f"portal-ops {__version__}"
    page.manual = "portal-ops manual"
    return "".join(_escape(line) for line in str(page).splitlines(keepends=True))


def _roff_paragraphs(text: str) -> str:
    """Help text as roff: paragraphs on one line each (roff fills them to the page), indented
    blocks (examples) line by line between .nf and .fi, which argparse-manpage passes on."""
    out: list[str] = []
    for paragraph in textwrap.dedent(text).strip("\n").split("\n\n"):
        lines = paragraph.splitlines()
        if any(line.startswith(" ") for line in lines):
            out.append("\n".join([".nf", *lines, ".fi"]))
        else:
            out.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(out)


def _escape(line: str) -> str:
    """A text line that roff would read as a request gets the zero-width escape in front;
    characters beyond ASCII are written as roff's Unicode escapes (a groff without preconv
    would not read them otherwise)."""
    if line.startswith("'") or (line.startswith(".") and not _REQUEST.match(line)):
        line = "\\&" + line
    return "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in line)


def _all_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    parsers = [parser, *(command.parser for command in subcommands(parser))]
    return [action for each in parsers for action in each._actions]


def _completion(ctx: Context, args: argparse.Namespace) -> Outcome:
    return _deliver(ctx, args, completion_script(_parser(ctx), args.shell), args.shell)


def _manpage(ctx: Context, args: argparse.Namespace) -> Outcome:
    return _deliver(ctx, args, manual_page(_parser(ctx), manual_date(ctx.env.environ)), "man")


def manual_date(environ: Mapping[str, str]) -> str:
    """$SOURCE_DATE_EPOCH's day (reproducible builds), else the day this version of
    portal-ops was installed (its files' time): not today's, so that the page a host
    generates changes only with the program it describes (the agent role rewrites it only
    when it differs)."""
    epoch = environ.get("SOURCE_DATE_EPOCH", "")
    installed = Path(portalops.__file__).stat().st_mtime
    moment = int(epoch) if epoch.isdigit() else int(installed)
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d")


def _deliver(ctx: Context, args: argparse.Namespace, text: str, kind: str) -> Outcome:
    """To --output (atomically, 0644, readable by everyone's shell and man), or stdout as
    it is (with --json, inside a document: {"kind": ..., "text": ...})."""
    if args.output is not None:
        try:
            write_atomic(args.output, text.encode("utf-8"), mode=0o644)
        except OSError as exc:
            raise CannotWrite(args.output, exc.strerror or exc) from None
        return Outcome({"written": str(args.output), "kind": kind}, [f"wrote {args.output}"])
    return Outcome({"kind": kind, "text": text}, raw=text)
