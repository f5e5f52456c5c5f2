"""What an ``ops`` command line imports before it does anything: building the parser and
printing help load no command implementation, and a command loads only its own group; the
lazily built parser answers exactly as the whole one does (help, errors, completion).

Behaviour, not timing: each check runs a fresh interpreter (``sys.modules`` of this test
process has everything loaded already) and looks at which modules it ended with.
bench/startup measures the time."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from portalops.cli.environment import Environment
from portalops.cli.main import COMMANDS, build_parser
from portalops.cli.output import Outcome, _plain_text, emit, table
from portalops.cli.parser import subcommands

ROOT = Path(__file__).resolve().parents[2]

#: Libraries no parser, help text or top-level error may load.
HEAVY = (
    "aiohttp",
    "apprise",
    "boto3",
    "botocore",
    "cryptography",
    "paramiko",
    "prometheus_client",
    "psycopg",
    "pydantic",
    "pymysql",
    "rich",
    "shtab",
    "yaml",
)

# Runs ops's main in a fresh interpreter with the given arguments (stdout and stderr to
# /dev/null: a pipe is not a terminal, as in cron), then prints the top-level packages it
# imported, its exit code, and whether each portalops.cli module was imported.
_PROBE = """
import contextlib, io, json, os, sys
from portalops.cli.main import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps({
    "code": code,
    "top": sorted({name.split(".")[0] for name in sys.modules}),
    "cli": sorted(n for n in sys.modules if n.startswith("portalops.cli.")),
    "all": sorted(sys.modules),
}))
"""


def _loaded(*argv: str, cwd: Path = ROOT) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)},
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["no-such-command"],
        ["backup", "list", "--help"],
    ],
    ids=lambda argv: " ".join(argv) or "(nothing)",
)
def test_help_and_parsing_load_no_heavy_library(argv: list[str]) -> None:
    found = _loaded(*argv)
    assert found["code"] in (0, 2)
    top = found["top"]
    assert isinstance(top, list)
    assert [name for name in HEAVY if name in top] == []


def test_top_level_help_builds_no_command_group() -> None:
    found = _loaded("--help")
    assert found["cli"] == [
        "portalops.cli.context",
        "portalops.cli.environment",
        "portalops.cli.main",
        "portalops.cli.output",
        "portalops.cli.parser",
    ]


def test_a_command_builds_only_its_own_group() -> None:
    found = _loaded("oncall", "who", "--help")
    cli = found["cli"]
    assert isinstance(cli, list)
    assert "portalops.cli.oncall" in cli
    others = {f"portalops.cli.{group}" for group, _ in COMMANDS} - {"portalops.cli.oncall"}
    assert others.isdisjoint(cli)


def test_inventory_check_loads_no_engine_or_service() -> None:
    """What ``ops inventory check`` truly needs: the estate's models, not the backup engine,
    the prober, on-call's service or the cloud and database clients."""
    found = _loaded("inventory", "check", cwd=ROOT)
    assert found["code"] == 0
    loaded = found["all"]
    assert isinstance(loaded, list)
    assert "portalops.inventory.servers" in loaded
    unwanted = ("portalops.backup", "portalops.monitors", "portalops.oncall", "aiohttp")
    assert [n for n in loaded if n.startswith(unwanted)] == []
    top = found["top"]
    assert isinstance(top, list)
    assert [name for name in HEAVY if name in top] == ["pydantic", "yaml"]


def test_the_registry_matches_the_groups() -> None:
    """COMMANDS lists each group's commands with the help lines the group gives them, in
    the order of the whole parser: the top level of a lazy parse is the whole one's."""
    whole = build_parser()
    listed = [(c.name.split()[1], c.help) for c in subcommands(whole) if c.name.count(" ") == 1]
    registered = [(name, help_line) for _, names in COMMANDS for name, help_line in names]
    assert registered == listed
    assert build_parser(()).format_help() == whole.format_help()


def test_every_group_built_alone_is_as_in_the_whole_parser() -> None:
    """Each group, built alone (as a command line of it builds it), has the same
    subcommands, options and help text as in the whole parser."""
    whole = {c.name: c.parser.format_help() for c in subcommands(build_parser())}
    for group, names in COMMANDS:
        own = {name for name, _ in names}
        alone = {
            c.name: c.parser.format_help()
            for c in subcommands(build_parser((group,)))
            if c.name.split()[1] in own
        }
        assert alone == {k: v for k, v in whole.items() if k.split()[1] in own}, group


def _as_rich_prints(parts: list[Any]) -> str:
    """What emit's rich console prints off a terminal (one line per row, never wrapped);
    a line of text is text to it, never markup ("[/x]" in a file name must not be read)."""
    from rich.console import Console
    from rich.text import Text

    out = io.StringIO()
    console = Console(file=out, highlight=False, force_terminal=False, width=100_000)
    for part in parts:
        console.print(Text(part) if isinstance(part, str) else part)
    return out.getvalue()


_CELLS = [
    "7e925615",
    "2026-12-07 08:16:02Z",
    "Tĩnh Vĩnh Phúc — ủy ban",
    "",
    "a\\b",
    "x" * 30,
    "[bold]markup[/bold]",
    "closes nothing [/x]",
    ":thumbs_up: :100: 1:100:",
    "tab\there",
    "two\nlines",
    "wide 日本",
    "bell\x07",
    "e\u0301 combining",
]


@pytest.mark.parametrize(
    "parts",
    [
        [table(None, ["id", "time"], [[c, "08:00"] for c in _CELLS[:6]])],
        [table("on call at 2026-12-07 15:21 +07", ["rotation", "note"], [["primary", None]])],
        [table("a title wider than its table", ["a", "b"], [["x", 1]])],
        [table(None, ["only"], [])],
        ["team lead: An (an)", table(None, ["k", "n"], [["x", 3]]), "OK — done"],
        *([c, table(None, ["c"], [[c]]), table(c, ["c"], [["x" * 40]])] for c in _CELLS),
    ],
)
def test_plain_output_is_what_rich_prints(parts: list[Any]) -> None:
    """Off a terminal, emit writes tables and texts itself when it can be sure of rich's
    output, and leaves the rest to rich: either way the bytes are rich's."""
    out = io.StringIO()
    emit(Outcome(None, parts), False, Environment(stdout=out, stderr=io.StringIO()))
    assert out.getvalue() == _as_rich_prints(parts)


def test_plain_output_is_used_for_plain_tables() -> None:
    assert _plain_text([table(None, ["a"], [["Vĩnh Phúc 08:00"]]), "done"]) is not None
    assert _plain_text(["[bold]x[/bold]"]) is None


def test_one_section_reading_knows_every_top_level_key() -> None:
    from portalops.cli.context import DEFAULT_STATE_DIR, TOP_LEVEL_KEYS
    from portalops.settings import Settings

    assert tuple(Settings.model_fields) == TOP_LEVEL_KEYS
    assert Settings.model_fields["state_dir"].default == DEFAULT_STATE_DIR


_BROKEN_BACKUP = """\
state_dir: /tmp/x
backup:
  repositories: [{name: local, url: /tmp/r, atempts: 3}]
  retention: {daily: -1}
  schedule: {backup: 12:30}
oncall:
  people: [{id: an, name: An, channels: ['mailto://an@example.org']}]
"""


@pytest.mark.parametrize(
    ("text", "argv"),
    [
        (_BROKEN_BACKUP, ["backup", "list"]),
        (_BROKEN_BACKUP.replace("state_dir:", "stat_dir:"), ["oncall", "who"]),
        ("oncall: {people: [{id: an}], teamlead: an}\n", ["oncall", "who"]),
    ],
)
def test_a_section_read_alone_is_as_strict_as_the_whole_file(
    tmp_path: Path, text: str, argv: list[str]
) -> None:
    """A command that reads one section reports exactly what ``ops config check`` (the whole
    file) reports for that section and the top level, with the same lines and words."""
    from tests.fixtures.cli import run_ops

    config = tmp_path / "ops.yaml"
    config.write_text(text, encoding="utf-8")
    whole = run_ops("config", "check", config=config)
    alone = run_ops(*argv, config=config)
    assert whole.code == alone.code == 2
    section = argv[0]
    expected = [
        line
        for line in whole.stderr.splitlines()
        if f": {section}." in line or f": {section}:" in line or ": stat_dir:" in line
    ]
    assert expected
    assert [line for line in alone.stderr.splitlines() if str(config) in line] == expected


def test_a_command_reads_only_its_section() -> None:
    """``backup list`` imports no on-call or prober models; ``oncall who`` no backup ones."""
    config = ROOT / "config" / "ops.example.yaml"
    for argv, unwanted in (
        (["backup", "list"], ("portalops.oncall.", "portalops.monitors.")),
        (["oncall", "who"], ("portalops.backup.", "portalops.monitors.")),
    ):
        loaded = _loaded("--config", str(config), *argv)["all"]
        assert isinstance(loaded, list)
        assert [n for n in loaded if n.startswith(unwanted)] == [], argv
        assert "portalops.settings" not in loaded


def test_a_section_a_command_does_not_read_is_not_checked(tmp_path: Path) -> None:
    """The other side of reading one section: ``oncall who`` answers as it would without
    the broken ``monitor`` section (``ops config check`` and the jobs that read it fail)."""
    from tests.fixtures.cli import run_ops

    oncall = (
        "oncall:\n  team_lead: an\n"
        "  people: [{id: an, name: An, channels: ['mailto://an@example.org']}]\n"
        "  rotations:\n"
        "    primary: {people: [an], every: week, handover: '08:00', start: 2026-01-05}\n"
        "    secondary: {people: [an], every: week, handover: '08:00', start: 2026-01-05}\n"
    )
    clean, broken = tmp_path / "clean.yaml", tmp_path / "broken.yaml"
    clean.write_text(oncall, encoding="utf-8")
    broken.write_text(oncall + "monitor: {concurrency: many}\n", encoding="utf-8")
    at = ["oncall", "who", "--at", "2026-12-07 10:00"]
    answer = run_ops(*at, config=broken)
    assert (answer.code, answer.stdout) == (0, run_ops(*at, config=clean).stdout)
    assert "primary" in answer.stdout
    assert run_ops("config", "check", config=broken).code == 2
