"""``ops cron`` and ``ops schedule`` through the real CLI: the installed cron line is executed
the way cron would run it (``sh -c`` with the file's environment, from the user's home), and
must really back up. No cron daemon runs here: waiting for its minute would make a slow,
clock-bound test, so the line's command part is run directly, as cron hands it to the shell."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from portalops.backup.jobs.status import STATUS_NAME
from portalops.schedule import Job, run_job
from tests.fixtures.backup_env import BackupEnv

pytestmark = pytest.mark.integration


def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text("<h1>Cổng thông tin điện tử xã Đạo Trù</h1>\n")
    return root


def parse_cron_file(path: Path) -> tuple[dict[str, str], list[list[str]]]:
    """(environment lines, job lines split as cron does: 5 time fields, user, command)."""
    env: dict[str, str] = {}
    jobs = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        head = line.split(None, 1)[0]
        if "=" in head and not head[0].isdigit() and head[0] != "*":
            name, _, value = line.partition("=")
            env[name.strip()] = value.strip()
            continue
        fields = line.split(None, 6)
        assert len(fields) == 7, line
        jobs.append(fields)
    return env, jobs


def run_as_cron(
    command: str, cron_env: dict[str, str], home: Path
) -> subprocess.CompletedProcess[str]:
    """What cron does with a line's command: /bin/sh -c, the file's variables, HOME, no TTY."""
    environment = {"HOME": str(home), "LOGNAME": "root", "SHELL": "/bin/sh", **cron_env}
    return subprocess.run(
        ["/bin/sh", "-c", command], capture_output=True, text=True, env=environment,
        cwd=home, stdin=subprocess.DEVNULL, timeout=300, check=False,
    )  # fmt: skip


def test_installed_line_runs_the_backup(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    env = local_backup_env
    web = site(tmp_path)
    env.add_source("webroot", web)
    cron_file = tmp_path / "cron.d" / "portal-ops"
    cron_file.parent.mkdir()
    doc = env.ops_json("cron", "--role", "writer", "--install", "--file", str(cron_file))
    assert doc["installed"] is True
    assert doc["file"] == str(cron_file)
    assert cron_file.read_text() == "\n".join(doc["lines"]) + "\n"
    assert stat.S_IMODE(cron_file.stat().st_mode) == 0o644
    assert sorted(p.name for p in cron_file.parent.iterdir()) == ["portal-ops"]

    cron_env, jobs = parse_cron_file(cron_file)
    assert [j[5] for j in jobs] == ["root"]
    minute, hour, dom, month, dow, _user, command = jobs[0]
    assert (dom, month, dow) == ("*", "*", "*")
    assert 0 <= int(minute) < 60
    assert 0 <= int(hour) < 24
    assert f"--config {env.config} backup run >/dev/null" in command
    assert command.split()[0].startswith("/")  # cron's PATH knows nothing of venvs

    home = tmp_path / "home"
    home.mkdir()
    result = run_as_cron(command, cron_env, home)
    assert result.returncode == 0
    assert result.stdout == ""
    assert result.stderr == ""
    snapshots = env.ops_json("backup", "list")
    assert [s["source"] for s in snapshots] == ["webroot"]
    assert json.loads((env.state_dir / STATUS_NAME).read_text())["entries"][0]["last_run"]["ok"]

    # A failing night mails its errors, and says which job failed.
    (web / "index.html").unlink()
    web.rmdir()
    result = run_as_cron(command, cron_env, home)
    assert result.stdout == ""
    assert "cannot read" in result.stderr
    assert str(web) in result.stderr
    assert "portal-ops job 'backup' failed: ops backup run exited 1" in result.stderr


def test_print_without_installing(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    env = local_backup_env
    env.add_source("webroot", site(tmp_path))
    target = tmp_path / "never-written"
    result = env.ops("cron", "--role", "admin", "--file", str(target))
    assert result.returncode == 0, result.stderr
    assert not target.exists()
    for args in ("backup check", "backup check --read-data 10", "backup forget --prune"):
        assert f"--config {env.config} {args} >/dev/null" in result.stdout
    assert "backup run >/dev/null" not in result.stdout
    assert "CRON_TZ=" not in result.stdout


def test_cron_refusals(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    env = local_backup_env
    result = env.ops("cron")
    assert result.returncode == 2
    assert "backup.sources is empty" in result.stderr
    env.add_source("webroot", site(tmp_path))
    env.write_config(identity=False)
    result = env.ops("cron", "--role", "admin")
    assert result.returncode == 2
    assert "backup.identity is not set" in result.stderr
    result = env.ops("cron", "--install", "--file", "/etc/cron.d/portal.ops")
    assert result.returncode == 2
    assert "cron ignores files" in result.stderr
    assert not Path("/etc/cron.d/portal.ops").exists()
    result = env.ops("cron", "--install", "--file", str(tmp_path / "nodir" / "portal-ops"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    result = env.ops("cron", "--machine-tz", "Mars/Olympus")
    assert result.returncode == 2
    assert "unknown time zone" in result.stderr


def test_bad_schedule_in_config_names_file_line_and_key(tmp_path: Path) -> None:
    config = tmp_path / "ops.yaml"
    config.write_text(
        "backup:\n"
        "  sources:\n"
        "    - {name: web, kind: files, category: code, paths: [/srv]}\n"
        "  schedule:\n"
        '    backup: "2:75"\n'
        "    read_data: Sunday 6h\n"
    )
    env = BackupEnv(tmp_path, str(tmp_path / "repo"))
    for command in (["cron"], ["schedule", "--once", "backup"], ["backup", "run"]):
        result = env.ops(*command)
        assert result.returncode == 2, (command, result.stderr)
        assert "Traceback" not in result.stderr
        assert f"{config}:5: backup.schedule.backup: expected 'HH:MM'" in result.stderr
        assert "got '2:75'" in result.stderr
        assert f"{config}:6: backup.schedule.read_data: expected" in result.stderr


def test_schedule_once_runs_the_job(local_backup_env: BackupEnv, tmp_path: Path) -> None:
    env = local_backup_env
    env.add_source("webroot", site(tmp_path))
    result = env.ops("--json", "schedule", "--once", "backup")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["job"] == "backup"
    assert doc["exit_code"] == 0
    assert doc["command"][-4:] == ["--config", str(env.config.resolve()), "backup", "run"]
    assert "job backup finished: exit code 0" in result.stderr
    assert [s["source"] for s in env.ops_json("backup", "list")] == ["webroot"]
    result = env.ops("schedule", "--once", "coffee")
    assert result.returncode == 2
    assert "no such job" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_schedule_daemon_stops_cleanly(
    local_backup_env: BackupEnv, tmp_path: Path, sig: signal.Signals
) -> None:
    env = local_backup_env
    env.add_source("webroot", site(tmp_path))
    daemon = env.popen("schedule", "--role", "writer")
    assert daemon.stderr is not None
    try:
        # A daemon logs at INFO: first which config it read, then its plan.
        said = [daemon.stderr.readline() for _ in range(2)]
        assert "config: " in said[0]
        assert "(--config)" in said[0]
        assert "job backup: ops backup run at 02:30 Asia/Ho_Chi_Minh, next run" in said[1]
        started = time.monotonic()
        daemon.send_signal(sig)
        stdout, stderr = daemon.communicate(timeout=10)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    assert time.monotonic() - started < 5
    assert daemon.returncode == 0, stderr
    assert f"stopped by {sig.name} after 0 job run(s)" in stdout
    assert "Traceback" not in stderr
    assert os.path.exists(env.config)


def test_stopping_interrupts_a_running_job(
    local_backup_env: BackupEnv, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A daemon told to stop passes SIGINT to the job it is running, which then exits cleanly.
    The long-running job here is another 'ops schedule' (it runs until interrupted); it is
    stopped once it has planned its jobs (its log says so), not after a fixed time, which a
    loaded machine spends importing."""
    env = local_backup_env
    env.add_source("webroot", site(tmp_path))
    job = Job("backup", "writer", ("schedule", "--role", "writer"), "a job that never ends")
    logged: list[str] = []

    def planned() -> bool:
        logged.append(capfd.readouterr().err)  # the child's stderr, captured at the fd
        return "next run" in "".join(logged)

    result = run_job(job, env.config, planned)
    assert "next run" in "".join(logged)
    assert result["seconds"] < 60  # well before STOP_GRACE: not killed
    assert result["exit_code"] == 0  # it stopped on SIGINT as it should, not killed
