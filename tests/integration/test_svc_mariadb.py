"""The MariaDB fixture starts a real server with grant tables and a password-protected root."""

from __future__ import annotations

import os

import pymysql
import pytest

from tests.fixtures.mariadb import MariaDBServer

pytestmark = pytest.mark.integration


def test_root_runs_sql_over_tcp(mariadb_server: MariaDBServer) -> None:
    conn = pymysql.connect(**mariadb_server.connect_args())
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT CURRENT_USER(), @@port, @@bind_address, @@version, @@skip_grant_tables"
            )
            row = cur.fetchone()
    finally:
        conn.close()
    assert row is not None
    current_user, port, bind, version, skip_grants = row
    assert current_user == "root@127.0.0.1"
    assert port == mariadb_server.port
    assert bind == "127.0.0.1"
    assert version.startswith("10.11.")
    assert skip_grants == 0


def test_unix_socket_with_password(mariadb_server: MariaDBServer) -> None:
    conn = pymysql.connect(
        unix_socket=str(mariadb_server.socket),
        user=mariadb_server.user,
        password=mariadb_server.password,
        connect_timeout=5,
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT CURRENT_USER()")
            assert cur.fetchone() == ("root@localhost",)
    finally:
        conn.close()


def test_wrong_password_is_refused(mariadb_server: MariaDBServer) -> None:
    with pytest.raises(pymysql.err.OperationalError) as excinfo:
        pymysql.connect(**mariadb_server.connect_args(password="not-the-password"))
    assert excinfo.value.args[0] == 1045  # ER_ACCESS_DENIED_ERROR


def test_no_passwordless_root_left(mariadb_server: MariaDBServer) -> None:
    conn = pymysql.connect(**mariadb_server.connect_args())
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT User, Host FROM mysql.user"
                " WHERE User = 'root' AND authentication_string = ''"
            )
            assert cur.fetchall() == ()
    finally:
        conn.close()


def test_vietnamese_text_round_trips(mariadb_server: MariaDBServer) -> None:
    name = "Sở Thông tin và Truyền thông tỉnh Đắk Lắk"
    conn = pymysql.connect(**mariadb_server.connect_args(autocommit=True))
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE IF NOT EXISTS portal_vi")
            cur.execute("CREATE TABLE portal_vi.unit (name VARCHAR(200)) ENGINE=InnoDB")
            cur.execute("INSERT INTO portal_vi.unit VALUES (%s)", (name,))
            cur.execute("SELECT name, CHAR_LENGTH(name) FROM portal_vi.unit")
            row = cur.fetchone()
            cur.execute("DROP DATABASE portal_vi")
    finally:
        conn.close()
    assert row == (name, len(name))


def test_server_runs_unprivileged(mariadb_server: MariaDBServer) -> None:
    pid = int((mariadb_server.socket.parent / "mysqld.pid").read_text().strip())
    assert os.stat(f"/proc/{pid}").st_uid != 0
