"""The process helpers fail loudly and clean up: the fixtures' failure paths depend on them,
and so do the drills' throwaway servers (:mod:`portalops.core.procs`, shared by both)."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from portalops.core import procs
from tests.fixtures.procs import (
    SERVICE_USER,
    ensure_service_user,
    free_port,
    require_binary,
    require_module,
    run,
    start_process,
    stop_process,
    tcp_accepts,
    temp_dir,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_missing_binary_fails_naming_the_package() -> None:
    with pytest.raises(pytest.fail.Exception) as excinfo:
        require_binary("/usr/lib/postgresql/15/bin/no-such-program", "postgresql-15")
    message = str(excinfo.value)
    assert "/usr/lib/postgresql/15/bin/no-such-program" in message
    assert "'postgresql-15'" in message
    assert "scripts/setup-system" in message


def test_missing_module_fails_naming_the_requirement() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"install 'no-such-dist'"):
        require_module("no_such_module_portalops", "no-such-dist")


def test_binary_on_path_is_found() -> None:
    assert Path(require_binary("sh", "dash")).is_absolute()


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    assert 1024 < port < 65536
    assert not tcp_accepts(port)


def test_wait_until_timeout_quotes_the_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception) as excinfo:
        wait_until(lambda: 1 / 0 == 0, timeout=0.3, what="the impossible happens", log=log)
    assert time.monotonic() - started < 2
    message = str(excinfo.value)
    assert "waiting until the impossible happens" in message
    assert "ZeroDivisionError" in message
    assert "line 99" in message
    assert "line 69\n" not in message  # only the tail


def test_wait_until_stops_early_when_the_server_dies(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    proc = start_process(
        [sys.executable, "-c", "import sys; print('bind: Address in use'); sys.exit(3)"], log
    )
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception) as excinfo:
        wait_until(lambda: False, timeout=30, what="it listens", log=log, proc=proc)
    assert time.monotonic() - started < 10
    assert "exited with code 3" in str(excinfo.value)
    assert "bind: Address in use" in str(excinfo.value)


def test_stop_process_kills_what_ignores_the_signal(tmp_path: Path) -> None:
    # a parent that ignores SIGTERM and a child it forked, like a server and its workers
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    log = tmp_path / "server.log"
    proc = start_process([sys.executable, "-c", script], log)
    wait_until(lambda: log.read_text().strip() != "", timeout=10, what="the child's pid", log=log)
    child_pid = int(log.read_text().split()[0])
    started = time.monotonic()
    stop_process(proc, sig=signal.SIGTERM, timeout=0.5)
    assert time.monotonic() - started < 5
    assert proc.returncode == -signal.SIGKILL
    # the orphaned child was killed with the group (it may linger as a zombie of init)
    wait_until(lambda: _gone_or_zombie(child_pid), timeout=5, what=f"child {child_pid} is killed")


def _gone_or_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_stop_process_on_an_exited_process_is_harmless(tmp_path: Path) -> None:
    proc = start_process(["true"], tmp_path / "log")
    proc.wait(timeout=5)
    stop_process(proc)
    assert proc.returncode == 0


def test_temp_dir_is_removed(tmp_path: Path) -> None:
    with temp_dir("selftest") as path:
        (path / "sub").mkdir()
        (path / "sub" / "file").write_text("x")
        assert path.name.startswith("portalops-selftest-")
    assert not path.exists()


def test_run_returns_stdout_or_fails_with_output() -> None:
    assert run(["sh", "-c", "echo Hà Nội"], what="echo") == "Hà Nội\n"
    with pytest.raises(pytest.fail.Exception) as excinfo:
        run(["sh", "-c", "echo 'initdb: bad locale' >&2; exit 4"], what="initdb")
    assert "exited with code 4" in str(excinfo.value)
    assert "initdb: bad locale" in str(excinfo.value)
    with pytest.raises(pytest.fail.Exception, match="did not finish within 0 s"):
        run(["sleep", "5"], what="sleeping", timeout=0.2)


# -- portalops.core.procs, as the drills and the bench see it (errors, not pytest failures) --


def test_not_ready_says_why_for_the_caller_to_word(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    proc = start_process([sys.executable, "-c", "print('FATAL: bad setting'); exit(2)"], log)
    with pytest.raises(procs.NotReady) as excinfo:
        procs.wait_ready(lambda: 1 / 0 == 0, what="the cluster", timeout=30, proc=proc, log=log)
    error = excinfo.value
    assert error.returncode == 2
    assert isinstance(error.last_error, ZeroDivisionError)
    assert str(error) == "the cluster exited with code 2 while starting: FATAL: bad setting"
    assert error.exit_code == 3  # an OpsError: the drill reports it like any operational one

    with pytest.raises(procs.NotReady) as excinfo:
        procs.wait_ready(lambda: False, what="the cluster", timeout=0.2, interval=0.05)
    assert excinfo.value.returncode is None
    assert str(excinfo.value) == "the cluster did not accept connections within 0 s"


def test_run_bounded_keeps_the_head_and_tail_of_endless_stderr() -> None:
    script = (
        "import sys\n"
        "sys.stderr.write('first line\\n' + 'x' * 100 + '\\n')\n"
        "for _ in range(40000): sys.stderr.write('ERROR: syntax error at or near \"x\"\\n')\n"
        "sys.stderr.write('last line\\n'); sys.exit(3)\n"
    )
    code, stderr = procs.run_bounded([sys.executable, "-c", script], what="psql", timeout=30)
    assert code == 3
    assert stderr.startswith("first line\n")
    assert stderr.endswith("last line\n")
    assert "bytes left out)" in stderr
    assert len(stderr) < procs.STDERR_HEAD + procs.STDERR_TAIL + 100


def test_run_tool_names_the_step_and_quotes_the_tail() -> None:
    with pytest.raises(procs.ProcessFailed) as excinfo:
        procs.run_tool(["sh", "-c", "echo 'initdb: bad  locale' >&2; exit 4"],
                       what="initdb", timeout=10)  # fmt: skip
    assert str(excinfo.value) == "initdb failed (exit code 4): initdb: bad locale"
    with pytest.raises(procs.ProcessFailed, match=r"^pg_restore: /nonexistent/pg_restore not"):
        procs.run_tool(["/nonexistent/pg_restore"], what="pg_restore", timeout=10)
    with pytest.raises(procs.ProcessFailed, match=r"^sleeping: did not finish within 0 s"):
        procs.run_tool(["sleep", "5"], what="sleeping", timeout=0.2)
    assert procs.run_tool(["sh", "-c", "echo warn >&2; exit 1"], what="x", timeout=10,
                          check=False) == "warn\n"  # fmt: skip


def test_as_user_drops_root_and_keeps_no_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_service_user()
    monkeypatch.setenv("PGPASSWORD", "leaked")
    argv = procs.as_user(["sh", "-c", "id -u; echo $HOME $PGPASSWORD"], SERVICE_USER)
    out = subprocess.run(argv, env=procs.clean_env(tmp_path), capture_output=True, text=True,
                         check=True).stdout.split()  # fmt: skip
    expected = pwd.getpwnam(SERVICE_USER).pw_uid if os.geteuid() == 0 else os.geteuid()
    assert out == [str(expected), str(tmp_path)]


def test_ensure_user_is_a_no_op_for_an_existing_user() -> None:
    procs.ensure_user("nobody", comment="unused", purpose="nothing")
    assert procs.user_exists("nobody")
    assert not procs.user_exists("portalops-no-such-user")
