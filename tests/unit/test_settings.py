"""config/ops.yaml: defaults, the shipped example, and every kind of mistake with FILE:LINE."""

import textwrap
from pathlib import Path

import pytest

from portalops.backup.sources import KINDS
from portalops.backup.sources.base import Category
from portalops.cli.context import PROJECT_ROOT
from portalops.core.errors import SourceError
from portalops.settings import Settings, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ops.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(SourceError) as info:
        load_settings(path)
    return [p.replace(str(path), "F") for p in info.value.problems]


def test_no_file_means_defaults() -> None:
    settings = load_settings(None)
    assert settings == Settings()
    assert settings.backup.retention.daily == 14
    assert settings.backup.sources == []


def test_empty_file_and_single_section(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "")) == Settings()
    only_backup = load_settings(
        write(
            tmp_path,
            """\
            backup:
              repositories: [{name: local, url: /var/backups/portal-ops}]
            """,
        )
    )
    assert only_backup.backup.repositories[0].name == "local"
    assert only_backup.state_dir == Path("/var/lib/portal-ops")


def test_shipped_example_is_valid() -> None:
    settings = load_settings(PROJECT_ROOT / "config" / "ops.example.yaml")
    categories = {s.category for s in settings.backup.sources}
    assert categories == {Category.CONFIG, Category.LOGS, Category.CODE, Category.DATABASE}
    # the example shows every registered source kind
    assert {s.kind for s in settings.backup.sources} == {kind.KIND for kind in KINDS}
    assert settings.backup.repositories[1].object_lock_days == 35


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            """\
            backup:
              retention:
                daily: seven
            """,
            "F:3: backup.retention.daily: expected a whole number, got 'seven'",
        ),
        (
            """\
            backup:
              retension: {daily: 7}
            """,
            "F:2: backup.retension: unknown key; did you mean 'retention'?",
        ),
        (
            """\
            frobnicate: true
            """,
            "F:1: frobnicate: unknown key; allowed: backup, drill, metrics, monitor, oncall, "
            "state_dir",
        ),
        (
            """\
            backup:
              repositories:
                - {name: local}
            """,
            "F:3: backup.repositories[0].url: required key is missing",
        ),
        (
            """\
            backup:
              sources:
                - name: web
                  kind: files
                  category: code
                  paths: [srv/portals]
            """,
            "F:6: backup.sources[0].paths: 'srv/portals' is not an absolute path",
        ),
        (
            """\
            backup:
              sources:
                - name: web
                  kind: files
                  category: code
                  paths: [/srv/portals/../uploads]
            """,
            "F:6: backup.sources[0].paths: '/srv/portals/../uploads' goes up with '..': write "
            "the path it leads to",
        ),
        (
            """\
            backup:
              sources:
                - name: web
                  kind: files
                  category: pictures
                  paths: [/srv]
            """,
            "F:5: backup.sources[0].category: expected 'config', 'logs', 'code' or "
            "'database', got 'pictures'",
        ),
        (
            """\
            backup:
              sources:
                - {name: web, kind: tape, category: code, paths: [/srv]}
            """,
            "F:3: backup.sources[0].kind: expected 'files', 'postgres', 'mariadb', 'command', "
            "'ssh', got 'tape'",
        ),
        (
            """\
            backup:
              retention: {daily: -1}
            """,
            "F:2: backup.retention.daily: input should be greater than or equal to 0, got -1",
        ),
        (
            """\
            backup:
              repositories:
                - {name: a, url: /x}
                - {name: a, url: /y}
            """,
            "F:1: backup: two repositories are named 'a'; names must be unique",
        ),
        (
            """\
            backup:
              sources:
                - {name: "web root", kind: files, category: code, paths: [/srv]}
            """,
            "F:3: backup.sources[0].name: string should match pattern",
        ),
        (
            """\
            backup: [1, 2]
            """,
            "F:1: backup: expected a mapping of keys, got a list",
        ),
        (
            """\
            drill:
              rto_seconds: 0
            """,
            "F:2: drill.rto_seconds: input should be greater than 0, got 0",
        ),
        (
            """\
            monitor:
              interval: 30
              deadline: 40
            """,
            "F:3: monitor.deadline: 40 s is not below interval 30 s",
        ),
        (
            """\
            monitor:
              interval: 30
              shard: 2/2
            """,
            "F:3: monitor.shard: shard '2/2': INDEX counts from 0 and must be below COUNT (2)",
        ),
        (
            """\
            monitor:
              shard: half
            """,
            "F:2: monitor.shard: shard 'half' is not INDEX/COUNT",
        ),
        (
            """\
            backup:
              sources:
                - {name: web, kind: files, category: code, paths: [/srv]
            """,
            "F:4: YAML syntax error",
        ),
        (
            """\
            - just
            - a list
            """,
            "F:1: (top level): expected a mapping of keys, got a list",
        ),
    ],
)
def test_mistakes_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(tmp_path, text)
    assert len(found) == 1, found
    assert found[0].startswith(expected), found[0]


def test_every_problem_at_once(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        state_dir: 5
        backup:
          retention: {daily: x, weekly: y}
        monitr: {}
        """,
    )
    assert [p.split(": ")[0] for p in found] == ["F:1", "F:3", "F:3", "F:4"]


def test_a_check_across_sections_points_at_the_key_at_fault(tmp_path: Path) -> None:
    text = (
        "backup:\n"
        "  sources:\n"
        "    - {name: www, kind: files, category: code, paths: [/srv]}\n"
        "drill:\n"
        "  smoke:\n"
        "    - {source: www, sql: select 1}\n"
        "    - source: nope\n"
        "      sql: select 1\n"
    )
    assert problems(tmp_path, text) == [
        "F:6: drill.smoke[0].source: source 'www' is a files source; "
        "smoke queries run on postgres and mariadb sources only"
    ]
