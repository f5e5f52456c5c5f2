"""The database-engine registry: every engine module is listed and meets the contract, each
database source kind has its engine, and names survive the trip into and out of a snapshot.

Quoting is checked against the servers themselves in tests/integration/test_db_sources.py
(hostile table names counted through each engine)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import sql

from portalops.backup import engines
from portalops.backup.engines import (
    DumpFailed,
    Engine,
    engine,
    mariadb,
    postgres,
    some,
    time_left,
)
from portalops.backup.engines.drills import compare, db_name, file_name
from portalops.backup.sources import database_kinds

ENGINES_DIR = Path(engines.__file__).resolve().parent
CONTRACT = (
    "errors",
    "dump",
    "count_rows",
    "verify",
    "quote",
    "load",
    "restore",
    "throwaway",
    "drill",
)


def test_every_engine_module_is_a_database_source_kind_and_the_other_way_round() -> None:
    defined = {
        path.stem
        for path in ENGINES_DIR.glob("*.py")
        if re.search(r"^NAME = ", path.read_text(), re.MULTILINE)
    }
    assert defined == set(database_kinds())


@pytest.mark.parametrize("name", database_kinds())
def test_an_engine_module_meets_the_contract(name: str) -> None:
    module: Any = engine(name)
    assert module.__name__ == f"portalops.backup.engines.{name}"
    assert name == module.NAME
    assert module.TITLE
    assert module.SUFFIX.startswith(".")
    for member in CONTRACT:
        assert callable(getattr(module, member)), f"{name} has no {member}"
    assert module.errors(), "a missing client library is said when a dump runs, not here"


def test_engine_modules_meet_the_protocol_for_mypy_too() -> None:
    listed: list[Engine] = [postgres, mariadb]  # mypy checks each module against Engine
    assert [e.NAME for e in listed] == list(database_kinds())


def test_engines_tell_their_dumps_apart() -> None:
    suffixes = [engine(name).SUFFIX for name in database_kinds()]
    assert len(set(suffixes)) == len(suffixes)


def test_an_unknown_engine_is_named() -> None:
    with pytest.raises(LookupError, match="no database engine 'oracle'"):
        engine("oracle")
    with pytest.raises(LookupError, match=re.escape("no database engine '../x'")):
        engine("../x")


def test_the_registry_loads_no_client_library() -> None:
    script = (
        "import sys\n"
        "from portalops.backup.engines import DumpOutput, DumpFailed, engine\n"
        "print(sorted(m for m in ('psycopg', 'pymysql') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


HOSTILE = ['we"ird', "back`tick", "dấu cách; --", "dot.ted", "back\\slash", '"', "`", ""]


@pytest.mark.parametrize("name", HOSTILE)
def test_postgres_quotes_as_psycopg_does(name: str) -> None:
    assert postgres.quote(name) == sql.Identifier(name).as_string(None)


def test_mariadb_quotes_backquotes_doubled() -> None:
    assert mariadb.quote("plain") == "`plain`"
    assert mariadb.quote("back`tick") == "`back``tick`"
    assert mariadb.quote("``") == "``````"


@given(st.text(min_size=1, max_size=64))
def test_a_database_name_survives_its_file_name(db: str) -> None:
    for suffix in (postgres.SUFFIX, mariadb.SUFFIX):
        name = file_name(db, suffix)
        assert "/" not in name
        assert db_name(Path(name), suffix) == db


def test_compare_names_every_difference_and_stops_after_five() -> None:
    assert compare("portal", {"a": 1}, {"a": 1}) == []
    assert compare("portal", {"a": 1, "b": 2}, {"a": 3, "c": 4}) == [
        "database portal: table a: 1 rows restored, 3 recorded at backup",
        "database portal: table b: restored (2 rows) but not recorded at backup",
        "database portal: table c: missing after restore (4 rows recorded)",
    ]
    many = compare("portal", {f"t{i}": 0 for i in range(8)}, {})
    assert len(many) == 6
    assert many[-1] == "database portal: … and 3 more tables differ"


def test_a_dump_past_its_deadline_fails_naming_its_timeout() -> None:
    assert 9 < time_left(time.monotonic() + 10, 10) <= 10
    with pytest.raises(DumpFailed, match="did not finish within 60 s"):
        time_left(time.monotonic() - 0.001, 60)


def test_long_lists_of_names_are_cut() -> None:
    assert some([]) == "none"
    assert some(["a", "b"]) == "a, b"
    assert some([str(i) for i in range(25)]) == f"{', '.join(map(str, range(20)))}, … (25 in all)"
