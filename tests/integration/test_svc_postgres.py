"""The PostgreSQL fixture starts a real cluster that speaks SQL and enforces SCRAM passwords."""

from __future__ import annotations

import os
import stat

import psycopg
import pytest

from tests.fixtures.postgres import PostgresServer

pytestmark = pytest.mark.integration


def test_superuser_runs_sql_over_tcp(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.dsn, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT current_user, inet_server_addr()::text, inet_server_port(),"
            " current_setting('server_version_num')::int, current_setting('server_encoding')"
        ).fetchone()
    assert row is not None
    user, addr, port, version, encoding = row
    assert user == postgres_server.superuser
    assert addr == "127.0.0.1/32"
    assert port == postgres_server.port
    assert 150000 <= version < 160000
    assert encoding == "UTF8"


def test_vietnamese_text_round_trips(postgres_server: PostgresServer) -> None:
    name = "Ủy ban nhân dân tỉnh Quảng Nam"
    with psycopg.connect(postgres_server.dsn, connect_timeout=5) as conn:
        conn.execute("CREATE TEMP TABLE unit (name text)")
        conn.execute("INSERT INTO unit VALUES (%s)", (name,))
        row = conn.execute("SELECT name, length(name) FROM unit").fetchone()
    assert row == (name, len(name))


def test_password_role_authenticates_with_scram(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.password_dsn, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (postgres_server.password_user,)
    with psycopg.connect(postgres_server.dsn, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s",
            (postgres_server.password_user,),
        ).fetchone()
    assert row is not None
    assert row[0].startswith("SCRAM-SHA-256$")


def test_wrong_password_is_refused(postgres_server: PostgresServer) -> None:
    bad = postgres_server.dsn_for(postgres_server.password_user, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(bad, connect_timeout=5)


def test_server_runs_unprivileged(postgres_server: PostgresServer) -> None:
    """Postgres refuses root; the fixture must have handed it a dedicated user."""
    with psycopg.connect(postgres_server.dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    uid = os.stat(f"/proc/{row[0]}").st_uid
    assert uid != 0
    data_mode = os.stat(postgres_server.data_dir).st_mode
    assert stat.S_IMODE(data_mode) == 0o700
    assert (postgres_server.socket_dir / f".s.PGSQL.{postgres_server.port}").is_socket()
