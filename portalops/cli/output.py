"""What a command hands back to cli.main: a JSON document, what a person reads, an exit code."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portalops.cli.environment import Environment
from portalops.core.errors import ExitCode
from portalops.core.timefmt import iso_z

if TYPE_CHECKING:
    # rich is imported by what renders (table, emit), not by what only parses (--help).
    from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
    from rich.table import Table as RichTable


@dataclass
class Outcome:
    """A finished command: ``data`` is the --json document, ``human`` what a person reads."""

    data: Any
    human: list[RenderableType] = field(default_factory=list)
    exit_code: ExitCode = ExitCode.OK
    force_json: bool = False  # protocols that only speak JSON (Ansible's inventory script)
    # Printed exactly as it is instead of ``human`` (a script, a man page, a config file): no
    # table renderer to wrap its lines or read its brackets as markup.
    raw: str | None = None


#: What the plain writer (:func:`_plain_text`) prints exactly as rich would: characters one
#: cell wide in rich's measure (ASCII, Latin-1, Latin Extended A/B and Additional: Vietnamese
#: names, dashes and quotes), with no control character, no tab (rich expands it) and no
#: ``[`` (rich markup). tests/unit/test_cli_startup.py holds rich to it.
_PLAIN_SAFE = re.compile(r"[\x20-\x5a\x5c-\x7e\xa0-\u024f\u1e00-\u1eff\u2010-\u2027]*")
#: Rich replaces ``:name:`` with an emoji when it knows the name; none is one or two digits,
#: so ``08:16:02`` is printed as it is. Any other ``:...:`` goes through rich.
_EMOJI_LIKE = re.compile(r":(\S*?):")
#: Rich wraps lines longer than the console; emit's console is this wide off a terminal.
_PLAIN_WIDTH = 100_000


def _plain_safe(text: str) -> bool:
    if _PLAIN_SAFE.fullmatch(text) is None:
        return False
    return all(len(m[1]) <= 2 and m[1].isdigit() for m in _EMOJI_LIKE.finditer(text))


@dataclass(frozen=True)
class Table:
    """A plain table: a title (or None), column headings and rows of text. It is a rich
    renderable (``__rich_console__``) for a terminal; for a pipe, cron's mail or the journal
    :func:`emit` writes the same characters itself, without importing rich (about 0.05 s of
    a short command), whenever it can be sure they are what rich would print."""

    title: str | None
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def to_rich(self) -> RichTable:
        """The rich table: rich drops colour and box art when stdout is not a terminal."""
        from rich import box
        from rich.table import Table as RichTableClass
        from rich.text import Text

        out = RichTableClass(
            title=Text(self.title) if self.title else None,
            title_justify="left",
            header_style="bold",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
        )
        for column in self.columns:
            out.add_column(Text(column), overflow="fold")
        for row in self.rows:  # cells are text, never markup: a name may hold "[/x]"
            out.add_row(*(Text(cell) for cell in row))
        return out

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.to_rich()

    def plain(self) -> str | None:
        """What rich prints for this table off a terminal (headings, a rule, one line per
        row; one space of padding inside each column but the outer two, one space between
        columns; the title padded to the table's width), or None when that is not certain
        (wide or control characters, markup, emoji names, a title that would wrap)."""
        cells = [self.columns, *self.rows]
        if any(len(row) != len(self.columns) for row in cells):
            return None
        if not all(_plain_safe(cell) for row in cells for cell in row):
            return None
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        last = len(widths) - 1
        # Each column's width with its padding, then one divider between columns.
        total = sum(widths) + 2 * last + last
        if total > _PLAIN_WIDTH:
            return None
        lines = []
        if self.title:  # rich shows no empty title
            if not _plain_safe(self.title) or len(self.title) > total:
                return None
            lines.append(self.title.ljust(total))
        for n, row in enumerate(cells):
            lines.append("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
            if n == 0:
                lines.append("\u2500" * total)
        return "".join(line + "\n" for line in lines)


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """A plain table of ``rows`` (None cells are left empty, others shown by ``str``)."""
    return Table(
        title,
        tuple(columns),
        tuple(tuple("" if cell is None else str(cell) for cell in row) for row in rows),
    )


def _plain_text(parts: Sequence[Any]) -> str | None:
    """What rich prints off a terminal for ``parts`` when each is a text or a :class:`Table`
    that :meth:`Table.plain` is sure of; None otherwise (rich prints them)."""
    out = []
    for part in parts:
        if isinstance(part, Table):
            text = part.plain()
            if text is None:
                return None
            out.append(text)
        elif isinstance(part, str) and len(part) <= _PLAIN_WIDTH and _plain_safe(part):
            out.append(part + "\n")
        else:
            return None
    return "".join(out)


#: What json.dumps leaves raw with ensure_ascii=False and a terminal may act on (U+009B is a
#: CSI): written as \u escapes, which mean the same to a JSON reader (strings only hold them).
_C1 = re.compile(r"[\x7f-\x9f]")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return iso_z(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def emit(outcome: Outcome, as_json: bool, env: Environment) -> None:
    """Print the outcome on env.stdout: one JSON document, or the human rendering."""
    if as_json or outcome.force_json:
        text = json.dumps(outcome.data, ensure_ascii=False, indent=2, default=_default)
        env.stdout.write(_C1.sub(lambda m: f"\\u{ord(m.group()):04x}", text))
        env.stdout.write("\n")
        return
    if outcome.raw is not None:
        env.stdout.write(outcome.raw)
        return
    if not env.stdout_is_tty:
        plain = _plain_text(outcome.human)
        if plain is not None:
            env.stdout.write(plain)
            return
    from rich.console import Console

    if env.stdout_is_tty:
        console = Console(
            file=env.stdout, highlight=False, force_terminal=True, _environ=env.environ
        )
    else:
        # Piped into grep or a mail: one line per row, never wrapped at 80 columns.
        console = Console(
            file=env.stdout, highlight=False, force_terminal=False, width=100_000,
            _environ=env.environ,
        )  # fmt: skip
    from rich.text import Text

    for part in outcome.human:  # a line of text is text, never markup or emoji names
        console.print(Text(part) if isinstance(part, str) else part)
