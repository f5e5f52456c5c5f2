"""A compromised backup host against drills and database restores: nothing it wrote runs with
privilege on the admin host.

The forged snapshots come from ``tests/hostile/forge.py`` (FORMAT.md and the writer key only),
stated at the time they are written, so they are each source's latest and the drill takes them.
The admin's real commands run through the CLI: ``ops drill`` and ``ops backup restore
--to-database``. What would show a forged object running: a shared object whose constructor
drops a marker file named after its user id, and SQL client commands (``\\!``, ``\\o |``,
``\\copy``, ``system``) that drop marker files, all in a world-writable directory, so a marker
would appear even if the drill user ran them. None may appear; no line of ``/etc/shadow`` or
``/etc/passwd`` may reach the drill's output, report or state; afterwards the genuine snapshot
still restores.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Union

import pytest
from psycopg import sql

from tests.fixtures.backup_env import BackupEnv
from tests.fixtures.databases import (
    ARTICLES,
    my_query,
    my_source,
    option_file,
    pg_connect,
    pg_source,
    seed_mariadb,
    seed_postgres,
)
from tests.fixtures.mariadb import MariaDBServer
from tests.fixtures.nginx import nginx_tree
from tests.fixtures.postgres import PostgresServer
from tests.hostile.forge import Forger

pytestmark = pytest.mark.integration

DRILL_USER = "portal-ops-drill"
EVIL_C = r"""
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void evil(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/PWNED-so-%d", MARKERS, (int) geteuid());
    FILE *f = fopen(path, "w");
    if (f) fclose(f);
}
"""


@dataclass(frozen=True)
class Link:
    target: str


Tree = dict[str, Union[bytes, Link, "Tree"]]


# -- forging ---------------------------------------------------------------------------------


def _nodes(attacker: Forger, tree: Tree) -> list[dict[str, Any]]:
    nodes = []
    for name in sorted(tree):
        entry = tree[name]
        if isinstance(entry, bytes):
            nodes.append(attacker.file_node(name, entry))
        elif isinstance(entry, Link):
            nodes.append(attacker.symlink_node(name, entry.target))
        else:
            nodes.append(attacker.dir_node(name, _nodes(attacker, entry)))
    return nodes


def _count(tree: Tree) -> tuple[int, int]:
    files = size = 0
    for entry in tree.values():
        if isinstance(entry, bytes):
            files, size = files + 1, size + len(entry)
        elif not isinstance(entry, Link):
            more, bigger = _count(entry)
            files, size = files + more, size + bigger
    return files, size


def forge(
    env: BackupEnv,
    source: str,
    tree: Tree,
    *,
    category: str,
    paths: list[str],
    stats: dict[str, Any] | None = None,
) -> str:
    """A snapshot of ``tree`` for ``source``, stated now (so the latest); its short id."""
    attacker = Forger(env.writer_key, env.write_object)
    files, size = _count(tree)
    key = attacker.commit(
        source,
        datetime.now(UTC),
        _nodes(attacker, tree),
        paths=paths,
        category=category,
        body={"summary": {"files": files, "dirs": 0, "bytes": size}, "stats": stats or {}},
    )
    return key.rsplit("-", 1)[1]


# -- fixtures and checks ---------------------------------------------------------------------


@pytest.fixture
def markers() -> Iterator[Path]:
    """Where anything forged that ran would leave a mark: writable by every user."""
    path = Path(tempfile.mkdtemp(prefix="drill-markers-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def marks(markers: Path) -> list[str]:
    return sorted(p.name for p in markers.glob("PWNED*"))


def drill(env: BackupEnv, source: str) -> tuple[int, dict[str, Any], str]:
    done = env.ops("--json", "drill", "--source", source, timeout=600)
    assert "Traceback" not in done.stderr, done.stderr
    assert "internal error" not in done.stderr, done.stderr
    [result] = json.loads(done.stdout)["results"]
    return done.returncode, result, done.stdout + done.stderr


def step(result: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [s for s in result["steps"] if s["name"] == name]
    return dict(found)


def host_secrets() -> list[str]:
    """Lines of the drill host's /etc/shadow and /etc/passwd a leak would show."""
    lines = []
    for path in (Path("/etc/shadow"), Path("/etc/passwd")):
        lines += [line for line in path.read_text().splitlines() if len(line) > 8]
    assert lines
    return lines


def assert_nothing_leaked(env: BackupEnv, output: str) -> None:
    written = [output]
    written += [p.read_text(errors="replace") for p in env.state_dir.rglob("*") if p.is_file()]
    everything = "\n".join(written)
    leaked = [line for line in host_secrets() if line in everything]
    assert leaked == [], leaked


def assert_drill_clean(scratch: Path) -> None:
    assert list(scratch.iterdir()) == [], "scratch space left behind"
    done = subprocess.run(
        ["pgrep", "-a", "-u", DRILL_USER], capture_output=True, text=True, check=False
    )
    assert done.stdout == "", done.stdout


def genuine_snapshot(env: BackupEnv, source: str) -> str:
    [genuine] = [s for s in env.ops_json("backup", "list") if s["source"] == source]
    return str(genuine["id"])


def restored_files(env: BackupEnv, snapshot: str, target: Path) -> dict[str, bytes]:
    done = env.ops("backup", "restore", snapshot, "--target", str(target))
    assert done.returncode == 0, done.stderr
    return {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()}


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to("/")): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


# -- nginx -----------------------------------------------------------------------------------


def nginx_env(env: BackupEnv, tmp_path: Path, scratch: Path) -> tuple[str, dict[str, bytes]]:
    """A genuine nginx source backed up once: its snapshot id and files."""
    etc = nginx_tree(tmp_path / "host")
    env.add_source("nginx", etc, category="config")
    env.write_config(drill={"scratch_dir": str(scratch)})
    env.ops("backup", "run", check=True)
    return genuine_snapshot(env, "nginx"), files_of(etc)


def evil_module(markers: Path) -> Path:
    """A shared object that marks, when loaded, the user id that loaded it; proven to work
    by loading it once with nginx -t here (as root, so its mark is PWNED-so-0)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc builds the module whose loading the test watches for")
    source = markers / "evil.c"
    source.write_text(f'#define MARKERS "{markers}"\n{EVIL_C}')
    module = markers / "evil.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(module), str(source)], check=True)
    module.chmod(0o755)
    control = markers / "control"
    control.mkdir()
    (control / "nginx.conf").write_text(f"load_module {module};\nevents {{}}\n")
    subprocess.run(
        ["nginx", "-t", "-q", "-p", f"{control}/", "-c", str(control / "nginx.conf"),
         "-e", str(control / "e.log"), "-g", f"pid {control}/n.pid;"],
        capture_output=True, check=False,
    )  # fmt: skip
    assert marks(markers) == ["PWNED-so-0"], "the module does not mark its loading"
    (markers / "PWNED-so-0").unlink()
    return module


def test_a_configuration_that_loads_a_module_is_refused_and_never_run(
    local_backup_env: BackupEnv, tmp_path: Path, scratch: Path, markers: Path
) -> None:
    """load_module by absolute path, by a path into the snapshot itself (the writer's own
    shared object), hidden in a quoted directive in a globbed include; ssl_engine. Each
    configuration is refused before nginx runs: no process of any user loads the module."""
    env = local_backup_env
    genuine, files = nginx_env(env, tmp_path, scratch)
    module = evil_module(markers)
    so = str(module).encode()
    forged = forge(
        env,
        "nginx",
        {
            "etc": {"nginx": {"nginx.conf": b"load_module " + so + b";\nevents {}\nhttp {}\n"}},
            "opt": {
                "intree": {"nginx": {
                    "nginx.conf": b"events {}\nload_module modules/evil.so;\n",
                    "modules": {"evil.so": module.read_bytes()},
                }},
                "hidden": {"nginx": {
                    "nginx.conf": b"include /opt/hidden/nginx/modules-enabled/*.conf;\n"
                                  b"events {}\n",
                    "modules-enabled": {"50-evil.conf": b'# a module\n"load_module" "' + so
                                                        + b'";\n'},
                }},
                "engine": {"nginx": {"nginx.conf": b"ssl_engine evil;\nevents {}\n"}},
            },
        },
        category="config",
        paths=["/etc/nginx", "/opt"],
    )  # fmt: skip
    code, result, output = drill(env, "nginx")
    assert code == 1
    assert result["snapshot"].startswith(forged)
    nginx = step(result, "nginx -t")
    assert not nginx["ok"]
    detail = nginx["detail"]
    assert f"/etc/nginx/nginx.conf line 1: 'load_module {module};'" in detail, detail
    assert "/opt/intree/nginx/nginx.conf line 2: 'load_module modules/evil.so;'" in detail
    assert '/opt/hidden/nginx/modules-enabled/50-evil.conf line 2: \'"load_module" ' in detail
    assert "/opt/engine/nginx/nginx.conf line 1: ssl_engine: loads code" in detail
    assert detail.count("nginx -t not run") >= 3, detail
    assert marks(markers) == [], "the module was loaded"
    assert_drill_clean(scratch)
    assert_nothing_leaked(env, output)
    got = restored_files(env, genuine, tmp_path / "genuine")
    assert got == files


def test_a_configuration_reading_host_files_reads_none_and_shows_none(
    local_backup_env: BackupEnv, tmp_path: Path, scratch: Path
) -> None:
    """include /etc/shadow, by absolute path, through an absolute or a climbing symbolic
    link, as a certificate key; /etc/passwd by .. and by absolute path; a config directory
    linked to the host's /etc/nginx. Nothing of the host is read: the drill names each and
    no line of those files reaches output, report or state; the host's /etc/nginx is as it
    was (the drill used to rewrite paths in the files it tested)."""
    env = local_backup_env
    genuine, files = nginx_env(env, tmp_path, scratch)
    host_nginx = files_of(Path("/etc/nginx")) if Path("/etc/nginx").is_dir() else {}
    climb = "../" * 16
    forge(
        env,
        "nginx",
        {
            "a": {"nginx": {"nginx.conf": b"events {}\ninclude /etc/shadow;\n"}},
            "b": {"nginx": {
                "nginx.conf": b"events {}\nhttp { include /b/nginx/conf.d/*.conf; }\n",
                "conf.d": {"x.conf": Link("/etc/shadow")},
            }},
            "c": {"nginx": {
                "nginx.conf": b"events {}\nhttp { include conf.d/*.conf; }\n",
                "conf.d": {"x.conf": Link(climb + "etc/shadow")},
            }},
            "d": {"nginx": {"nginx.conf": (
                b"events {}\nhttp { server { listen 127.0.0.1:8443 ssl;\n"
                b"ssl_certificate /d/nginx/cert.pem;\nssl_certificate_key /etc/shadow; } }\n"
            ), "cert.pem": b"not a certificate\n"}},
            "e": {"nginx": {"nginx.conf": b"events {}\ninclude " + climb.encode()
                                          + b"etc/passwd;\n"}},
            "f": {"nginx": {"nginx.conf": b"events {}\ninclude /etc/passwd;\n"}},
            "g": {"nginx": Link("/etc/nginx")},
            "h": {"nginx": Link(climb + "etc/nginx")},
        },
        category="config",
        paths=["/etc/nginx"],
    )  # fmt: skip
    code, result, output = drill(env, "nginx")
    assert code == 1
    detail = step(result, "nginx -t")["detail"]
    for expected in (
        "/a/nginx/nginx.conf line 2: include /etc/shadow: not in the restored snapshot",
        "/b/nginx/nginx.conf line 2: include /b/nginx/conf.d/*.conf: not in the restored",
        "/c/nginx/nginx.conf line 2: include conf.d/*.conf: resolves outside the restored",
        "/d/nginx/nginx.conf line 4: ssl_certificate_key /etc/shadow: not in the restored",
        f"/e/nginx/nginx.conf line 2: include {climb}etc/passwd: resolves outside",
        "/f/nginx/nginx.conf line 2: include /etc/passwd: not in the restored snapshot",
        "/h/nginx/nginx.conf: a symbolic link out of the restored snapshot; not read",
    ):
        assert expected in detail, (expected, detail)
    assert_nothing_leaked(env, output)
    assert_drill_clean(scratch)
    if host_nginx:
        assert files_of(Path("/etc/nginx")) == host_nginx
    assert restored_files(env, genuine, tmp_path / "genuine") == files


def test_a_debian_shaped_configuration_passes_as_the_drill_user(
    local_backup_env: BackupEnv, tmp_path: Path, scratch: Path
) -> None:
    """The shape real portals have: sites-enabled links by absolute path, modules-enabled
    (empty), listen 80 and 443 with a certificate in the tree, a unix socket, pid, cache and
    log paths on the host's own system directories, the compiled-in temp paths and access
    log. nginx -t passes as the drill user (``user`` names an account that does not exist
    here: as root nginx -t would fail on it) and creates nothing outside scratch."""
    env = local_backup_env
    tag = f"portal-ops-drill-test-{secrets.token_hex(4)}"
    outside = [Path(f"/run/{tag}.pid"), Path(f"/run/{tag}.sock"), Path(f"/var/cache/{tag}"),
               Path(f"/var/log/{tag}")]  # fmt: skip
    etc = tmp_path / "host" / "etc" / "nginx"
    for sub in ("modules-enabled", "sites-available", "sites-enabled", "tls"):
        (etc / sub).mkdir(parents=True)
    (etc / "mime.types").write_text("types { text/html html; }\n")
    (etc / "nginx.conf").write_text(
        f"user www-data-not-here-{tag};\nworker_processes 1;\npid /run/{tag}.pid;\n"
        f"include {etc}/modules-enabled/*.conf;\nevents {{ worker_connections 64; }}\n"
        f"http {{\n    include {etc}/mime.types;\n"
        f"    proxy_cache_path /var/cache/{tag} levels=1:2 keys_zone=portal:1m;\n"
        f"    include {etc}/sites-enabled/*;\n}}\n"
    )
    (etc / "sites-available" / "portal").write_text(
        "server {\n    listen 80;\n    listen 443 ssl;\n"
        f"    listen unix:/run/{tag}.sock;\n    server_name daotru.tamdao.vinhphuc.gov.vn;\n"
        f"    ssl_certificate {etc}/tls/portal.crt;\n"
        f"    ssl_certificate_key {etc}/tls/portal.key;\n"
        f"    error_log /var/log/{tag}/error.log;\n    root /srv/www;\n}}\n"
    )
    (etc / "sites-enabled" / "portal").symlink_to(etc / "sites-available" / "portal")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=daotru.tamdao.vinhphuc.gov.vn", "-keyout", str(etc / "tls/portal.key"),
         "-out", str(etc / "tls/portal.crt")],
        capture_output=True, check=True,
    )  # fmt: skip
    (etc / "tls" / "portal.key").chmod(0o600)
    env.add_source("nginx", etc, category="config")
    env.write_config(drill={"scratch_dir": str(scratch)})
    env.ops("backup", "run", check=True)
    assert not [p for p in outside if p.exists()]

    code, result, _ = drill(env, "nginx")
    nginx = step(result, "nginx -t")
    assert code == 0, nginx
    assert nginx["detail"] == f"configuration OK (tested as {DRILL_USER})"
    assert not [p for p in outside if p.exists()]
    assert_drill_clean(scratch)


# -- databases -------------------------------------------------------------------------------


def hostile_sql(markers: Path, what: str) -> bytes:
    """Client commands of psql and mariadb that would each leave a mark if run."""
    mark = f"{markers}/PWNED-{what}"
    return (
        f"\\! touch {mark}-shell-$(id -u)\n"
        f"\\o |touch {mark}-pipe\n"
        f"\\copy (select 1) to '{mark}-copy'\n"
        f"system touch {mark}-system\n"
        f"\\. /etc/shadow\n"
    ).encode()


def pg_dump(server: PostgresServer, db: str) -> bytes:
    done = subprocess.run(
        [server.bin("pg_dump"), "-Fc", "-Z0", "-d", server.dsn_for(server.superuser, dbname=db)],
        capture_output=True,
        check=True,
    )
    return done.stdout


def pg_stats(db: str) -> dict[str, Any]:
    return {
        "server_version": "15",
        "globals": {"role_passwords": True},
        "databases": {
            db: {"tables": {"public.articles": ARTICLES, "public.units": 2}, "large_objects": 0}
        },
    }


@pytest.fixture
def pg_env(
    local_backup_env: BackupEnv,
    postgres_server: PostgresServer,
    pg_database: Callable[..., str],
    scratch: Path,
) -> tuple[BackupEnv, str, bytes]:
    """A postgres source backed up once (genuinely); the database and its custom dump."""
    env = local_backup_env
    db = pg_database()
    seed_postgres(postgres_server, db)
    env.sources.append(pg_source(postgres_server, "portal-db", [db]))
    env.write_config(drill={"scratch_dir": str(scratch)})
    env.ops("backup", "run", check=True)
    return env, db, pg_dump(postgres_server, db)


def test_forged_globals_sql_runs_no_client_command_in_a_drill(
    pg_env: tuple[BackupEnv, str, bytes], scratch: Path, markers: Path
) -> None:
    """globals.sql with psql's shell, pipe, \\copy and \\. commands: psql refuses each
    (restricted mode, as the drill user), the drill fails naming the first lines; then a
    globals.sql that is a symbolic link to /etc/shadow is refused unread."""
    env, db, dump = pg_env
    genuine = genuine_snapshot(env, "portal-db")
    globals_sql = b"SET client_encoding = 'UTF8';\nSELECT 1;\n" + hostile_sql(markers, "pg")
    forge(env, "portal-db", {"globals.sql": globals_sql, f"{db}.dump": dump},
          category="database", paths=["postgres"], stats=pg_stats(db))  # fmt: skip
    code, result, output = drill(env, "portal-db")
    assert code == 1
    [reason] = result["reasons"]
    assert reason.startswith(
        "load into PostgreSQL: psql globals.sql stopped: globals.sql line 3: client command "
        f"'\\! touch {markers}/PWNED-pg-shell-$(id -u)' refused, not run; "
    ), reason
    assert "globals.sql line 7: client command '\\. /etc/shadow' refused, not run" in reason
    assert marks(markers) == []
    assert_nothing_leaked(env, output)
    assert_drill_clean(scratch)

    forge(env, "portal-db", {"globals.sql": Link("/etc/shadow"), f"{db}.dump": dump},
          category="database", paths=["postgres"], stats=pg_stats(db))  # fmt: skip
    code, result, output = drill(env, "portal-db")
    assert code == 1
    assert result["reasons"] == [
        "load into PostgreSQL: globals.sql in the snapshot is not a regular file (a symbolic "
        "link or a special file): not loaded"
    ]
    assert_nothing_leaked(env, output)
    assert_drill_clean(scratch)
    assert set(restored_files(env, genuine, scratch / "genuine")) == {"globals.sql", f"{db}.dump"}


def test_forged_globals_sql_runs_no_client_command_restoring_to_a_server(
    pg_env: tuple[BackupEnv, str, bytes],
    postgres_server: PostgresServer,
    pg_database: Callable[..., str],
    markers: Path,
) -> None:
    """restore --to-database runs psql as ops (it needs the credentials): restricted, it
    refuses every client command; the restore finishes and exits 1 naming them."""
    env, db, dump = pg_env
    globals_sql = hostile_sql(markers, "pg") + b"SELECT 1;\n"
    forge(env, "portal-db", {"globals.sql": globals_sql, f"{db}.dump": dump},
          category="database", paths=["postgres"], stats=pg_stats(db))  # fmt: skip
    copy = pg_database()
    with pg_connect(postgres_server) as conn:
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(copy)))
    dsn = f"host={postgres_server.host} port={postgres_server.port} user=postgres"
    done = env.ops("--json", "backup", "restore", "latest", "--source", "portal-db",
                   "--to-database", dsn, "--as", copy)  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert doc["databases"] == {db: copy}
    assert [p.split(":")[0] for p in doc["problems"]] == [
        f"globals.sql line {n}"
        for n in range(1, 6)
        if n != 4  # line 4 is no command: SQL
    ]
    assert all(p.endswith("refused, not run") for p in doc["problems"])
    assert marks(markers) == []
    with pg_connect(postgres_server, copy) as conn:
        assert conn.execute("SELECT count(*) FROM articles").fetchone() == (ARTICLES,)


@pytest.fixture
def my_env(
    local_backup_env: BackupEnv,
    mariadb_server: MariaDBServer,
    my_database: Callable[[], str],
    scratch: Path,
    tmp_path: Path,
) -> tuple[BackupEnv, str, Path]:
    """A mariadb source backed up once (genuinely); the database and the option file."""
    env = local_backup_env
    db = my_database()
    seed_mariadb(mariadb_server, db)
    options = option_file(tmp_path / "my.cnf", mariadb_server.user, mariadb_server.password)
    env.sources.append(my_source(mariadb_server, "portal-my", [db], options))
    env.write_config(drill={"scratch_dir": str(scratch)})
    env.ops("backup", "run", check=True)
    return env, db, options


CLEAN_DUMP = b"CREATE TABLE t (id INT PRIMARY KEY);\nINSERT INTO t VALUES (1), (2);\n"


def my_stats(db: str) -> dict[str, Any]:
    return {"server_version": "10.11", "databases": {db: {"tables": {"t": 2}}}}


def test_forged_mariadb_dumps_run_no_client_command_in_a_drill(
    my_env: tuple[BackupEnv, str, Path], scratch: Path, markers: Path
) -> None:
    """users.sql, then a database dump, with the mariadb client's shell, tee, source and
    connect commands: in binary mode the client parses none (they reach the server as SQL,
    which rejects them), the drill fails naming the line."""
    env, db, _ = my_env
    genuine = genuine_snapshot(env, "portal-my")
    users = b"SELECT 1;\n" + hostile_sql(markers, "my-users")
    forge(env, "portal-my", {f"{db}.sql": CLEAN_DUMP, "users.sql": users},
          category="database", paths=["mariadb"], stats=my_stats(db))  # fmt: skip
    code, result, output = drill(env, "portal-my")
    assert code == 1
    [reason] = result["reasons"]
    assert reason.startswith(
        "load into MariaDB: loading users.sql failed (exit code 1): users.sql line 2: "
        "client command '\\! touch"
    ), reason
    assert marks(markers) == []
    assert_nothing_leaked(env, output)
    assert_drill_clean(scratch)

    dump = CLEAN_DUMP + b"\\T " + str(markers / "PWNED-tee").encode() + b"\n"
    dump += hostile_sql(markers, "my-dump") + b"\\r mysql 192.0.2.1\n"
    forge(env, "portal-my", {f"{db}.sql": dump},
          category="database", paths=["mariadb"], stats=my_stats(db))  # fmt: skip
    code, result, output = drill(env, "portal-my")
    assert code == 1
    [reason] = result["reasons"]
    assert f"loading {db}.sql failed (exit code 1): {db}.sql line 3: client command '\\T " in (
        reason
    ), reason
    assert marks(markers) == []
    assert_nothing_leaked(env, output)
    assert_drill_clean(scratch)
    assert set(restored_files(env, genuine, scratch / "genuine")) == {f"{db}.sql", "users.sql"}


def test_forged_mariadb_dumps_run_no_client_command_restoring_to_a_server(
    my_env: tuple[BackupEnv, str, Path],
    mariadb_server: MariaDBServer,
    my_database: Callable[[], str],
    markers: Path,
) -> None:
    """restore --to-database: a forged users.sql is loaded with its client commands refused
    and named (exit 1); a forged dump stops the restore naming its first one (exit 3). The
    ``system`` line is no command in binary mode: SQL, which the server rejects."""
    env, db, options = my_env
    dsn = f"mariadb://{mariadb_server.host}:{mariadb_server.port}"

    def restore_as(name: str) -> tuple[int, str, str]:
        my_query(mariadb_server, f"DROP DATABASE IF EXISTS `{name}`")
        done = env.ops(
            "--json", "backup", "restore", "latest", "--source", "portal-my",
            "--to-database", dsn, "--as", name, "--defaults-file", str(options),
        )  # fmt: skip
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, done.stdout, done.stderr

    users = b"SELECT 1;\n" + hostile_sql(markers, "my-users")
    forge(env, "portal-my", {f"{db}.sql": CLEAN_DUMP, "users.sql": users},
          category="database", paths=["mariadb"], stats=my_stats(db))  # fmt: skip
    copy = my_database()
    code, stdout, stderr = restore_as(copy)
    assert code == 1, stderr
    # mariadb names the line its statement starts on (one, lines 2 to 6) and each command
    problems = json.loads(stdout)["problems"]
    assert problems == [
        f"users.sql line 2: client command '{command}' refused, not run"
        for command in (f"\\! touch {markers}/PWNED-my-users-shell-$(id -u)", "\\o", "\\c",
                        "\\.")
    ]  # fmt: skip
    assert marks(markers) == []
    assert my_query(mariadb_server, "SELECT COUNT(*) FROM t", db=copy) == [(2,)]

    forge(env, "portal-my", {f"{db}.sql": CLEAN_DUMP + hostile_sql(markers, "my-dump")},
          category="database", paths=["mariadb"], stats=my_stats(db))  # fmt: skip
    code, _, stderr = restore_as(copy)
    assert code == 3
    assert f"loading {db}.sql failed (exit code 1): {db}.sql line 3: client command" in stderr
    assert marks(markers) == []
