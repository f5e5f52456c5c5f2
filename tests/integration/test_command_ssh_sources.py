"""``kind: command`` and ``kind: ssh`` sources through the real ``ops`` CLI (Art. 11.2: the
configuration of operating systems, security and network devices, as command output).

The SSH tests log in to the OpenSSH fixture on loopback, i.e. this machine, with a pinned host
key; every trust failure (unknown key, changed key, key file others can read) must fail the
source with a message that says what to do, never fall back to accepting the host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.backup_env import BackupEnv, latest_stats, restore, snapshot_sources
from tests.fixtures.procs import free_port
from tests.fixtures.sshd import SSHServer

pytestmark = pytest.mark.integration

RULESET = (
    "table inet filter {\n"
    "\tchain input {\n"
    "\t\ttype filter hook input priority filter; policy drop;\n"
    '\t\ttcp dport { 22, 443 } accept comment "cổng thông tin"\n'
    "\t}\n"
    "}\n"
).encode()


def run_backup(env: BackupEnv, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    result = env.ops("--json", "backup", "run", *args)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout, (result.returncode, result.stderr)
    doc = json.loads(result.stdout)
    return result.returncode, {r["source"]: r for r in doc["results"]}


def failed(results: dict[str, dict[str, Any]], source: str, *needles: str) -> str:
    result = results[source]
    assert result["status"] == "failed", result
    error = str(result["error"])
    for needle in needles:
        assert needle in error, (source, needle, error)
    return error


# -- command ---------------------------------------------------------------------------------


def test_command_output_is_restored_byte_exact(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    env = local_backup_env
    ruleset = tmp_path / "ruleset.nft"
    ruleset.write_bytes(RULESET)
    env.sources += [
        {"name": "nft", "kind": "command", "command": ["cat", str(ruleset)]},
        {
            "name": "selections",
            "kind": "command",
            # no shell is involved: the argv reaches printf exactly as written
            "command": ["printf", "%s\\tinstall\\n", "nginx", "postgresql-16", "$HOME"],
            "filename": "dpkg-selections.txt",
        },
    ]
    env.write_config()
    code, results = run_backup(env)
    assert code == 0, results
    assert results["nft"]["bytes"] == len(RULESET)

    assert (restore(env, "nft", tmp_path / "r1") / "nft.txt").read_bytes() == RULESET
    restored = restore(env, "selections", tmp_path / "r2")
    assert sorted(p.name for p in restored.iterdir()) == ["dpkg-selections.txt"]
    assert (restored / "dpkg-selections.txt").read_bytes() == (
        b"nginx\tinstall\npostgresql-16\tinstall\n$HOME\tinstall\n"
    )
    assert latest_stats(env, "nft") == {
        "command": ["cat", str(ruleset)],
        "bytes": len(RULESET),
        "exit_code": 0,
    }


def test_failing_commands_fail_only_their_source(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    env = local_backup_env
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nginx.conf").write_text("events {}\n")
    env.add_source("etc", tmp_path / "etc", category="config")
    env.sources += [
        {
            "name": "iptables",
            "kind": "command",
            "command": ["sh", "-c", "echo '# partial'; echo 'permission denied' >&2; exit 3"],
        },
        {"name": "crontab", "kind": "command", "command": ["true"]},
        {"name": "crontab-ok", "kind": "command", "command": ["true"], "allow_empty": True},
        {"name": "missing", "kind": "command", "command": ["/nonexistent/iptables-save"]},
    ]  # fmt: skip
    env.write_config()
    code, results = run_backup(env)
    assert code == 1
    assert results["etc"]["status"] == "ok"
    assert results["crontab-ok"]["status"] == "ok"
    failed(results, "iptables", "exited with status 3", "permission denied")
    failed(results, "crontab", "printed nothing")
    failed(results, "missing", "/nonexistent/iptables-save not found")
    # a failed source leaves no snapshot, not even of the output it printed before failing
    assert snapshot_sources(env) == {"etc", "crontab-ok"}
    restored = restore(env, "crontab-ok", tmp_path / "r")
    assert (restored / "crontab-ok.txt").read_bytes() == b""


def test_command_past_its_timeout_fails_quickly(local_backup_env: BackupEnv) -> None:
    env = local_backup_env
    env.sources.append(
        {"name": "hang", "kind": "command", "command": ["sleep", "30"], "timeout": 1}
    )
    env.write_config()
    code, results = run_backup(env)
    assert code == 1
    failed(results, "hang", "did not finish within 1 s")
    assert results["hang"]["duration_seconds"] < 5
    assert snapshot_sources(env) == set()


def test_command_timeout_also_stops_grandchildren(local_backup_env: BackupEnv) -> None:
    env = local_backup_env
    env.sources.append(
        {
            "name": "pipe",
            "kind": "command",
            "command": ["sh", "-c", "sleep 6; echo x"],
            "timeout": 1,
        }
    )
    env.write_config()
    _, results = run_backup(env)
    failed(results, "pipe", "did not finish within 1 s")
    assert results["pipe"]["duration_seconds"] < 4


# -- ssh -------------------------------------------------------------------------------------


def private_copy(key: Path, target: Path, mode: int = 0o600) -> Path:
    shutil.copyfile(key, target)
    target.chmod(mode)
    return target


def ssh_source(server: SSHServer, name: str, command: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "ssh",
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "key": str(server.client_key),
        "known_hosts": str(server.known_hosts),
        "command": command,
        "timeout": 20,
        **extra,
    }


def keygen(path: Path, passphrase: str = "") -> str:
    """A new ed25519 key pair; returns the public key as ``type base64``."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def fingerprint(known_hosts: Path) -> str:
    """``SHA256:...`` of the only key in a known_hosts file, as OpenSSH computes it."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(known_hosts)], check=True, capture_output=True, text=True
    ).stdout
    return out.split()[1]


def test_ssh_output_is_restored_byte_exact(
    local_backup_env: BackupEnv, sshd_server: SSHServer, tmp_path: Path
) -> None:
    env = local_backup_env
    running_config = tmp_path / "running-config"
    # several chunks, bytes that are not UTF-8, and no trailing newline
    data = RULESET + os.urandom(3 * 1024 * 1024) + b"\r\n\xff end"
    running_config.write_bytes(data)
    # 4 MB on stderr first: more than the channel's window, so the backup only finishes if
    # stderr is drained while stdout is read
    noisy = f"yes 'warning: deprecated command' | head -c 4000000 >&2; cat {running_config}"
    env.sources += [
        ssh_source(sshd_server, "core-sw1", f"cat {running_config}", filename="running-config"),
        ssh_source(sshd_server, "noisy", noisy),
    ]
    env.write_config()
    code, results = run_backup(env)
    assert code == 0, results
    restored = restore(env, "core-sw1", tmp_path / "r1") / "running-config"
    assert restored.read_bytes() == data
    assert (restore(env, "noisy", tmp_path / "r2") / "noisy.txt").read_bytes() == data
    assert latest_stats(env, "core-sw1") == {
        "host": sshd_server.host,
        "port": sshd_server.port,
        "command": f"cat {running_config}",
        "bytes": len(data),
        "host_key": f"ssh-ed25519 {fingerprint(sshd_server.known_hosts)}",
    }


def test_ssh_host_key_must_be_pinned(
    local_backup_env: BackupEnv, sshd_server: SSHServer, tmp_path: Path
) -> None:
    env = local_backup_env
    name = f"[{sshd_server.host}]:{sshd_server.port}"
    other = keygen(tmp_path / "other_host_key")
    changed = tmp_path / "changed_known_hosts"
    changed.write_text(f"{name} {other}\n")
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    # the right key, but pinned for port 22: a different host as far as SSH is concerned
    other_port = tmp_path / "port22_known_hosts"
    other_port.write_text(f"{sshd_server.host} {sshd_server.host_key_line}\n")
    # OpenSSH syntax paramiko cannot parse: it must fail the source, not crash the run
    marker = tmp_path / "marker_known_hosts"
    marker.write_text(f"@revoked * {other}\n{name} {sshd_server.host_key_line}\n")
    pinned = {p: p.read_text() for p in (changed, empty, other_port)}
    env.sources += [
        ssh_source(sshd_server, "changed", "uname -a", known_hosts=str(changed)),
        ssh_source(sshd_server, "empty", "uname -a", known_hosts=str(empty)),
        ssh_source(sshd_server, "other-port", "uname -a", known_hosts=str(other_port)),
        ssh_source(sshd_server, "no-file", "uname -a", known_hosts=str(tmp_path / "nope")),
        ssh_source(sshd_server, "marker", "uname -a", known_hosts=str(marker)),
    ]
    env.write_config()
    code, results = run_backup(env)
    assert code == 1
    server_fp = fingerprint(sshd_server.known_hosts)
    error = failed(results, "changed", "host key of", "has CHANGED", "out of band", str(changed))
    assert server_fp in error
    assert fingerprint(changed) in error
    for source in ("empty", "other-port"):
        failed(results, source, "unknown host key", name, server_fp, "out of band", "ssh-keyscan")
    failed(results, "no-file", "known_hosts file", "not found", "ssh-keyscan -p")
    failed(results, "marker", str(marker), "cannot read the line '@revoked")
    assert snapshot_sources(env) == set()
    # nothing refused was written into the files (paramiko saves only under AutoAddPolicy)
    assert {p: p.read_text() for p in (changed, empty, other_port)} == pinned


def test_ssh_key_and_command_failures(
    local_backup_env: BackupEnv, sshd_server: SSHServer, tmp_path: Path
) -> None:
    env = local_backup_env
    readable = private_copy(sshd_server.client_key, tmp_path / "readable_key", 0o644)
    locked = tmp_path / "locked_key"
    keygen(locked, passphrase="secret")
    unauthorized = tmp_path / "unauthorized_key"
    keygen(unauthorized)
    public = private_copy(unauthorized.with_suffix(".pub"), tmp_path / "public_key")
    env.sources += [
        ssh_source(sshd_server, "readable-key", "uname -a", key=str(readable)),
        ssh_source(sshd_server, "passphrase", "uname -a", key=str(locked)),
        ssh_source(sshd_server, "unauthorized", "uname -a", key=str(unauthorized)),
        # the usual slip: the .pub file where the private key belongs
        ssh_source(sshd_server, "public-key", "uname -a", key=str(public)),
        ssh_source(
            sshd_server,
            "exit-5",
            "echo 'Building configuration...'; echo '% Invalid input detected' >&2; exit 5",
        ),
        ssh_source(sshd_server, "silent", "true"),
        ssh_source(sshd_server, "silent-ok", "true", allow_empty=True),
        ssh_source(sshd_server, "hangs", "sleep 30", timeout=1),
        # OpenSSH reports a signal as exit-signal, which paramiko does not turn into a status
        ssh_source(sshd_server, "killed", "echo partial; kill -KILL $$"),
        ssh_source(sshd_server, "refused", "uname -a", port=free_port()),
        ssh_source(sshd_server, "uname", "uname -a"),
    ]
    env.write_config()
    code, results = run_backup(env)
    assert code == 1
    assert results["uname"]["status"] == "ok"
    assert results["silent-ok"]["status"] == "ok"
    failed(results, "readable-key", str(readable), "mode 0644", f"chmod 600 {readable}")
    failed(results, "passphrase", "passphrase", "without one")
    failed(results, "unauthorized", "authentication as", "failed")
    failed(results, "public-key", str(public), "not a usable private key")
    failed(results, "exit-5", "exited with status 5", "% Invalid input detected")
    failed(results, "silent", "printed nothing")
    failed(results, "hangs", "did not finish within 1 s")
    assert results["hangs"]["duration_seconds"] < 5
    failed(results, "killed", "without an exit status")
    failed(results, "refused", "cannot connect to", "Connection refused")
    assert snapshot_sources(env) == {"uname", "silent-ok"}
    uname = subprocess.run(["uname", "-a"], check=True, capture_output=True).stdout
    assert (restore(env, "uname", tmp_path / "r") / "uname.txt").read_bytes() == uname
