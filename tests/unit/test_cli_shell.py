"""``ops completion bash|zsh`` and ``ops manpage``: generated from the parser, checked with the
real programs (bash's completion machinery, groff and man)."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from portalops.cli.main import build_parser
from portalops.cli.parser import subcommands
from tests.fixtures.cli import run_ops
from tests.fixtures.paths import OPS_PY

VENV_BIN = Path(sys.executable).parent

# Bash's programmable completion, driven as readline would: COMP_WORDS/COMP_CWORD set, the
# function `complete -p ops` names called, COMPREPLY printed one per line.
COMPLETE = r"""
source "$1"
spec=$(complete -p ops) || exit 3
func=$(sed -n 's/.* -F \([^ ]*\) .*/\1/p' <<<"$spec")
shift
COMP_WORDS=(ops "$@")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="${COMP_WORDS[*]}"
COMP_POINT=${#COMP_LINE}
"$func" ops "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "ops.bash"
    result = run_ops("completion", "bash", "--output", str(path))
    assert result.code == 0, result.stderr
    return path


def _complete(script: Path, *words: str) -> list[str]:
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", COMPLETE, "complete", str(script), *words],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


def test_bash_sources_it_and_registers_ops(bash_script: Path) -> None:
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", 'source "$0" && complete -p ops', bash_script],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert re.fullmatch(r"complete .*-F \S+ ops\n", done.stdout), done.stdout


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["back"], ["backup"]),
        (["backup", "li"], ["list"]),
        (["backup", "list", "--js"], ["--json"]),  # a global option after the command
        (["--con"], ["--config"]),
        (["completion", ""], ["bash", "zsh"]),
        (["oncall", "s"], ["serve"]),
    ],
)
def test_bash_completes_commands_and_options(
    bash_script: Path, words: list[str], expected: list[str]
) -> None:
    assert sorted(_complete(bash_script, *words)) == expected


def test_bash_completes_every_top_level_command(bash_script: Path) -> None:
    commands = {c.name.split()[1] for c in subcommands(build_parser()) if c.name.count(" ") == 1}
    assert {"backup", "completion", "manpage", "provision"} <= commands
    assert set(_complete(bash_script, "")) >= commands


def test_bash_completes_file_names_for_file_options(bash_script: Path, tmp_path: Path) -> None:
    (tmp_path / "site-ops.yaml").write_text("{}\n", encoding="utf-8")
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", COMPLETE, "complete", str(bash_script),
         "--config", str(tmp_path / "site-")],
        capture_output=True, text=True, timeout=30, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(tmp_path / "site-ops.yaml")]


def test_the_console_script_prints_it_to_stdout() -> None:
    """As the README shows it: `source <(ops completion bash)` in a real bash."""
    script = f"source <({VENV_BIN / 'ops'} completion bash); complete -p ops"
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith(" ops\n")


def test_zsh_script() -> None:
    result = run_ops("completion", "zsh")
    assert result.code == 0, result.stderr
    assert result.stdout.startswith("#compdef ops")
    for command in ("backup", "drill", "manpage", "oncall"):
        assert command in result.stdout
    zsh = shutil.which("zsh")
    if zsh is not None:  # not installed on every machine: then the structure above only
        done = subprocess.run([zsh, "-n"], input=result.stdout, text=True, timeout=30,
                              capture_output=True, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr


def test_an_unknown_shell_is_exit_2() -> None:
    result = run_ops("completion", "fish")
    assert result.code == 2
    assert "invalid choice: 'fish'" in result.stderr


def test_output_to_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "ops"
    result = run_ops("completion", "bash", "--output", str(target))
    assert result.code == 3
    assert result.stderr == f"ops: cannot write {target}: No such file or directory\n"


# -- the man page ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manpage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("man") / "ops.1"
    result = run_ops("manpage", "--output", str(path), environ={"SOURCE_DATE_EPOCH": "1767225600"})
    assert result.code == 0, result.stderr
    assert result.stdout == f"wrote {path}\n"
    return path


def test_manpage_file_is_0644_and_dated_by_source_date_epoch(manpage: Path) -> None:
    assert stat.S_IMODE(manpage.stat().st_mode) == 0o644
    assert manpage.read_text(encoding="ascii").startswith(
        '.TH OPS "1" "2026\\-01\\-01" "portal\\-ops '
    )


def test_groff_reads_it_without_a_warning(manpage: Path) -> None:
    groff = shutil.which("groff")
    assert groff is not None, "groff (Debian package groff-base) is needed"
    done = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z", str(manpage)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")


def test_man_renders_every_command_with_its_examples(manpage: Path) -> None:
    man = shutil.which("man")
    assert man is not None, "man (Debian package man-db) is needed"
    done = subprocess.run(
        [man, "-l", str(manpage)], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "MANWIDTH": "200", "PAGER": "cat"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    page = re.sub(".\x08", "", done.stdout)  # overstrike bold, if man kept it
    for command in subcommands(build_parser()):
        assert re.search(rf"^ +{re.escape(command.name)}$", page, re.MULTILINE), command.name
    assert "ops - operations toolkit for a province's e-portals" in page
    assert "GLOBAL OPTIONS (BEFORE OR AFTER THE COMMAND)" in page
    # the examples, line by line (.nf), and a line that roff would have dropped as a request
    assert "\n         ops backup check --read-data 10             and a rotating tenth" in page
    assert "'ops backup list --json' are the same" in page
    assert "Decision 32/2023/QĐ-UBND" in page  # non-ASCII through roff's \[u....] escapes
    # the global options are listed once, not under each of the commands
    assert len(re.findall(r"^ +--units FILE$", page, re.MULTILINE)) == 1


def test_manpage_on_stdout_and_in_json() -> None:
    plain = run_ops("manpage")
    assert plain.code == 0, plain.stderr
    assert plain.stdout.startswith(".TH OPS ")
    doc = run_ops("--json", "manpage")
    assert json.loads(doc.stdout) == {"kind": "man", "text": plain.stdout}


def test_manpage_date_without_source_date_epoch_is_stable() -> None:
    """The date of the installed version, not today's: a host's page changes only with it."""
    environ = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    first = run_ops("manpage", environ=environ).stdout.splitlines()[0]
    second = subprocess.run(
        [sys.executable, str(OPS_PY), "manpage"], capture_output=True, text=True, timeout=60,
        check=True, env=environ,
    ).stdout.splitlines()[0]  # fmt: skip
    assert first == second
    assert re.fullmatch(r'\.TH OPS "1" "\d{4}\\-\d\d\\-\d\d" "portal\\-ops .*', first)
