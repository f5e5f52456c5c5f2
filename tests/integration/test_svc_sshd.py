"""The sshd fixture accepts exactly its client key, and clients can pin its host key."""

from __future__ import annotations

import subprocess
from pathlib import Path

import paramiko
import pytest

from tests.fixtures.sshd import SSHServer

pytestmark = pytest.mark.integration


def _client(known_hosts: Path | None) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    # only the file we name: never ~/.ssh/known_hosts of whoever runs the tests
    if known_hosts is not None:
        client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def _connect(client: paramiko.SSHClient, server: SSHServer, key: Path) -> None:
    client.connect(
        server.host,
        port=server.port,
        username=server.user,
        key_filename=str(key),
        look_for_keys=False,
        allow_agent=False,
        timeout=5,
        banner_timeout=5,
        auth_timeout=5,
    )


def test_paramiko_runs_command_with_pinned_host_key(sshd_server: SSHServer) -> None:
    client = _client(sshd_server.known_hosts)
    try:
        _connect(client, sshd_server, sshd_server.client_key)
        _, stdout, stderr = client.exec_command("echo 'Xin chào' && id -un", timeout=5)
        out = stdout.read().decode("utf-8")
        assert stdout.channel.recv_exit_status() == 0, stderr.read()
        transport = client.get_transport()
        assert transport is not None
        host_key = transport.get_remote_server_key()
    finally:
        client.close()
    assert out == f"Xin chào\n{sshd_server.user}\n"
    assert f"{host_key.get_name()} {host_key.get_base64()}" == sshd_server.host_key_line


def test_unknown_host_key_is_rejected(sshd_server: SSHServer) -> None:
    client = _client(None)
    try:
        with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
            _connect(client, sshd_server, sshd_server.client_key)
    finally:
        client.close()


def test_changed_host_key_is_rejected(sshd_server: SSHServer, tmp_path: Path) -> None:
    impostor = paramiko.Ed25519Key.from_private_key_file(str(sshd_server.client_key))
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(
        f"[{sshd_server.host}]:{sshd_server.port} {impostor.get_name()} {impostor.get_base64()}\n"
    )
    client = _client(known_hosts)
    try:
        with pytest.raises(paramiko.BadHostKeyException):
            _connect(client, sshd_server, sshd_server.client_key)
    finally:
        client.close()


def test_unauthorised_client_key_is_refused(sshd_server: SSHServer, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
        check=True,
        timeout=10,
    )
    client = _client(sshd_server.known_hosts)
    try:
        with pytest.raises(paramiko.AuthenticationException):
            _connect(client, sshd_server, stranger)
    finally:
        client.close()


def test_only_publickey_auth_is_offered(sshd_server: SSHServer) -> None:
    transport = paramiko.Transport((sshd_server.host, sshd_server.port))
    try:
        transport.start_client(timeout=5)
        with pytest.raises(paramiko.BadAuthenticationType) as excinfo:
            transport.auth_password(sshd_server.user, "any password")
    finally:
        transport.close()
    assert excinfo.value.allowed_types == ["publickey"]


def test_openssh_client_with_strict_host_key_checking(sshd_server: SSHServer) -> None:
    done = subprocess.run(
        # ssh joins its arguments into one string for the remote shell: quote for that shell
        sshd_server.ssh_argv("printf '%s' 'Sở TT&TT'"),
        capture_output=True,
        timeout=15,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode("utf-8") == "Sở TT&TT"
