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
    from rich.console import RenderableType
    from rich.table import Table


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


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """A plain table; rich drops colour and box art when stdout is not a terminal."""
    from rich import box
    from rich.table import Table

    out = Table(
        title=title,
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    for column in columns:
        out.add_column(column, overflow="fold")
    for row in rows:
        out.add_row(*("" if cell is None else str(cell) for cell in row))
    return out


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
    for part in outcome.human:
        console.print(part)
