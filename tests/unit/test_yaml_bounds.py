"""Every YAML file portal-ops reads is outside input: what an attacker (or an accident) can
put in one, tried through the real command line. Each must end in a clear exit-2 error that
names the file, never a MemoryError, a RecursionError or an 'internal error'."""

from __future__ import annotations

from pathlib import Path

import pytest

from portalops.core.yamlsrc import MAX_BYTES, MAX_DEPTH, MAX_NODES
from tests.fixtures.cli import run_ops

# Nine anchors, each a list of nine of the one before: 9**9 (387 million) values once
# expanded, in a few hundred bytes.
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [{', '.join(['*' + chr(ord('a') + i - 1)] * 9)}]\n"
    for i in range(1, 9)
)


def _config_check(path: Path) -> tuple[int, str]:
    result = run_ops("--config", str(path), "config", "check")
    return result.returncode, result.stderr


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("laughs.yaml", LAUGHS, f"more than {MAX_NODES:,} values once aliases are expanded"),
        ("cycle.yaml", "backup: &s\n  sources: [*s]\n", "an alias refers to a value that has it"),
        ("deep.yaml", "a: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n", "nested"),
        ("deeper.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ],
)  # fmt: skip
def test_a_hostile_config_is_bad_input(tmp_path: Path, name: str, text: str, said: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    code, stderr = _config_check(path)
    assert code == 2, stderr
    assert f"{path}:" in stderr
    assert said in stderr
    assert "internal error" not in stderr


def test_an_endless_or_huge_file_is_refused_after_the_bound(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as f:  # sparse: costs no disk
        f.truncate(MAX_BYTES + 1)
    code, stderr = _config_check(huge)
    assert code == 2, stderr
    assert f"{huge}: larger than 16 MiB" in stderr
    endless = run_ops("inventory", "prometheus-targets", "--servers", "/dev/zero")
    assert endless.returncode == 2, endless.stderr
    assert "/dev/zero: larger than 16 MiB" in endless.stderr


def test_the_same_bounds_guard_the_servers_file(tmp_path: Path) -> None:
    servers = tmp_path / "servers.yaml"
    servers.write_text(LAUGHS, encoding="utf-8")
    result = run_ops("inventory", "prometheus-targets", "--servers", str(servers))
    assert result.returncode == 2, result.stderr
    assert "once aliases are expanded" in result.stderr


def test_aliases_that_stay_small_still_work(tmp_path: Path) -> None:
    """Anchors are a fair way to share a list between sources: the bound is on size only."""
    path = tmp_path / "ops.yaml"
    path.write_text(
        "backup:\n"
        "  sources:\n"
        "    - {name: a, kind: files, category: code, paths: &webroots [/srv/a, /srv/b]}\n"
        "    - {name: b, kind: files, category: code, paths: *webroots}\n",
        encoding="utf-8",
    )
    code, stderr = _config_check(path)
    assert code == 0, stderr
