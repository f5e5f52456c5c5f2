"""``ops backup ls`` and ``ops backup dump`` against local and S3 repositories: what a
snapshot holds, read without restoring it, every byte verified; bad input and damaged
objects answered with a clear error and no partial output file."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.backup_env import BackupEnv
from tests.fixtures.databases import pg_connect, pg_source
from tests.fixtures.paths import OPS_PY
from tests.fixtures.postgres import PostgresServer
from tests.hostile.forge import Forger
from tests.hostile.genuine import an_hour_ago, forger

BIG = os.urandom(3 * 1024 * 1024)  # several chunks: several blobs, likely in one pack


@pytest.fixture
def backed_up(backup_env: BackupEnv, tmp_path: Path) -> tuple[BackupEnv, Path]:
    src = tmp_path / "site"
    (src / "html" / "css").mkdir(parents=True)
    (src / "html" / "index.php").write_text("<?php echo 'Xin chào'; ?>\n", encoding="utf-8")
    (src / "html" / "css" / "site.css").write_text("body { margin: 0 }\n")
    (src / "html" / "empty.txt").write_bytes(b"")
    (src / "dump.sql").write_bytes(BIG)
    (src / "dump.sql").chmod(0o640)
    (src / "current").symlink_to("html")
    os.mkfifo(src / "fifo")
    (src / os.fsdecode(b"t\xean-c\xfc.txt")).write_bytes(b"latin-1 name\n")
    backup_env.add_source("site", src)
    backup_env.ops("backup", "run", check=True)
    return backup_env, src


def _inside(src: Path, *parts: str) -> str:
    """The path of ``src/parts`` inside the snapshot (absolute paths are stored without /)."""
    return "/".join([str(src).lstrip("/"), *parts])


def test_ls_lists_a_directory_like_ls_l(backed_up: tuple[BackupEnv, Path]) -> None:
    env, src = backed_up
    top = env.ops_json("backup", "ls", "latest")
    assert [e["path"] for e in top["entries"]] == [str(src).lstrip("/").split("/")[0]]
    doc = env.ops_json("backup", "ls", "latest", _inside(src))
    entries = {e["path"].rsplit("/", 1)[-1]: e for e in doc["entries"]}
    # a name that is not UTF-8 is shown with its bytes escaped
    assert set(entries) == {"html", "dump.sql", "current", "fifo", "t\\xean-c\\xfc.txt"}
    assert entries["dump.sql"]["size"] == len(BIG)
    assert entries["dump.sql"]["permissions"] == "-rw-r-----"
    assert entries["dump.sql"]["mtime"].endswith("Z")
    assert entries["html"]["type"] == "dir"
    assert entries["html"]["size"] is None
    assert entries["current"]["target"] == "html"
    assert entries["current"]["permissions"].startswith("l")
    assert entries["fifo"]["permissions"].startswith("p")
    assert doc["source"] == "site"
    assert doc["refused"] == []
    human = env.ops("backup", "ls", "latest", _inside(src), check=True).stdout
    assert "-rw-r-----" in human
    assert f"{_inside(src, 'current')} -> html" in human


def test_ls_recursive_and_of_one_file(backed_up: tuple[BackupEnv, Path]) -> None:
    env, src = backed_up
    below = env.ops_json("backup", "ls", "latest", _inside(src, "html"), "--recursive")
    assert [e["path"] for e in below["entries"]] == [  # parents first, as a restore walks
        _inside(src, "html", name) for name in ("css", "css/site.css", "empty.txt", "index.php")
    ]
    one = env.ops_json("backup", "ls", "latest", "/" + _inside(src, "html", "index.php"))
    assert [(e["path"], e["size"]) for e in one["entries"]] == [
        (_inside(src, "html", "index.php"), len("<?php echo 'Xin chào'; ?>\n".encode()))
    ]


def test_dump_writes_the_file_s_bytes_to_stdout_and_to_a_private_file(
    backed_up: tuple[BackupEnv, Path], tmp_path: Path
) -> None:
    env, src = backed_up
    done = subprocess.run(
        [sys.executable, str(OPS_PY), "--config", str(env.config), "backup", "dump", "latest",
         _inside(src, "dump.sql")],
        capture_output=True, env={**os.environ, **env.env}, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(done.stdout).digest() == hashlib.sha256(BIG).digest()
    assert done.stderr == b""
    out = tmp_path / "restored.sql"
    doc = env.ops_json("backup", "dump", "latest", _inside(src, "dump.sql"), "--output", str(out))
    assert out.read_bytes() == BIG
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert doc["bytes"] == len(BIG)
    empty = tmp_path / "empty"
    env.ops("backup", "dump", "latest", _inside(src, "html", "empty.txt"), "--output",
            str(empty), check=True)  # fmt: skip
    assert empty.read_bytes() == b""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ls", "0000ffff"], "no snapshot '0000ffff'"),
        (["ls", "latest", "no/such/dir"], "no 'no/such/dir' in snapshot site@"),
        (["ls", "latest", "../etc"], "cannot go up with '..'"),
        (["dump", "latest", "SRC"], "is a directory, not a file"),
        (["dump", "latest", "SRC/dump.sql/x"], "is a file, not a directory"),
        (["dump", "latest", "SRC/dump.sql", "--json"], "--json with 'backup dump' needs"),
        (["dump", "latest", ""], "which file of snapshot site@"),
    ],
    ids=[
        "unknown snapshot",
        "no such path",
        "dot-dot",
        "a directory",
        "below a file",
        "json to stdout",
        "no path",
    ],
)
def test_bad_input_is_refused_with_a_clear_message(
    backed_up: tuple[BackupEnv, Path], argv: list[str], message: str
) -> None:
    env, src = backed_up
    argv = [a.replace("SRC", _inside(src)) for a in argv]
    result = env.ops("backup", *argv)
    assert result.code == 2, result
    assert message in result.stderr, result.stderr


def test_a_damaged_pack_stops_the_dump_and_leaves_no_file(
    backed_up: tuple[BackupEnv, Path], tmp_path: Path
) -> None:
    """A backup host (or the storage) that damaged a data pack: the dump says which blob and
    how many bytes had gone out, exits 1, and --output leaves nothing behind."""
    env, src = backed_up
    packs = env.object_keys("packs/")
    biggest = max(packs, key=lambda k: len(env.read_object(k)))  # the one holding dump.sql
    data = bytearray(env.read_object(biggest))
    data[len(data) // 2] ^= 0xFF
    env.write_object(biggest, bytes(data))
    out = tmp_path / "out.sql"
    result = env.ops("backup", "dump", "latest", _inside(src, "dump.sql"), "--output", str(out))
    assert result.code == 1, result
    assert "dump.sql" in result.stderr, result.stderr
    assert "damaged" in result.stderr, result.stderr
    assert not out.exists()
    assert list(tmp_path.glob(".out.sql.partial")) == []


def test_a_database_dump_streams_into_pg_restore(
    local_backup_env: BackupEnv,
    postgres_server: PostgresServer,
    pg_database: Callable[..., str],
) -> None:
    """``ops backup dump latest DB.dump --source S | pg_restore -d COPY``: the dump of a real
    PostgreSQL database, piped, loads into another database with the same rows."""
    env, server = local_backup_env, postgres_server
    db, copy = pg_database(), pg_database()
    with pg_connect(server, db) as conn:
        conn.execute("CREATE TABLE don_vi (id serial PRIMARY KEY, ten text NOT NULL)")
        for name in ("Vĩnh Yên", "Phúc Yên", "Tam Đảo"):
            conn.execute("INSERT INTO don_vi (ten) VALUES (%s)", (name,))
    env.sources.append(pg_source(server, "portal-db", [db]))
    env.write_config()
    env.ops("backup", "run", check=True)
    listing = env.ops_json("backup", "ls", "latest", "--source", "portal-db")
    assert sorted(e["path"] for e in listing["entries"]) == sorted([f"{db}.dump", "globals.sql"])
    dump = subprocess.Popen(
        [sys.executable, str(OPS_PY), "--config", str(env.config), "backup", "dump", "latest",
         f"{db}.dump", "--source", "portal-db"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **env.env},
    )  # fmt: skip
    assert dump.stdout is not None
    loaded = subprocess.run(
        [server.bin("pg_restore"), "--exit-on-error", "--no-password", "-d",
         server.dsn_for(server.superuser, dbname=copy)],
        stdin=dump.stdout, capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    dump.stdout.close()
    assert dump.wait(timeout=300) == 0, dump.stderr.read() if dump.stderr else ""
    assert loaded.returncode == 0, loaded.stderr
    query = "SELECT id, ten FROM don_vi ORDER BY id"
    with pg_connect(server, db) as original, pg_connect(server, copy) as restored:
        assert restored.execute(query).fetchall() == original.execute(query).fetchall()


@pytest.fixture
def two_days(backed_up: tuple[BackupEnv, Path]) -> tuple[BackupEnv, Path, str, str]:
    """The site backed up, changed the way a portal changes in a day, and backed up again:
    (env, site, first snapshot id, second snapshot id)."""
    env, src = backed_up
    (src / "html" / "index.php").write_text("<?php echo 'Xin chào, Vĩnh Phúc'; ?>\n")
    (src / "html" / "css" / "site.css").chmod(0o600)
    (src / "html" / "empty.txt").unlink()
    (src / "uploads" / "2026").mkdir(parents=True)
    (src / "uploads" / "2026" / "a.jpg").write_bytes(b"\xff\xd8" + os.urandom(5000))
    (src / "current").unlink()
    (src / "current").write_text("now a file\n")
    env.ops("backup", "run", check=True)
    ids = [s["id"] for s in env.ops_json("backup", "list", "--source", "site")]
    assert len(ids) == 2
    return env, src, ids[0], ids[1]


def test_diff_names_what_changed_between_two_days(
    two_days: tuple[BackupEnv, Path, str, str],
) -> None:
    env, src, first, second = two_days
    doc = env.ops_json("backup", "diff", first[:8], second[:8])
    changes = {(c["change"], c["path"].removeprefix(_inside(src) + "/")) for c in doc["changes"]}
    assert changes == {
        ("modified", "html/index.php"),
        ("metadata", "html/css/site.css"),
        ("removed", "html/empty.txt"),
        ("added", "uploads"),
        ("added", "uploads/2026"),
        ("added", "uploads/2026/a.jpg"),
        ("type", "current"),
    }
    by_path = {c["path"].rsplit("/", 1)[-1]: c for c in doc["changes"]}
    assert by_path["site.css"]["what"] == ["mode"]
    assert by_path["a.jpg"]["new_size"] == 5002
    assert by_path["index.php"]["old_size"] < by_path["index.php"]["new_size"]
    assert doc["summary"]["bytes_added"] == 5002
    human = env.ops("backup", "diff", first, second, check=True).stdout
    assert f"+  {_inside(src, 'uploads/2026/a.jpg')}" in human
    assert f"T  {_inside(src, 'current')}  (symlink -> file)" in human
    same = env.ops_json("backup", "diff", second, second)
    assert same["changes"] == []


def _back_up_nginx(env: BackupEnv, tmp_path: Path) -> None:
    """A second source, ``nginx`` (category config, one file), backed up once."""
    conf = tmp_path / "etc-nginx"
    conf.mkdir()
    (conf / "nginx.conf").write_text("worker_processes auto;\n")
    env.add_source("nginx", conf, category="config")
    env.ops("backup", "run", "--source", "nginx", check=True)


def test_diff_refuses_snapshots_of_two_sources(
    two_days: tuple[BackupEnv, Path, str, str], tmp_path: Path
) -> None:
    env, _src, first, _second = two_days
    _back_up_nginx(env, tmp_path)
    nginx = env.ops_json("backup", "list", "--source", "nginx")[0]["id"]
    result = env.ops("backup", "diff", first, nginx)
    assert result.code == 2, result
    assert "diff compares two snapshots of one source" in result.stderr


def test_find_says_which_snapshots_hold_a_file(
    two_days: tuple[BackupEnv, Path, str, str],
) -> None:
    env, src, first, second = two_days
    found = env.ops_json("backup", "find", "index.php")
    assert [(f["snapshot"], f["path"]) for f in found] == [
        (first, _inside(src, "html/index.php")),
        (second, _inside(src, "html/index.php")),
    ]
    assert found[0]["size"] < found[1]["size"]
    jpegs = env.ops_json("backup", "find", "*.jpg", "--source", "site")
    assert [f["snapshot"] for f in jpegs] == [second]
    by_path = env.ops_json("backup", "find", f"/{_inside(src)}/html/*.php")
    assert len(by_path) == 2
    assert env.ops_json("backup", "find", "index.php", "--since", "2999-01-01") == []
    everything = env.ops("backup", "find", "*")
    assert everything.code == 2
    assert "matches everything" in everything.stderr
    bad_day = env.ops("backup", "find", "index.php", "--since", "yesterday")
    assert bad_day.code == 2
    assert "expected a date YYYY-MM-DD" in bad_day.stderr


def _file_bytes(root: Path) -> int:
    return sum(
        (Path(d) / f).lstat().st_size
        for d, _, files in os.walk(root)
        for f in files
        if stat.S_ISREG((Path(d) / f).lstat().st_mode)
    )


def test_stats_account_for_each_source_category_and_the_repository(
    two_days: tuple[BackupEnv, Path, str, str], tmp_path: Path
) -> None:
    env, src, _first, _second = two_days
    _back_up_nginx(env, tmp_path)
    listed = {(s["source"], s["id"]): s["bytes"] for s in env.ops_json("backup", "list")}
    doc = env.ops_json("backup", "stats")
    sources = {u["name"]: u for u in doc["sources"]}
    site = sources["site"]
    assert site["snapshots"] == 2
    assert site["logical_latest"] == _file_bytes(src)
    assert site["logical_all"] == sum(b for (s, _), b in listed.items() if s == "site")
    # the 3 MiB of random bytes are stored once for both days, and compress not at all
    assert len(BIG) < site["stored"] < 1.2 * len(BIG)
    assert site["dedup"] > 1.6
    assert site["added_30d"] == site["stored"]  # both runs were today
    assert site["missing_blobs"] == 0
    assert sources["nginx"]["logical_latest"] == len("worker_processes auto;\n")
    categories = {u["name"]: u for u in doc["categories"]}
    assert categories["code"]["stored"] == site["stored"]
    assert categories["config"]["stored"] == sources["nginx"]["stored"]
    assert doc["total"]["snapshots"] == 3
    assert doc["total"]["stored"] <= site["stored"] + sources["nginx"]["stored"]
    only = env.ops_json("backup", "stats", "--source", "nginx")
    assert [u["name"] for u in only["sources"]] == ["nginx"]


def test_stats_name_a_damaged_snapshot_and_count_the_others(
    two_days: tuple[BackupEnv, Path, str, str],
) -> None:
    env, _src, first, _second = two_days
    key = next(k for k in env.object_keys("snapshots/") if first in k)
    data = bytearray(env.read_object(key))
    data[-20] ^= 0xFF
    env.write_object(key, bytes(data))
    result = env.ops("--json", "backup", "stats")
    assert result.code == 1, result
    doc = json.loads(result.stdout)
    assert doc["sources"][0]["snapshots"] == 1
    assert len(doc["unreadable"]) == 1
    assert first[:8] in doc["unreadable"][0]


@pytest.mark.parametrize(
    "argv",
    [["ls", "latest"], ["dump", "latest", "x"], ["diff", "latest", "latest"], ["find", "x"],
     ["stats"]],
    ids=["ls", "dump", "diff", "find", "stats"],
)  # fmt: skip
def test_a_writer_host_cannot_look_inside(
    backed_up: tuple[BackupEnv, Path], argv: list[str]
) -> None:
    """A backup host holds the writer key only: it can add snapshots, never read them."""
    env, _src = backed_up
    env.write_config(identity=False)
    result = env.ops("backup", *argv)
    assert result.code == 3, result
    assert "backup.identity" in result.stderr, result.stderr


# -- what a backup host may have written -----------------------------------------------------


def _forge(env: BackupEnv, source: str, nodes: Callable[[Forger], list[dict[str, Any]]]) -> None:
    """A snapshot of ``source`` forged with the writer key alone (tests/hostile/forge.py)."""
    f = forger(env)
    f.commit(source, an_hour_ago(), nodes(f))


def test_a_file_whose_blobs_do_not_add_up_is_refused_before_a_byte_goes_out(
    local_backup_env: BackupEnv,
) -> None:
    env = local_backup_env

    def nodes(f: Forger) -> list[dict[str, Any]]:
        short = f.file_node("short.bin", b"0123456789")
        short["size"] = 20  # the index says 10 bytes
        return [short]

    _forge(env, "forged", nodes)
    done = subprocess.run(
        [sys.executable, str(OPS_PY), "--config", str(env.config), "backup", "dump", "latest",
         "short.bin", "--source", "forged"],
        capture_output=True, env={**os.environ, **env.env}, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done
    assert done.stdout == b""
    assert b"nothing written" in done.stderr


def test_names_a_backup_host_chose_are_shown_not_obeyed(local_backup_env: BackupEnv) -> None:
    """Brackets rich would read as markup, terminal escapes, a newline that would forge a
    line: shown as text, escaped, never acted on, never a traceback."""
    env = local_backup_env
    _forge(
        env,
        "forged",
        lambda f: [
            f.file_node("closes nothing [/x]", b"a"),  # refused ('/'), and named as such
            f.file_node("[bold]secret.txt", b"b", group="[/oops]"),
            f.file_node("evil\x1b]0;TITLE\x07\x1b[2J", b"c", user="\x1b[32mroot"),
            f.file_node("two\nlines", b"d"),
            f.symlink_node("lnk", "\x1b[5mBLINK"),
            f.symlink_node("up", "../[/x]"),
        ],
    )
    result = env.ops("backup", "ls", "latest", "--source", "forged")
    assert result.code == 0, result
    out = result.stdout
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "left out (a restore refuses it): closes nothing [/x]" in out
    assert "[bold]secret.txt" in out
    assert "[/oops]" in out
    assert "up -> ../[/x]" in out
    assert "evil\\x1b]0;TITLE\\x07\\x1b[2J" in out
    assert "\\x1b[32mroot" in out
    assert "two\\x0alines" in out
    assert "lnk -> \\x1b[5mBLINK" in out
    # a name is typed back as ls shows it
    dumped = env.ops("backup", "dump", "latest", "[bold]secret.txt", "--source", "forged",
                     "--output", str(env.root / "secret"))  # fmt: skip
    assert dumped.code == 0, dumped
    assert (env.root / "secret").read_bytes() == b"b"


def test_refused_entries_count_towards_a_snapshot_s_bounds(local_backup_env: BackupEnv) -> None:
    """One tree of 2,000 entries a restore refuses, reused 2**16 times: 131 million entries
    from ~200 KB stored. Refused before anything is walked, in seconds, not hours."""
    env = local_backup_env

    def nodes(f: Forger) -> list[dict[str, Any]]:
        tree = f.tree([f.file_node(b"bad/%d" % i, b"") for i in range(2000)])
        for _ in range(16):
            tree = f.tree([f.subtree_node("a", tree), f.subtree_node("b", tree)])
        return [f.subtree_node("top", tree), f.file_node("hello", b"hi\n")]

    _forge(env, "forged", nodes)
    result = env.ops("backup", "ls", "latest", "--source", "forged", timeout=60)
    assert result.code != 0, result
    assert "entries or more" in result.stderr, result.stderr


def test_output_paths_that_cannot_work_are_refused_before_reading(
    backed_up: tuple[BackupEnv, Path], tmp_path: Path
) -> None:
    env, src = backed_up
    target = _inside(src, "dump.sql")
    for output, message in ((tmp_path, "is a directory"), (Path("."), "give a file name"),
                            (tmp_path / "no" / "x", "no directory")):  # fmt: skip
        result = env.ops("backup", "dump", "latest", target, "--output", str(output))
        assert result.code == 2, result
        assert message in result.stderr, result.stderr
    # an interrupted dump's leftover does not block the next one
    out = tmp_path / "again.sql"
    (tmp_path / ".again.sql.partial").write_bytes(b"left by a killed dump")
    env.ops("backup", "dump", "latest", target, "--output", str(out), check=True)
    assert out.read_bytes() == BIG
