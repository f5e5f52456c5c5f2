"""ops.yaml's reference cannot drift from the models: every key has a description,
docs/configuration.md is what ``ops config schema --markdown`` prints, and
config/ops.example.yaml validates through the real loader and shows every key.

What "shows" means: a key written in the example, or a commented key, a line
``# key: value`` (or ``# - {...}`` for a list item) whose ``# `` removed makes it part of the
YAML at that place. :func:`uncommented` removes them all; the result must validate too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from portalops.cli.context import PROJECT_ROOT
from portalops.core import schemadoc
from portalops.core.validate import Strict
from portalops.settings import REGENERATE, load_settings, settings_reference, settings_schema
from tests.fixtures.cli import run_ops

EXAMPLE = PROJECT_ROOT / "config" / "ops.example.yaml"
REFERENCE = PROJECT_ROOT / "docs" / "configuration.md"

# "# key: value", "#   key:", "#     - {id: an, ...}", "# - key: value" at any indentation
_COMMENTED = re.compile(r"^(\s*)# (\s*(?:- )?(?:[A-Za-z_][A-Za-z0-9_]*:(?:\s|$)|\{).*)$")


def uncommented(text: str) -> str:
    """``text`` with every commented key made a key: the first ``# `` of its line removed."""
    return "\n".join(_COMMENTED.sub(r"\1\2", line) for line in text.splitlines()) + "\n"


def _full_example(tmp_path: Path) -> Path:
    path = tmp_path / "ops.yaml"
    path.write_text(uncommented(EXAMPLE.read_text(encoding="utf-8")), encoding="utf-8")
    return path


def _as_json(data: Any) -> Any:
    """What a YAML editor's schema check sees: dates are text."""
    return json.loads(json.dumps(data, default=str))


def test_every_key_has_a_description() -> None:
    schema = settings_schema()
    missing = [k.path for k in schemadoc.keys(schema) if not k.description]
    assert not missing, (
        "keys of ops.yaml without a description (write a docstring under the field): "
        + ", ".join(missing)
    )
    undocumented = [
        name
        for name, model in schema["$defs"].items()
        if "properties" in model and not model.get("description")
    ]
    assert not undocumented, f"config models without a docstring: {', '.join(undocumented)}"


def test_the_issue_keys_are_documented() -> None:
    """The six keys documented nowhere before the reference existed."""
    documented = {k.path: k.description for k in schemadoc.keys(settings_schema())}
    for path in (
        "monitor.http_port",
        "monitor.https_port",
        "oncall.link_key_file",
        "oncall.tick",
        "oncall.alertmanager.critical_repeat_interval",
        "oncall.alertmanager.webhook_url",
    ):
        assert documented[path], path


def test_reference_is_generated() -> None:
    result = run_ops("config", "schema", "--markdown")
    assert result.code == 0, result.stderr
    assert result.stdout == settings_reference()
    committed = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else ""
    assert committed == result.stdout, (
        f"docs/configuration.md differs from the config models; regenerate it: {REGENERATE}"
    )


def test_reference_lists_every_key_and_source_kind() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    for key in schemadoc.keys(settings_schema()):
        assert f"| `{key.path}` |" in text or f"\n## `{key.path}`\n" in text, key.path
    for kind in ("files", "postgres", "mariadb", "command", "ssh"):
        assert f"### `backup.sources` with `kind: {kind}`" in text


def test_schema_command_prints_a_valid_json_schema() -> None:
    for argv in (("config", "schema"), ("--json", "config", "schema")):
        result = run_ops(*argv)
        assert result.code == 0, result.stderr
        schema = json.loads(result.stdout)
        assert schema == settings_schema()
    Draft202012Validator.check_schema(schema)
    assert set(schema["properties"]) == {
        "state_dir", "metrics", "backup", "monitor", "drill", "oncall"
    }  # fmt: skip
    markdown = json.loads(run_ops("--json", "config", "schema", "--markdown").stdout)
    assert markdown == {"markdown": settings_reference()}


def test_schema_needs_no_config_file(tmp_path: Path) -> None:
    """A broken ops.yaml must not keep anyone from reading what it should say."""
    broken = tmp_path / "ops.yaml"
    broken.write_text("backup: {retension: 3}\n", encoding="utf-8")
    assert run_ops("config", "check", config=broken).code == 2
    assert run_ops("config", "schema", config=broken).code == 0


def test_example_and_its_commented_keys_validate_through_the_loader(tmp_path: Path) -> None:
    full = _full_example(tmp_path)
    for path in (EXAMPLE, full):
        result = run_ops("config", "check", config=path)
        assert result.code == 0, result.stdout + result.stderr
        load_settings(path)
    # the commented keys are there: the oncall section, for one
    assert load_settings(full).oncall.people
    assert not load_settings(EXAMPLE).oncall.people


def test_example_shows_every_key(tmp_path: Path) -> None:
    schema = settings_schema()
    data = yaml.safe_load(_full_example(tmp_path).read_text(encoding="utf-8"))
    shown = schemadoc.written_paths(schema, data)
    missing = [k.path for k in schemadoc.keys(schema) if k.path not in shown]
    assert not missing, (
        "config/ops.example.yaml shows every key, as a key or a commented '# key: value' "
        "line; missing: " + ", ".join(missing)
    )


def test_json_schema_accepts_the_example(tmp_path: Path) -> None:
    """The published schema is what the loader accepts, e.g. durations written as 5m."""
    data = yaml.safe_load(_full_example(tmp_path).read_text(encoding="utf-8"))
    validator = Draft202012Validator(settings_schema())
    problems = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(_as_json(data))]
    assert not problems
    wrong = {**data, "oncall": {**data["oncall"], "tick": "5 minutes"}}
    assert list(validator.iter_errors(_as_json(wrong)))


class _Inner(Strict):
    documented: int = 1
    """Says what it is."""
    bare: str = ""


class _Outer(Strict):
    """A model for the checks' own tests."""

    inner: _Inner = _Inner()
    """Nested."""
    items: list[_Inner] = []
    """Listed."""


def test_the_checks_can_fail() -> None:
    schema = schemadoc.json_schema(_Outer)
    keys = {k.path: k for k in schemadoc.keys(schema)}
    assert set(keys) == {
        "inner", "inner.documented", "inner.bare", "items", "items[].documented", "items[].bare"
    }  # fmt: skip
    assert keys["inner.documented"].description == "Says what it is."
    assert keys["inner.bare"].description == ""
    written = schemadoc.written_paths(schema, {"inner": {"bare": "x"}, "items": [{}]})
    assert written == {"inner", "inner.bare", "items"}


def test_uncommenting_takes_keys_not_prose() -> None:
    text = (
        "a:\n"
        "  # b: 1          # a commented key\n"
        "  # prose, with: a colon later\n"
        "  # c:\n"
        "  #   - {d: 2}\n"
        "# e: 3\n"
    )
    assert yaml.safe_load(uncommented(text)) == {"a": {"b": 1, "c": [{"d": 2}]}, "e": 3}
