"""The command line's habits: global options before or after the command, a help line for
every command and option (and descriptions with examples that parse for the main ones), and
where the config comes from (--config, $PORTAL_OPS_CONFIG, /etc/portal-ops/ops.yaml,
./config/ops.yaml)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import pytest

from portalops.cli.environment import SYSTEM_CONFIG, Environment
from portalops.cli.main import build_parser
from portalops.cli.parser import GLOBAL_TITLE, subcommands
from tests.fixtures.backup_env import BackupEnv
from tests.fixtures.cli import run_ops
from tests.fixtures.paths import OPS_PY, PROJECT

# The commands an operator meets first: each has a description of its own (not only its help
# line) and examples in its epilog.
MAIN_COMMANDS = (
    "ops backup run",
    "ops backup list",
    "ops backup restore",
    "ops backup check",
    "ops drill",
    "ops monitor serve",
    "ops oncall serve",
    "ops provision",
    "ops inventory",
    "ops cron",
)

# -- where the global options go ------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "inventory", "domains"],
        ["inventory", "domains", "--json"],
        ["inventory", "--json", "domains"],
    ],
)
def test_json_before_or_after_the_command_is_the_same(argv: list[str]) -> None:
    result = run_ops(*argv, cwd=PROJECT)
    assert result.code == 0, result.stderr
    assert any(d["unit"] == "Xã Đạo Trù" for d in json.loads(result.stdout))


def test_units_after_the_command_and_a_copy_not_given_changes_nothing() -> None:
    example = "inventory/examples/phutho-2025.yaml"
    after = run_ops("inventory", "check", "--units", example, "--json", cwd=PROJECT)
    before = run_ops("--units", example, "--json", "inventory", "check", cwd=PROJECT)
    assert after.code == before.code == 0, after.stderr + before.stderr
    assert json.loads(after.stdout) == json.loads(before.stdout)
    assert json.loads(after.stdout)["levels"] == 2  # the example, not the shipped estate


def test_the_subcommand_copy_never_resets_what_came_before() -> None:
    """argparse copies a subparser's defaults over the namespace; the copies' SUPPRESS
    defaults must keep values given before the command (and the later one wins)."""
    parser = build_parser()
    parsed = parser.parse_args(["--json", "-v", "--config", "a.yaml", "backup", "list"])
    assert (parsed.json, parsed.verbose, parsed.config) == (True, True, Path("a.yaml"))
    parsed = parser.parse_args(["backup", "list", "--json", "-v"])
    assert (parsed.json, parsed.verbose, parsed.config, parsed.units) == (True, True, None, None)
    parsed = parser.parse_args(["--config", "a.yaml", "backup", "list", "--config", "b.yaml"])
    assert parsed.config == Path("b.yaml")
    parsed = parser.parse_args(["backup", "list"])
    assert (parsed.json, parsed.verbose, parsed.config, parsed.units) == (False, False, None, None)


def test_backup_list_with_json_and_v_after_it(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    env = local_backup_env
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>Cổng thông tin</h1>\n", encoding="utf-8")
    env.add_source("site", site)
    env.ops("backup", "run", check=True)
    listed = env.ops("backup", "list", "--json", "-v")
    assert listed.code == 0, listed.stderr
    assert [s["source"] for s in json.loads(listed.stdout)] == ["site"]
    # -v after the command: the debug logs are on, and say which config was read
    assert f"<6>portalops.cli.context: config: {env.config} (--config)\n" in listed.stderr


def test_an_unknown_option_after_the_command_is_still_exit_2() -> None:
    result = run_ops("inventory", "domains", "--jsonn")
    assert result.code == 2
    assert "unrecognized arguments: --jsonn" in result.stderr


# -- help for everything --------------------------------------------------------------------


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    parser = build_parser()
    return [("ops", parser), *((c.name, c.parser) for c in subcommands(parser))]


def test_every_command_and_option_has_help() -> None:
    """Every subcommand is listed with a help line and has a description; every option and
    argument of every command (all command modules) has a help text."""
    root = build_parser()
    missing: list[str] = []
    commands = list(subcommands(root))
    assert len(commands) > 35  # the walk reaches the nested commands
    for command in commands:
        if not (command.help and command.help.strip()):
            missing.append(f"{command.name}: no help line")
        if not (command.parser.description and command.parser.description.strip()):
            missing.append(f"{command.name}: no description")
    for name, parser in _parsers():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            if not (action.help and action.help.strip()):
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_the_walk_sees_an_option_without_help() -> None:
    """The test above can fail: an option added without help is found."""
    parser = build_parser()
    backup = next(c.parser for c in subcommands(parser) if c.name == "ops backup list")
    backup.add_argument("--undocumented")
    found = [
        action.dest
        for _, each in [("ops", parser), *((c.name, c.parser) for c in subcommands(parser))]
        for action in each._actions
        if not action.help and not isinstance(action, argparse._SubParsersAction)
    ]
    assert found == ["undocumented"]


@pytest.mark.parametrize("name", MAIN_COMMANDS)
def test_main_commands_have_a_description_and_examples_that_parse(name: str) -> None:
    command = next(c for c in subcommands(build_parser()) if c.name == name)
    description = command.parser.description or ""
    assert len(description) > len(command.help or "") + 20, description  # not the help line
    epilog = command.parser.epilog or ""
    assert "examples:" in epilog, epilog
    examples = _examples(epilog)
    assert any(e[: len(name.split()) - 1] == name.split()[1:] for e in examples), examples
    for argv in examples:
        assert _parse_status(argv) == 0, f"ops {shlex.join(argv)} does not parse"


def test_every_example_in_every_epilog_parses() -> None:
    """An example is a promise: each ``ops ...`` line of any command's epilog is accepted by
    the parser (the explanation after it is three spaces or more away)."""
    wrong = [
        f"{name}: ops {shlex.join(argv)}"
        for name, parser in _parsers()
        for argv in _examples(parser.epilog or "")
        if _parse_status(argv) != 0
    ]
    assert wrong == []


def _examples(epilog: str) -> list[list[str]]:
    """The ``ops ...`` command lines of an epilog (continuations joined, the description
    column and shell redirections cut off), without the leading ``ops``."""
    text = epilog.replace("\\\n", " ")
    examples = []
    for line in text.splitlines():
        if not line.startswith("  ops "):
            continue
        command = line.strip().split("   ")[0]  # three spaces: the explaining column
        words = shlex.split(command)
        for stop in (">", "|", "2>"):
            if stop in words:
                words = words[: words.index(stop)]
        examples.append(words[1:])
    return examples


def _parse_status(argv: list[str]) -> int:
    try:
        with redirect_stdout(StringIO()), redirect_stderr(StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_the_global_options_are_in_every_commands_help() -> None:
    helped = run_ops("backup", "list", "--help")
    assert helped.code == 0
    assert GLOBAL_TITLE in helped.stdout
    assert "--source S" in helped.stdout
    assert "only this source's snapshots" in helped.stdout
    top = run_ops("--help")
    assert "before or after the command" in top.stdout
    assert "$PORTAL_OPS_CONFIG" in top.stdout
    assert top.stdout.count("/etc/portal-ops/ops.yaml") == 2  # never broken at its hyphen


# -- where the config comes from ------------------------------------------------------------


@pytest.fixture
def configs(tmp_path: Path) -> dict[str, Path]:
    """Four configs, one per place the lookup knows, told apart by their state_dir."""
    places = {
        "flag": tmp_path / "flag.yaml",
        "variable": tmp_path / "variable.yaml",
        "system": tmp_path / "etc" / "ops.yaml",
        "cwd": tmp_path / "work" / "config" / "ops.yaml",
    }
    for name, path in places.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"state_dir: {tmp_path / ('state-' + name)}\n", encoding="utf-8")
    return places


def _which(
    configs: dict[str, Path], tmp_path: Path, *, flag: bool, variable: bool, system: bool
) -> tuple[str | None, str]:
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if variable:
        environ["PORTAL_OPS_CONFIG"] = str(configs["variable"])
    result = run_ops(
        "-v", "--json", "config", "check",
        config=configs["flag"] if flag else None,
        cwd=configs["cwd"].parent.parent,
        environ=environ,
        system_config=configs["system"] if system else tmp_path / "absent" / "ops.yaml",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    state_dir = Path(json.loads(result.stdout)["settings"]["state_dir"])
    return state_dir.name.removeprefix("state-"), result.stderr


def test_config_lookup_order(configs: dict[str, Path], tmp_path: Path) -> None:
    which, said = _which(configs, tmp_path, flag=True, variable=True, system=True)
    assert which == "flag"
    assert f"config: {configs['flag']} (--config)" in said
    which, said = _which(configs, tmp_path, flag=False, variable=True, system=True)
    assert which == "variable"
    assert f"config: {configs['variable']} ($PORTAL_OPS_CONFIG)" in said
    which, said = _which(configs, tmp_path, flag=False, variable=False, system=True)
    assert which == "system"
    assert f"config: {configs['system']} (the system-wide config)" in said
    which, said = _which(configs, tmp_path, flag=False, variable=False, system=False)
    assert which == "cwd"
    assert f"config: {configs['cwd']} (default config/ops.yaml)" in said
    configs["cwd"].unlink()
    which, said = _which(configs, tmp_path, flag=False, variable=False, system=False)
    assert which == "portal-ops"  # the built-in default, /var/lib/portal-ops
    assert "config: built-in defaults (no --config, no $PORTAL_OPS_CONFIG, no " in said


@pytest.mark.parametrize(
    ("how", "named_by"),
    [("flag", "--config"), ("variable", "$PORTAL_OPS_CONFIG")],
)
def test_a_config_named_explicitly_must_exist(tmp_path: Path, how: str, named_by: str) -> None:
    """Never a silent fall back to another config (the system-wide one exists here)."""
    missing = tmp_path / "missing.yaml"
    system = tmp_path / "system.yaml"
    system.write_text("state_dir: /tmp/elsewhere\n", encoding="utf-8")
    environ = {"PORTAL_OPS_CONFIG": str(missing)} if how == "variable" else {}
    result = run_ops(
        "config", "check",
        config=missing if how == "flag" else None,
        environ=environ,
        system_config=system,
    )  # fmt: skip
    assert result.code == 2
    assert result.stderr == f"ops: {missing}: no such config file (named by {named_by})\n"
    assert result.stdout == ""


def test_an_empty_variable_is_no_config(tmp_path: Path) -> None:
    system = tmp_path / "system.yaml"
    system.write_text(f"state_dir: {tmp_path / 'state-system'}\n", encoding="utf-8")
    result = run_ops(
        "--json", "config", "check", environ={"PORTAL_OPS_CONFIG": ""}, system_config=system
    )
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["file"] == str(system)


def test_a_command_that_reads_no_config_does_not_look_for_one(tmp_path: Path) -> None:
    """The lookup is lazy: ops inventory does not fail on a config it does not read."""
    result = run_ops(
        "--json", "inventory", "domains",
        environ={"PORTAL_OPS_CONFIG": str(tmp_path / "missing.yaml")}, cwd=PROJECT,
    )  # fmt: skip
    assert result.code == 0, result.stderr


def test_the_real_process_reads_the_variable_and_knows_the_system_path(tmp_path: Path) -> None:
    assert Environment.from_process().system_config == SYSTEM_CONFIG
    assert Path("/etc/portal-ops/ops.yaml") == SYSTEM_CONFIG
    config = tmp_path / "from-variable.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state-variable'}\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(OPS_PY), "--json", "config", "check", "-v"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
        env={**os.environ, "PORTAL_OPS_CONFIG": str(config)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["file"] == str(config)
    assert f"<6>portalops.cli.context: config: {config} ($PORTAL_OPS_CONFIG)\n" in done.stderr
