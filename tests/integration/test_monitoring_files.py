"""The monitoring role's files that hand things to the unprivileged service user.

- The webhook token's directory: the role gives it to the service user (0700) only when it
  is a directory of its own; a token file placed in the configuration directory (ops.yaml,
  writer.key), the state directory of the root jobs or a system directory is refused with a
  clear message before anything changes, and a directory someone else already owns is left
  alone. Real ansible-playbook runs the role's ``token_dir.yml`` against localhost into a
  temporary directory.
- The logrotate snippet: the log directory is the service user's, so logrotate must rotate
  as that user (``su``); real ``logrotate -d`` reads the rendered file.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.fixtures.local_play import local_play
from tests.fixtures.paths import PROJECT

# A system user whose group has its name (the role's assumption), present on every Debian.
SERVICE_USER = "daemon"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")

PLAY = """\
- name: The monitoring role's {tasks}
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: The role's tasks
      ansible.builtin.include_role:
        name: monitoring
        tasks_from: {tasks}
"""


def play(root: Path, tasks: str, variables: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the monitoring role's ``tasks`` file on localhost with ``variables``."""
    return local_play(root, PLAY.format(tasks=tasks), variables)


def site(root: Path, token_file: Path) -> dict[str, str]:
    """A host laid out under ``root``: configuration, state and log directories."""
    for d in ("etc/portal-ops", "var/lib/portal-ops", "var/log/portal-ops", "etc/prometheus"):
        (root / d).mkdir(parents=True, exist_ok=True)
    return {
        "monitoring_service_user": SERVICE_USER,
        "monitoring_ops_config_file": str(root / "etc/portal-ops/ops.yaml"),
        "monitoring_ops_units_file": str(root / "etc/portal-ops/units.yaml"),
        "monitoring_state_dir": str(root / "var/lib/portal-ops"),
        "monitoring_log_dir": str(root / "var/log/portal-ops"),
        "monitoring_prometheus_dir": str(root / "etc/prometheus"),
        "monitoring_ops_venv": str(root / "opt/venv"),
        "monitoring_webhook_token_file": str(token_file),
    }


def owner_and_mode(path: Path) -> tuple[str, int]:
    st = path.stat()
    return pwd.getpwuid(st.st_uid).pw_name, stat.S_IMODE(st.st_mode)


@pytest.mark.parametrize(
    "where",
    ["etc/portal-ops", "var/lib/portal-ops", "var/log/portal-ops", "", "etc/prometheus"],
)
def test_a_token_beside_the_configuration_or_state_is_refused(tmp_path: Path, where: str) -> None:
    token_dir = tmp_path / where if where else tmp_path  # "" : an ancestor of them all
    variables = site(tmp_path, token_dir / "webhook.token")
    before = owner_and_mode(token_dir)
    done = play(tmp_path, "token_dir.yml", variables)
    assert done.returncode != 0
    assert "would be handed to the service user" in done.stdout, done.stdout[-3000:]
    assert owner_and_mode(token_dir) == before


@pytest.mark.parametrize("token", ["/etc/webhook.token", "/var/lib/webhook.token"])
def test_a_token_in_a_system_directory_is_refused(tmp_path: Path, token: str) -> None:
    variables = site(tmp_path, Path(token))
    done = play(tmp_path, "token_dir.yml", variables)
    assert done.returncode != 0
    assert "would be handed to the service user" in done.stdout, done.stdout[-3000:]
    assert not Path(token).exists()


def test_a_dedicated_directory_is_created_for_the_service_user(tmp_path: Path) -> None:
    token_dir = tmp_path / "var/lib/portal-ops/oncall"
    done = play(tmp_path, "token_dir.yml", site(tmp_path, token_dir / "webhook.token"))
    assert done.returncode == 0, done.stdout[-3000:]
    assert owner_and_mode(token_dir) == (SERVICE_USER, 0o700)
    assert owner_and_mode(tmp_path / "var/lib/portal-ops") == ("root", 0o755)


def test_an_existing_directory_of_someone_else_is_left_alone(tmp_path: Path) -> None:
    token_dir = tmp_path / "secrets"
    token_dir.mkdir(mode=0o755)
    token_dir.chmod(0o755)
    done = play(tmp_path, "token_dir.yml", site(tmp_path, token_dir / "webhook.token"))
    assert done.returncode == 0, done.stdout[-3000:]
    assert owner_and_mode(token_dir) == ("root", 0o755)


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate not installed")
def test_logrotate_rotates_as_the_service_user(tmp_path: Path) -> None:
    """Rendered by the role's template; logrotate accepts it for a directory the service
    user owns and switches to that user; without ``su`` it refuses to rotate there."""
    # pytest's own base directory is 0700: the service user could not reach a log under it
    outer = Path(tempfile.mkdtemp(prefix="ops-logrotate-", dir="/tmp"))
    try:
        outer.chmod(0o755)
        check_logrotate(tmp_path, outer / "log")
    finally:
        shutil.rmtree(outer)


def check_logrotate(tmp_path: Path, log_dir: Path) -> None:
    log_dir.mkdir()
    (log_dir / "monitor.log").write_text("x\n" * 10)
    shutil.chown(log_dir, SERVICE_USER, SERVICE_USER)
    log_dir.chmod(0o770)  # group-writable by a group other than root: logrotate's concern
    rendered = tmp_path / "portal-ops-services"
    template = PROJECT / "playbooks/roles/monitoring/templates/logrotate.j2"
    play_dir = tmp_path / "render"
    play_dir.mkdir()
    done = local_play(
        play_dir,
        "- name: Render\n  hosts: localhost\n  connection: local\n  gather_facts: false\n"
        "  tasks:\n    - name: Render the logrotate snippet\n"
        f"      ansible.builtin.template:\n        src: {template}\n        dest: {rendered}\n",
        {"monitoring_log_dir": str(log_dir), "monitoring_service_user": SERVICE_USER},
    )
    assert done.returncode == 0, done.stdout[-3000:]
    text = rendered.read_text(encoding="utf-8")
    assert f"su {SERVICE_USER} {SERVICE_USER}" in text

    def debug(config: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["logrotate", "-d", "-f", "-s", str(tmp_path / "state"), str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    ok = debug(rendered)
    assert ok.returncode == 0, ok.stderr
    assert "insecure permissions" not in ok.stderr
    assert "monitor.log" in ok.stderr
    without_su = tmp_path / "without-su"
    without_su.write_text(
        "".join(line for line in text.splitlines(keepends=True) if "su " not in line)
    )
    refused = debug(without_su)
    assert "insecure permissions" in refused.stderr, refused.stderr  # the test can fail
