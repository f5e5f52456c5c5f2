"""The database and dns playbooks converged on this machine over the sshd fixture.

PostgreSQL (the test estate's engine), MariaDB (the same estate with ``database: mariadb``) and
BIND are the Debian system services, started by the playbooks through their init scripts; named
listens on loopback only, on a free high port. The module leaves the machine as it found it:
services it started are stopped, the BIND and MariaDB files it wrote are put back, the
databases and roles it created are dropped.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.ansible_host import (
    TEST_HOST,
    VAULT_FILE,
    VAULT_PASSWORD_FILE,
    Converge,
    Recap,
    converge_context,
)
from tests.fixtures.cli import run_ops
from tests.fixtures.paths import PROJECT
from tests.fixtures.procs import free_port, require_binary, require_module, run, wait_until
from tests.fixtures.sshd import SSHServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ZONE = "vinhphuc.gov.vn"
ZONE_FILE = Path("/etc/bind/zones") / f"db.{ZONE}"
SERVICES = ("named", "postgresql", "mariadb")
#: Files the playbooks write that the machine had (or lacked) before; put back at the end.
WRITTEN = (
    Path("/etc/bind/named.conf.options"),
    Path("/etc/bind/named.conf.local"),
    ZONE_FILE,
    Path("/etc/mysql/mariadb.conf.d/60-portal-ops.cnf"),
)
#: The commune the add-a-commune test adds under Huyện Tam Đảo (its password is in the vault).
NEW_COMMUNE = "Xã Tam Quan"
NEW_NAME = "tamquan.tamdao"
NEW_DATABASE = "portal_tamquan_tamdao"


# -- the machine before and after ------------------------------------------------------------


def _service_running(name: str) -> bool:
    done = subprocess.run(["service", name, "status"], capture_output=True, timeout=30, check=False)
    return done.returncode == 0


def _psql(sql: str) -> list[str]:
    """Rows of a query run as ``postgres`` over the unix socket, ``|``-separated."""
    out = run(
        ["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-d", "postgres", "-c", sql],
        what="psql as postgres",
    )
    return out.splitlines()


def _mariadb(sql: str) -> list[str]:
    out = run(["mariadb", "-N", "-B", "-e", sql], what="mariadb as root")
    return out.splitlines()


@dataclass
class _Snapshot:
    """What the playbooks may change, taken before the first converge."""

    running: dict[str, bool]
    files: dict[Path, bytes | None]
    zone_dir_existed: bool
    pg_databases: set[str]
    pg_roles: set[str]
    my_databases: set[str]
    my_users: set[str]

    @classmethod
    def take(cls) -> _Snapshot:
        running = {name: _service_running(name) for name in SERVICES}
        # the database servers must run to list what they hold; the playbooks start them anyway
        for name in ("postgresql", "mariadb"):
            if not running[name]:
                run(["service", name, "start"], what=f"service {name} start", timeout=120)
        wait_until(lambda: bool(_psql("SELECT 1")), timeout=30, what="PostgreSQL accepts psql")
        return cls(
            running=running,
            files={p: p.read_bytes() if p.exists() else None for p in WRITTEN},
            zone_dir_existed=ZONE_FILE.parent.exists(),
            pg_databases=set(_psql("SELECT datname FROM pg_database")),
            pg_roles=set(_psql("SELECT rolname FROM pg_roles")),
            my_databases=set(_mariadb("SHOW DATABASES")),
            my_users=set(_mariadb("SELECT CONCAT(user, '@', host) FROM mysql.user")),
        )

    def restore(self) -> None:
        """Drop what the tests created, put the files back, stop what was not running."""
        self._drop_postgresql()
        self._drop_mariadb()
        for path, content in self.files.items():
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(content)
        if not self.zone_dir_existed and ZONE_FILE.parent.is_dir():
            ZONE_FILE.parent.rmdir()
        for name in SERVICES:
            if not self.running[name] and _service_running(name):
                run(["service", name, "stop"], what=f"service {name} stop", timeout=120)
            elif self.running[name] and name == "named":
                run(["service", name, "reload"], what="service named reload")  # old config

    def _drop_postgresql(self) -> None:
        if not _service_running("postgresql"):
            return
        for name in set(_psql("SELECT datname FROM pg_database")) - self.pg_databases:
            if name.startswith("portal_"):
                _psql(f'DROP DATABASE "{name}"')
        for name in set(_psql("SELECT rolname FROM pg_roles")) - self.pg_roles:
            if name.startswith("portal_"):
                _psql(f'DROP ROLE "{name}"')

    def _drop_mariadb(self) -> None:
        if not _service_running("mariadb"):
            return
        for name in set(_mariadb("SHOW DATABASES")) - self.my_databases:
            if name.startswith("portal_"):
                _mariadb(f"DROP DATABASE `{name}`")
        users = set(_mariadb("SELECT CONCAT(user, '@', host) FROM mysql.user"))
        for account in users - self.my_users:
            user, host = account.split("@", 1)
            if user.startswith("portal_"):
                _mariadb(f"DROP USER '{user}'@'{host}'")


# -- what the estate says ----------------------------------------------------------------------


def estate_hostvars(converge: Converge) -> dict[str, Any]:
    """``testhost``'s variables as the inventory script derives them from the estate copy."""
    listed = run_ops(
        "--units", str(converge.units),
        "inventory", "ansible", "--servers", str(converge.servers), "--list",
    )  # fmt: skip
    assert listed.code == 0, f"ops inventory ansible --list: {listed.stderr}"
    hostvars: dict[str, Any] = json.loads(listed.stdout)["_meta"]["hostvars"][TEST_HOST]
    return hostvars


def vault_passwords() -> dict[str, str]:
    """The throwaway passwords, decrypted the way an operator would look at them."""
    out = run(
        [
            str(PROJECT / ".venv" / "bin" / "ansible-vault"),
            "view",
            "--vault-password-file",
            str(VAULT_PASSWORD_FILE),
            str(VAULT_FILE),
        ],
        what="ansible-vault view",
    )
    passwords: dict[str, str] = yaml.safe_load(out)["database_passwords"]
    return passwords


def dig(port: int, name: str, rtype: str, server: str = "127.0.0.1") -> list[str]:
    dig_bin = require_binary("dig", "dnsutils")
    out = run(
        [dig_bin, f"@{server}", "-p", str(port), "+short", "+time=2", "+tries=2", name, rtype],
        what=f"dig {name} {rtype}",
    )
    return sorted(line.strip() for line in out.splitlines() if line.strip())


def soa_serial(port: int) -> int:
    """The zone's serial as named serves it, -1 while it serves none."""
    answer = dig(port, ZONE, "SOA")
    fields = answer[0].split() if len(answer) == 1 else []
    return int(fields[2]) if len(fields) == 7 else -1


def next_serial(previous: int) -> int:
    """The serial the role gives a changed zone: one step up, or today's first."""
    today = int(dt.datetime.now(dt.UTC).strftime("%Y%m%d")) * 100
    return max(previous + 1, today)


def changed_items(recap: Recap) -> list[str]:
    """The loop items reported ``changed`` (``changed: [testhost] => (item=...)``)."""
    marker = f"changed: [{TEST_HOST}] => (item="
    return [line[len(marker) : -1] for line in recap.stdout.splitlines() if line.startswith(marker)]


# -- fixtures ----------------------------------------------------------------------------------


@dataclass
class Provisioned:
    converge: Converge
    dns_port: int
    passwords: dict[str, str]
    first: dict[str, Recap]

    def hostvars(self) -> dict[str, Any]:
        return estate_hostvars(self.converge)


@pytest.fixture(scope="module")
def machine() -> Iterator[_Snapshot]:
    """The machine's state before the module's converges, restored after them."""
    snapshot = _Snapshot.take()
    try:
        yield snapshot
    finally:
        snapshot.restore()


def _host_vars(dns_port: int) -> dict[str, Any]:
    return {
        "dns_port": dns_port,
        "dns_listen": ["127.0.0.1"],
        "dns_listen_v6": ["::1"],
        # the test vault (also passed with -e by the harness), never a production one
        "database_vault_file": str(VAULT_FILE),
    }


@pytest.fixture(scope="module")
def provisioned(sshd_server: SSHServer, machine: _Snapshot) -> Iterator[Provisioned]:
    """database.yml and dns.yml converged once on the small test estate (PostgreSQL)."""
    del machine  # only its teardown matters here
    dns_port = free_port()
    with converge_context(sshd_server, host_vars=_host_vars(dns_port)) as converge:
        first = {
            "database": converge.run("database").assert_ok(),
            "dns": converge.run("dns").assert_ok(),
        }
        wait_until(
            lambda: soa_serial(dns_port) > 0,
            timeout=20,
            what=f"named answers the SOA of {ZONE} on 127.0.0.1:{dns_port}",
        )
        yield Provisioned(converge, dns_port, vault_passwords(), first)


# -- PostgreSQL --------------------------------------------------------------------------------


def _pg_connect(provisioned: Provisioned, role: str, database: str) -> Any:
    psycopg = require_module("psycopg", "psycopg[binary]")
    return psycopg.connect(
        host="127.0.0.1",
        port=5432,
        user=role,
        password=provisioned.passwords[role],
        dbname=database,
        connect_timeout=10,
    )


def test_every_portal_database_is_owned_by_its_role_and_reachable_with_the_vault_password(
    provisioned: Provisioned,
) -> None:
    databases = provisioned.hostvars()["portal_databases"]
    assert len(databases) == 6
    for db in databases:
        with _pg_connect(provisioned, db["owner"], db["name"]) as conn:
            row = conn.execute(
                "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), current_user"
                " FROM pg_database WHERE datname = current_database()"
            ).fetchone()
        assert row == (db["owner"], "UTF8", db["owner"]), db


def test_a_portal_role_reaches_only_its_own_database(provisioned: Provisioned) -> None:
    psycopg = require_module("psycopg", "psycopg[binary]")
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        _pg_connect(provisioned, "portal_www", "portal_soyte")


def test_postgresql_listens_on_localhost_with_scram_passwords(provisioned: Provisioned) -> None:
    settings = _psql(
        "SELECT setting FROM pg_settings WHERE name IN ('listen_addresses', "
        "'password_encryption') ORDER BY name"
    )
    assert settings == ["localhost", "scram-sha-256"]
    verifiers = _psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'portal_soyte'")
    assert verifiers[0].startswith("SCRAM-SHA-256$")
    listening = provisioned.converge.host.socket.get_listening_sockets()
    postgres = {s for s in listening if s.endswith(":5432")}
    assert postgres
    assert postgres <= {"tcp://127.0.0.1:5432", "tcp://::1:5432"}


# -- DNS ---------------------------------------------------------------------------------------


def test_named_answers_a_and_aaaa_for_every_portal_name(provisioned: Provisioned) -> None:
    records = provisioned.hostvars()["portal_dns_records"]
    names = {r["name"] for r in records}
    assert {"www", "english", "soyte", "sotttt", "stttt", "tamdao", "daotru.tamdao"} <= names
    for record in records:
        fqdn = f"{record['name']}.{ZONE}"
        assert dig(provisioned.dns_port, fqdn, "A") == [record["ipv4"]], fqdn
        expected_aaaa = [record["ipv6"]] if record["ipv6"] else []
        assert dig(provisioned.dns_port, fqdn, "AAAA") == expected_aaaa, fqdn
    # and over IPv6, where the tests pin the second listener
    assert dig(provisioned.dns_port, f"soyte.{ZONE}", "A", server="::1") == ["127.0.0.1"]


def test_named_is_authoritative_only(provisioned: Provisioned) -> None:
    assert soa_serial(provisioned.dns_port) >= 2020010100  # YYYYMMDDnn
    assert dig(provisioned.dns_port, ZONE, "NS") == [f"ns1.{ZONE}."]
    # no recursion for anybody: a name outside the zone gets no answer
    assert dig(provisioned.dns_port, "example.com", "A") == []
    assert dig(provisioned.dns_port, f"nosuchportal.{ZONE}", "A") == []


def test_the_zone_passes_named_checkzone(provisioned: Provisioned) -> None:
    check = provisioned.converge.host.run(f"named-checkzone {ZONE} {ZONE_FILE}")
    assert check.rc == 0, check.stdout + check.stderr
    assert "OK" in check.stdout
    zone = provisioned.converge.host.file(str(ZONE_FILE))
    assert (zone.user, zone.group, zone.mode) == ("root", "bind", 0o644)


# -- idempotence, secrets ----------------------------------------------------------------------


def test_a_second_converge_changes_nothing_and_logs_no_password(provisioned: Provisioned) -> None:
    converge = provisioned.converge
    # -vvv shows module arguments and results: the passwords must be censored even there
    database = converge.run("database", ansible_args=("-vvv",)).assert_idempotent()
    dns = converge.run("dns").assert_idempotent()
    for recap in (*provisioned.first.values(), database, dns):
        leaked = [role for role, pw in provisioned.passwords.items() if pw in recap.stdout]
        assert not leaked, f"passwords of {leaked} appear in the output of {recap.playbook}"


def test_check_mode_on_the_converged_host_has_nothing_to_do(provisioned: Provisioned) -> None:
    """What ``ops provision --check`` shows an operator before a run: nothing, here."""
    provisioned.converge.run("database", check=True).assert_idempotent()
    provisioned.converge.run("dns", check=True, diff=True).assert_idempotent()


def test_a_missing_password_stops_the_run_naming_the_database_and_the_vault(
    provisioned: Provisioned,
) -> None:
    passwords = dict(provisioned.passwords)
    del passwords["portal_sotttt"]
    recap = provisioned.converge.run(
        "database",
        extra_vars={"database_passwords": passwords, "database_vault_file": "/nonexistent.yml"},
    )
    assert recap.returncode != 0
    assert recap[TEST_HOST].failed == 1
    assert "no password for portal_sotttt (database portal_sotttt)" in recap.stdout
    assert "ansible-vault edit /nonexistent.yml" in recap.stdout
    assert recap.changed == 0


# -- a commune added to the estate -------------------------------------------------------------


def _add_commune(units: Path, district: str, commune: str) -> None:
    data = yaml.safe_load(units.read_text(encoding="utf-8"))
    [parent] = [d for d in data["districts"] if d["name"] == district]
    parent["communes"].append({"name": commune})
    units.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def test_adding_a_commune_adds_its_record_and_database_and_changes_nothing_else(
    provisioned: Provisioned,
) -> None:
    converge, port = provisioned.converge, provisioned.dns_port
    before = {r["name"]: r for r in provisioned.hostvars()["portal_dns_records"]}
    answers_before = {
        name: (dig(port, f"{name}.{ZONE}", "A"), dig(port, f"{name}.{ZONE}", "AAAA"))
        for name in before
    }
    serial_before = soa_serial(port)
    zone_before = ZONE_FILE.read_text(encoding="utf-8")

    _add_commune(converge.units, "Huyện Tam Đảo", NEW_COMMUNE)
    after = {r["name"]: r for r in provisioned.hostvars()["portal_dns_records"]}
    assert set(after) - set(before) == {NEW_NAME}

    dns = converge.run("dns", diff=True).assert_ok()
    assert dns.changed_tasks() == ["dns : Write the zone", "dns : Reload named"]
    expected_serial = next_serial(serial_before)
    wait_until(
        lambda: soa_serial(port) == expected_serial,
        timeout=20,
        what=f"named serves serial {expected_serial} after the reload",
    )
    assert dig(port, f"{NEW_NAME}.{ZONE}", "A") == [after[NEW_NAME]["ipv4"]]
    assert dig(port, f"{NEW_NAME}.{ZONE}", "AAAA") == [after[NEW_NAME]["ipv6"]]
    for name, answers in answers_before.items():
        assert (dig(port, f"{name}.{ZONE}", "A"), dig(port, f"{name}.{ZONE}", "AAAA")) == answers
    # the diff of the zone: the serial line and the new commune's records, nothing else
    removed, added = _line_diff(zone_before, ZONE_FILE.read_text(encoding="utf-8"))
    assert removed == [f"\t\t{serial_before} ; serial"]
    assert added == [
        f"\t\t{expected_serial} ; serial",
        f"{NEW_NAME}\tIN\tA\t{after[NEW_NAME]['ipv4']}",
        f"{NEW_NAME}\tIN\tAAAA\t{after[NEW_NAME]['ipv6']}",
    ]

    database = converge.run("database").assert_ok()
    assert database.changed_tasks() == [
        "database : Create the portal roles in PostgreSQL",
        "database : Create the portal databases in PostgreSQL",
        "database : Keep other roles out of each portal database",
    ]
    # one role (its name censored with its password), then the new database and its privileges
    assert changed_items(database) == ["(censored due to no_log)", NEW_DATABASE, NEW_DATABASE]
    with _pg_connect(provisioned, NEW_DATABASE, NEW_DATABASE) as conn:
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ).fetchone()
    assert owner == (NEW_DATABASE,)

    converge.run("dns").assert_idempotent()
    converge.run("database").assert_idempotent()
    assert soa_serial(port) == expected_serial


def _line_diff(old: str, new: str) -> tuple[list[str], list[str]]:
    old_lines, new_lines = old.splitlines(), new.splitlines()
    removed = [line for line in old_lines if line not in new_lines]
    added = [line for line in new_lines if line not in old_lines]
    return removed, added


# -- MariaDB -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mariadb_estate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test servers file with MariaDB as the portals' engine."""
    servers = yaml.safe_load((PROJECT / "tests/fixtures/provision/servers.yaml").read_text())
    for server in servers["servers"]:
        server["database"] = "mariadb"
    path = tmp_path_factory.mktemp("mariadb-estate") / "servers.yaml"
    path.write_text(yaml.safe_dump(servers), encoding="utf-8")
    return path


def test_mariadb_databases_for_an_estate_on_mariadb(
    sshd_server: SSHServer, machine: _Snapshot, mariadb_estate: Path
) -> None:
    del machine
    pymysql = require_module("pymysql", "PyMySQL")
    passwords = vault_passwords()
    with converge_context(
        sshd_server, servers=mariadb_estate, host_vars=_host_vars(free_port())
    ) as converge:
        databases = estate_hostvars(converge)["portal_databases"]
        assert {db["engine"] for db in databases} == {"mariadb"}
        converge.run("database").assert_ok()
        connect: Callable[..., Any] = pymysql.connect
        for db in databases:
            conn = connect(
                host="127.0.0.1",
                port=3306,
                user=db["owner"],
                # pymysql would encode a str as latin-1; the server hashed the UTF-8 bytes
                password=passwords[db["owner"]].encode("utf-8"),
                database=db["name"],
                charset="utf8mb4",
                connect_timeout=10,
            )
            try:
                with conn.cursor() as cursor:
                    cursor.execute("SELECT @@character_set_database, DATABASE()")
                    assert cursor.fetchone() == ("utf8mb4", db["name"])
                    cursor.execute("SHOW DATABASES")
                    visible = {row[0] for row in cursor.fetchall()}
                assert visible == {"information_schema", db["name"]}
            finally:
                conn.close()
        assert _mariadb("SELECT @@bind_address") == ["127.0.0.1"]
        converge.run("database").assert_idempotent()
