"""The ops CLI: what it prints and its exit codes, run in-process through ``main(argv, env)``;
and a few real processes for what only a process shows: the exit status itself, no traceback
on stderr, Ctrl-C, the ``./ops.py`` shim and the installed ``ops`` script."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from portalops.cli.environment import Environment
from portalops.cli.main import main
from tests.fixtures.backup_env import BackupEnv
from tests.fixtures.cli import run_ops
from tests.fixtures.paths import OPS_PY, PROJECT

VENV_BIN = Path(sys.executable).parent


def ops(*args: str, cwd: Path = PROJECT) -> subprocess.CompletedProcess[str]:
    """A real ``ops`` process (``python ops.py``), for the few tests about the process."""
    return subprocess.run(
        [sys.executable, str(OPS_PY), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_domains_json_lists_the_decision_examples() -> None:
    result = run_ops("--json", "inventory", "domains", cwd=PROJECT)
    assert result.code == 0, result.stderr
    docs = json.loads(result.stdout)
    by_unit = {d["unit"]: d for d in docs}
    assert by_unit["Tỉnh Vĩnh Phúc"]["domains"][:2] == [
        "www.vinhphuc.gov.vn",
        "english.vinhphuc.gov.vn",
    ]
    assert by_unit["Sở Thông tin và Truyền thông"]["domains"][0] == "sotttt.vinhphuc.gov.vn"
    assert by_unit["Huyện Vĩnh Tường"]["domains"][0] == "vinhtuong.vinhphuc.gov.vn"
    daotru = by_unit["Xã Đạo Trù"]
    assert daotru == {
        "unit": "Xã Đạo Trù",
        "kind": "commune",
        "parent": "Huyện Tam Đảo",
        "domains": ["daotru.tamdao.vinhphuc.gov.vn"],
        "legacy": [],
    }
    assert {d["kind"] for d in docs} == {"province", "department", "district", "commune"}
    assert all(set(d) == {"unit", "kind", "parent", "domains", "legacy"} for d in docs)


def test_shipped_estates_check_clean() -> None:
    result = run_ops("inventory", "check", cwd=PROJECT)
    assert result.code == 0, result.stderr
    assert "9" in result.stdout  # nine district-level units
    phutho = run_ops(
        "--json", "--units", "inventory/examples/phutho-2025.yaml", "inventory", "check",
        cwd=PROJECT,
    )  # fmt: skip
    assert phutho.code == 0, phutho.stderr
    summary = json.loads(phutho.stdout)
    assert summary["levels"] == 2
    assert summary["counts"]["district"] == 0
    assert summary["legacy_redirects"] > 0


def test_shipped_estate_counts() -> None:
    summary = json.loads(run_ops("--json", "inventory", "check", cwd=PROJECT).stdout)
    assert summary["counts"]["province"] == 1
    assert summary["counts"]["district"] == 9
    assert summary["counts"]["department"] >= 15
    assert summary["counts"]["commune"] >= 20


def test_human_tables_are_one_line_per_row_when_piped() -> None:
    """Not a terminal: no box art beyond the header rule, no colour codes, nothing wrapped
    at 80 columns however long a row is."""
    result = run_ops("inventory", "domains", cwd=PROJECT)
    assert result.code == 0, result.stderr
    assert "\x1b[" not in result.stdout
    row = next(line for line in result.stdout.splitlines() if "daotru.tamdao" in line)
    assert "Xã Đạo Trù" in row


def test_ansible_inventory_script_protocol() -> None:
    """Hosts are the servers of inventory/servers.yaml, groups their roles."""
    listed = run_ops("inventory", "ansible", "--list", cwd=PROJECT)
    assert listed.code == 0, listed.stderr
    inv = json.loads(listed.stdout)
    assert set(inv["all"]["children"]) == {"web", "database", "dns", "monitoring", "agent"}
    web_hosts = inv["web"]["hosts"]
    served = {
        site["domain"]: host
        for host in web_hosts
        for site in inv["_meta"]["hostvars"][host]["portal_sites"]
    }
    assert "daotru.tamdao.vinhphuc.gov.vn" in served
    host = run_ops("inventory", "ansible", "--host", served["sotttt.vinhphuc.gov.vn"], cwd=PROJECT)
    assert host.code == 0, host.stderr
    assert "sotttt.vinhphuc.gov.vn" in [
        s["domain"] for s in json.loads(host.stdout)["portal_sites"]
    ]
    unknown = run_ops("inventory", "ansible", "--host", "nope.example.org", cwd=PROJECT)
    assert unknown.code == 2
    assert "nope.example.org" in unknown.stderr


def test_ansible_inventory_bad_servers_file_exits_2(tmp_path: Path) -> None:
    servers = tmp_path / "servers.yaml"
    servers.write_text("servers:\n  - name: web1\n    address: 10.0.0.1\n    roles: [webserver]\n")
    result = run_ops("inventory", "ansible", "--list", "--servers", str(servers), cwd=PROJECT)
    assert result.code == 2
    assert f"{servers}:4: servers[0].roles[0]: expected 'web', 'database'" in result.stderr
    assert result.stdout == ""


def test_ansible_inventory_is_accepted_by_ansible(tmp_path: Path) -> None:
    """ansible-inventory parses our --list output through the shipped script inventory."""
    ansible_inventory = VENV_BIN / "ansible-inventory"
    result = subprocess.run(
        [str(ansible_inventory), "-i", str(PROJECT / "inventory/estate"), "--list"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "ANSIBLE_LOCAL_TEMP": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout)
    assert parsed["dns"]["hosts"] == ["ns1"]
    records = parsed["_meta"]["hostvars"]["ns1"]["portal_dns_records"]
    assert {"name": "daotru.tamdao", "ipv4": "203.0.113.12", "ipv6": "2001:db8::12"} in records
    # inventory/group_vars/all.yml beside the script is read too
    assert parsed["_meta"]["hostvars"]["web1"]["portal_security_level"] == 2


@pytest.mark.parametrize(
    ("files", "args", "expect_in_stderr"),
    [
        ({"u.yaml": "province: {name: X, zone: x.vn}\nlevels: five\n"}, ["--units", "u.yaml"],
         "u.yaml:2: levels: expected 2 or 3"),
        ({"u.yaml": "province: [\n"}, ["--units", "u.yaml"], "u.yaml:2: YAML syntax error"),
        ({}, ["--units", "missing.yaml"], "missing.yaml: file not found"),
        ({"c.yaml": "backup: {retention: {daily: seven}}\n"}, ["--config", "c.yaml"],
         "c.yaml:1: backup.retention.daily: expected a whole number, got 'seven'"),
    ],
)  # fmt: skip
def test_bad_input_exits_2(
    tmp_path: Path, files: dict[str, str], args: list[str], expect_in_stderr: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    command = "config-check" if "--config" in args else "check"
    result = run_ops(*args, "inventory" if command == "check" else "config", "check", cwd=tmp_path)
    assert result.code == 2, (result.stdout, result.stderr)
    assert expect_in_stderr in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [["frobnicate"], ["inventory"], ["inventory", "ansible"], ["--json"], ["inventory", "nope"]],
)
def test_bad_arguments_exit_2(args: list[str]) -> None:
    result = run_ops(*args)
    assert result.code == 2
    assert "usage:" in result.stderr
    assert result.stdout == ""


def test_help_and_version_exit_0_on_stdout() -> None:
    version = run_ops("--version")
    assert (version.code, version.stderr) == (0, "")
    assert version.stdout.startswith("portal-ops ")
    helped = run_ops("backup", "--help")
    assert helped.code == 0
    assert helped.stdout.startswith("usage: ops backup")


def test_config_check_reports_defaults_without_a_file(tmp_path: Path) -> None:
    result = run_ops("--json", "config", "check", cwd=tmp_path)
    # Without config/ops.yaml here, the project's own default location is used if present,
    # else the built-in defaults: either way the command succeeds.
    assert result.code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert "backup" in doc["settings"]


# -- the clock of the Environment, and the exit codes of what goes wrong inside a command ----


def _one_source(env: BackupEnv, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>Cổng thông tin</h1>\n")
    env.add_source("site", site)


def test_backup_run_records_the_environments_clock(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    _one_source(local_backup_env, tmp_path)
    moment = datetime(2026, 3, 1, 2, 30, tzinfo=UTC)
    result = run_ops("backup", "run", config=local_backup_env.config, clock=lambda: moment)
    assert result.code == 0, result.stderr
    status = json.loads((local_backup_env.state_dir / "backup-status.json").read_text())
    assert {e["last_run"]["time"] for e in status["entries"]} == {"2026-03-01T02:30:00Z"}


def _naive() -> datetime:
    return datetime(2026, 3, 1, 2, 30)  # no tzinfo: the bug this test is about


def _interrupted() -> datetime:
    raise KeyboardInterrupt


def test_a_bug_is_exit_3_with_one_line_and_a_traceback_only_with_v(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """A naive clock is a programming error inside the command (ValueError), not bad input."""
    _one_source(local_backup_env, tmp_path)
    result = run_ops("backup", "run", config=local_backup_env.config, clock=_naive)
    assert result.code == 3
    assert result.stderr.strip().splitlines()[-1] == (
        "ops: internal error: ValueError: Environment.clock must return a timezone-aware "
        "datetime (run with -v for the traceback)"
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        run_ops("-v", "backup", "run", config=local_backup_env.config, clock=_naive)


def test_keyboard_interrupt_is_exit_130(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    _one_source(local_backup_env, tmp_path)
    result = run_ops("backup", "run", config=local_backup_env.config, clock=_interrupted)
    assert result.code == 130
    assert result.stderr.endswith("ops: interrupted\n")


def test_main_writes_only_to_the_environments_streams(
    capfd: pytest.CaptureFixture[str],
) -> None:
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err)
    assert main(["--json", "--units", str(PROJECT / "inventory/units.yaml"), "inventory",
                 "check"], env) == 0  # fmt: skip
    assert main(["frobnicate"], env) == 2
    assert json.loads(out.getvalue())["levels"] == 3
    assert "invalid choice: 'frobnicate'" in err.getvalue()
    assert capfd.readouterr() == ("", "")


def test_progress_bars_only_on_a_terminal_stderr(
    local_backup_env: BackupEnv, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A person at a terminal sees a bar per source; cron mail and pipes see nothing."""
    _one_source(local_backup_env, tmp_path)
    argv = ["--config", str(local_backup_env.config), "backup", "run"]
    for tty in (False, True):
        out, err = io.StringIO(), io.StringIO()
        # TTY_COMPATIBLE: rich draws on a StringIO as it would on a terminal
        environ = {"TERM": "xterm", "TTY_COMPATIBLE": "1"}
        env = Environment(stdout=out, stderr=err, stderr_is_tty=tty, environ=environ)
        assert main(argv, env) == 0, err.getvalue()
        assert ("site → main" in err.getvalue()) is tty, err.getvalue()
        assert "site → main" not in out.getvalue()
    assert capfd.readouterr() == ("", "")


# -- real processes ------------------------------------------------------------------------


def test_process_exit_codes_and_no_traceback(tmp_path: Path) -> None:
    ok = ops("--json", "inventory", "check")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["levels"] == 3
    bad_input = ops("--units", "missing.yaml", "inventory", "check", cwd=tmp_path)
    assert bad_input.returncode == 2
    assert bad_input.stderr == "ops: missing.yaml: file not found\n"
    assert bad_input.stdout == ""
    bad_args = ops("frobnicate")
    assert bad_args.returncode == 2
    assert "usage:" in bad_args.stderr
    assert "Traceback" not in bad_args.stderr + bad_input.stderr


def test_ops_py_runs_as_a_script_and_the_console_script_is_installed() -> None:
    path = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    shim = subprocess.run(
        [str(OPS_PY), "--version"], capture_output=True, text=True, cwd=PROJECT, timeout=60,
        env={**os.environ, "PATH": path}, check=False,
    )  # fmt: skip
    assert shim.returncode == 0, shim.stderr
    assert shim.stdout.startswith("portal-ops ")
    installed = subprocess.run(
        [str(VENV_BIN / "ops"), "--json", "inventory", "domains"], capture_output=True,
        text=True, cwd=PROJECT, timeout=60, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    assert any(d["unit"] == "Xã Đạo Trù" for d in json.loads(installed.stdout))


def test_sigint_exits_130_without_traceback(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    """Ctrl-C during a backup run: the command source's child is still running when ops is
    interrupted; ops says so in one line and exits 130."""
    env = local_backup_env
    started = tmp_path / "started"
    env.sources.append(
        {"name": "slow", "kind": "command", "category": "database",
         "command": ["sh", "-c", f"touch {started}; exec sleep 30"]}
    )  # fmt: skip
    env.write_config()
    proc = env.popen("backup", "run")
    try:
        deadline = time.monotonic() + 30
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert started.exists(), proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "ops: interrupted" in stderr
    assert "Traceback" not in stderr


def test_the_command_line_loads_no_client_library_until_a_command_needs_one() -> None:
    """Every ``ops`` run imports every command module: none may pull in the database, SSH or
    S3 clients (a writer host backing up files only may not even have them working)."""
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys, portalops.cli.main\n"
         "clients = ('psycopg', 'pymysql', 'paramiko', 'boto3')\n"
         "print(sorted(m for m in clients if m in sys.modules))"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert probe.stdout.strip() == "[]"


def test_a_reader_that_goes_away_gets_no_traceback() -> None:
    """``ops --json ... | head``: the pipe is closed before ops writes; it finishes quietly."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, str(OPS_PY), "--json", "inventory", "domains"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_an_in_process_run_does_not_take_in_the_logs_of_threads_that_were_there_before() -> None:
    """A test's servers may log from their own threads while ops runs in-process; that is not
    the command's stderr (in a real process there are no such threads)."""
    import logging
    import threading

    stop, said = threading.Event(), threading.Event()

    def chatter() -> None:
        while not stop.wait(0.001):
            logging.getLogger("asyncio").warning("a server thread's warning")
            said.set()

    thread = threading.Thread(target=chatter, name="fixture-server", daemon=True)
    thread.start()
    try:
        said.wait(5)
        said.clear()
        done = run_ops("-v", "--json", "inventory", "check")
        assert said.is_set()  # it went on talking while ops ran
    finally:
        stop.set()
        thread.join(timeout=5)
    assert done.code == 0, done.stderr
    assert "a server thread's warning" not in done.stderr
