"""The source-kind registry: every kind module meets the contract, the registry lists every
kind module once, the config union matches the list, and the docs show every kind."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, get_args

import pytest

from portalops.backup import sources
from portalops.backup.config import Backup, Drill
from portalops.backup.sources import (
    KINDS,
    Source,
    database_kinds,
    describe_source,
    drill_for,
    kind_named,
    model_of,
)
from portalops.backup.sources.base import Category
from portalops.cli.context import PROJECT_ROOT

SOURCES_DIR = Path(sources.__file__).resolve().parent
KIND_NAMES = [module.KIND for module in KINDS]


def test_kind_names_are_unique_and_each_module_is_named_after_its_kind() -> None:
    assert len(set(KIND_NAMES)) == len(KIND_NAMES)
    for module in KINDS:
        assert module.__name__ == f"portalops.backup.sources.{module.KIND}"  # type: ignore[attr-defined]


def test_every_module_defining_a_kind_is_registered() -> None:
    defined = {
        path.stem
        for path in SOURCES_DIR.glob("*.py")
        if re.search(r"^KIND = ", path.read_text(), re.MULTILINE)
    }
    assert defined == set(KIND_NAMES)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_a_kind_module_meets_the_contract(kind: str) -> None:
    module: Any = kind_named(kind)
    assert callable(module.describe)
    assert callable(module.drill)
    # a stream (produce into a sink) or a tree of its own (store), never both
    assert callable(getattr(module, "produce", None)) != callable(getattr(module, "store", None))
    model = model_of(kind)
    assert model.__module__ == module.__name__
    assert model.__name__ == f"{kind.capitalize()}Source"
    assert getattr(module, model.__name__) is model
    assert get_args(model.model_fields["kind"].annotation) == (kind,)
    assert {"name", "kind", "category"} <= set(model.model_fields)
    assert model.model_fields["name"].is_required()


def test_the_config_union_holds_exactly_the_registered_kinds_in_order() -> None:
    models = get_args(get_args(Source)[0])
    assert [get_args(m.model_fields["kind"].annotation)[0] for m in models] == KIND_NAMES


def test_database_kinds_are_those_whose_sources_are_databases_by_default() -> None:
    assert database_kinds() == ("postgres", "mariadb")
    for kind in database_kinds():
        assert model_of(kind).model_fields["category"].default is Category.DATABASE


def _sources() -> list[Source]:
    backup = Backup.model_validate(
        {
            "sources": [
                {"name": "www", "kind": "files", "category": "code", "paths": ["/srv", "/etc"]},
                {"name": "pg", "kind": "postgres"},
                {
                    "name": "pg2",
                    "kind": "postgres",
                    "dsn": "host=db port=5433",
                    "databases": ["a", "b"],
                },
                {"name": "my", "kind": "mariadb"},
                {"name": "my2", "kind": "mariadb", "socket": "/run/mysqld/mysqld.sock"},
                {"name": "nft", "kind": "command", "command": ["nft", "list", "ruleset"]},
                {
                    "name": "sw1",
                    "kind": "ssh",
                    "host": "10.0.0.2",
                    "port": 2222,
                    "user": "backup",
                    "key": "/etc/portal-ops/ssh/id_ed25519",
                    "known_hosts": "/etc/portal-ops/ssh/known_hosts",
                    "command": "show running-config",
                },
            ]
        }
    )
    return backup.sources


def test_descriptions_are_what_snapshots_have_always_listed() -> None:
    assert [describe_source(s) for s in _sources()] == [
        "/srv /etc",
        "postgres:local all",
        "postgres:host=db port=5433 a,b",
        "mariadb:127.0.0.1:3306",
        "mariadb:/run/mysqld/mysqld.sock",
        "command:nft list ruleset",
        "ssh:backup@10.0.0.2:2222 show running-config",
    ]


def test_only_database_kinds_have_a_database_drill_step() -> None:
    drill = Drill()
    for source in _sources():
        step = drill_for(source, drill)
        if source.kind in database_kinds():
            assert step is not None
            assert step.engine
        else:
            assert step is None


def test_docs_show_every_kind_and_no_other() -> None:
    text = (PROJECT_ROOT / "docs" / "backup.md").read_text()
    shown = set(re.findall(r"\bkind: ([a-z]+)", text))
    assert shown == set(KIND_NAMES)


def test_a_files_only_host_never_loads_database_or_ssh_clients(tmp_path: Path) -> None:
    config = tmp_path / "ops.yaml"
    config.write_text(
        "backup:\n  sources:\n    - {name: www, kind: files, category: code, paths: [/srv]}\n"
    )
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from portalops.settings import load_settings
        from portalops.backup.jobs import run
        from portalops.backup.sources import describe_source, drill_for
        settings = load_settings(Path({str(config)!r}))
        for source in settings.backup.sources:
            describe_source(source)
            drill_for(source, settings.drill)
        print(sorted(m for m in ("psycopg", "pymysql", "paramiko") if m in sys.modules))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
