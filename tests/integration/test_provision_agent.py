"""The agent and monitoring playbooks converged on this machine over the sshd fixture.

agent.yml installs portal-ops from a wheel built on the controller into /opt/portal-ops/venv
(dependencies from this machine's package index), the ``ops`` wrapper, ops.yaml, the estate,
the writer key and the cron file of ``ops cron --role writer``; the test runs the installed
cron line as cron would (no cron daemon wait: its minute would make a clock-bound test) and
checks that the identity never reaches the host, also when someone passes it as the writer
key. monitoring.yml starts the Debian packages' Prometheus, Alertmanager and node_exporter
through their init scripts and ``ops monitor serve`` / ``ops oncall serve`` through the init
scripts the role writes (no systemd here), on their standard loopback ports. Grafana is not in
Debian: only its provisioning files are checked.

The module leaves the machine as it found it where that matters: every service it started is
stopped (``service X stop``) and the cron file is removed, so this shared machine runs no
backup at night. The files under /opt/portal-ops and /etc/portal-ops stay (inert).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.ansible_host import TEST_HOST, Converge, Recap
from tests.fixtures.cli import run_ops
from tests.fixtures.paths import PROJECT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OPS = "/usr/local/bin/ops"
VENV_OPS = "/opt/portal-ops/venv/bin/ops"
CONFIG = "/etc/portal-ops/ops.yaml"
WRITER_KEY = "/etc/portal-ops/writer.key"
CRON_FILE = "/etc/cron.d/portal-ops"
STATE_DIR = "/var/lib/portal-ops"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
SERVICE_USER = "portal-ops"  # ops monitor serve and ops oncall serve run as it
SERVICES = (
    "cron",
    "prometheus",
    "prometheus-alertmanager",
    "prometheus-node-exporter",
    "portal-ops-monitor",
    "portal-ops-oncall",
)
#: What the monitoring host serves on loopback (config/prometheus/prometheus.yml scrapes these).
PORTS = {
    9090: "prometheus",
    9093: "prometheus-alertmanager",
    9100: "prometheus-node-exporter",
    9433: "portal-ops-monitor",
    9434: "portal-ops-oncall",
}


@dataclass
class Agent:
    runner: Converge
    extra_vars: dict[str, Any]
    writer_key: Path
    identity: Path
    site: Path
    started: float

    @property
    def host(self) -> Any:
        return self.runner.host

    @property
    def identity_secret(self) -> str:
        lines = self.identity.read_text(encoding="ascii").splitlines()
        return next(line for line in lines if line.startswith("AGE-SECRET-KEY-"))

    def run(self, playbook: str, **extra: Any) -> Recap:
        return self.runner.run(playbook, extra_vars=self.extra_vars | extra)


def _keygen(work: Path) -> tuple[Path, Path]:
    identity, writer = work / "identity.txt", work / "writer.key"
    made = run_ops("backup", "keygen", "--identity", str(identity), "--writer-key", str(writer))
    assert made.code == 0, made.stderr
    return identity, writer


def _extra_vars(writer_key: Path, site: Path, repo: Path) -> dict[str, Any]:
    """The role variables of the test estate's testhost: a local repository and one source in
    temp dirs, a prober that probes only loopback, one person on call."""
    return {
        "ops_agent_writer_key_file": str(writer_key),
        "ops_agent_config": {
            "backup": {
                "repositories": [{"name": "local", "url": str(repo)}],
                "sources": [
                    {"name": "webroot", "kind": "files", "category": "code", "paths": [str(site)]}
                ],
            },
            # the estate's domains are not ours to resolve: probe Prometheus only, no uplink
            "monitor": {
                "estate": False,
                "urls": ["http://127.0.0.1:9090/-/ready"],
                "modules": ["http"],
                "uplink": [],
            },
            "oncall": {
                "people": [
                    {"id": "an", "name": "Nguyễn Văn An", "channels": ["json://127.0.0.1:9/"]}
                ],
                "rotations": {
                    "primary": {"people": ["an"], "every": "week", "start": "2026-11-30"}
                },
                "escalation": {"steps": [{"notify": "primary", "wait": "5m"}]},
            },
        },
    }


@pytest.fixture(scope="module")
def agent(converge: Converge, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    work = tmp_path_factory.mktemp("agent")
    identity, writer_key = _keygen(work)
    site = work / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>Cổng thông tin điện tử xã Đạo Trù</h1>\n")
    repo = work / "repo"
    host = converge.host
    running_before = {name for name in SERVICES if host.service(name).is_running}
    cron_file_before = host.file(CRON_FILE).exists
    try:
        yield Agent(converge, _extra_vars(writer_key, site, repo), writer_key, identity, site,
                    time.time())  # fmt: skip
    finally:
        for name in reversed(SERVICES):
            if name not in running_before and host.file(f"/etc/init.d/{name}").exists:
                host.run("service %s stop", name)
        if not cron_file_before:
            host.run("rm -f %s", CRON_FILE)


@pytest.fixture(scope="module")
def agent_converged(agent: Agent) -> Recap:
    started = time.monotonic()
    recap = agent.run("agent")
    print(f"agent: first converge {time.monotonic() - started:.1f} s, "
          f"changed={recap.hosts.get(TEST_HOST)}")  # fmt: skip
    return recap.assert_ok()


# -- ops_agent ------------------------------------------------------------------------------


def test_portal_ops_is_installed_with_the_estate(agent: Agent, agent_converged: Recap) -> None:
    host = agent.host
    version = host.run("%s --version", OPS)
    assert version.rc == 0, version.stderr
    assert version.stdout.startswith("portal-ops ")
    check = host.run("%s inventory check", OPS)
    assert check.rc == 0, check.stdout + check.stderr
    # the estate deployed beside the config (the test estate's 6 portals), not the Vĩnh Phúc
    # units.yaml packed in the wheel
    assert "/etc/portal-ops/units.yaml: OK" in check.stdout
    assert "6 portals" in check.stdout
    config = host.file(CONFIG)
    assert (config.user, config.group, config.mode) == ("root", "root", 0o640)
    effective = host.run("%s --json config check", OPS)
    assert effective.rc == 0, effective.stderr


def test_dependencies_are_the_locked_versions(agent: Agent, agent_converged: Recap) -> None:
    """Reproducible installs: every distribution in the host's virtualenv is at the version
    requirements/runtime.lock pins (installed with --require-hashes, the wheel with --no-deps),
    none is missing, and pip finds nothing broken."""
    pins = dict(
        line.split(" ", 1)[0].split("==")
        for line in (PROJECT / "requirements" / "runtime.lock").read_text("utf-8").splitlines()
        if "==" in line and not line.startswith((" ", "#"))
    )
    listed = host_run_ok(agent, "/opt/portal-ops/venv/bin/python -m pip list --format json")
    installed = {d["name"].lower().replace("_", "-"): d["version"] for d in json.loads(listed)}
    wanted = {name.lower().replace("_", "-"): version for name, version in pins.items()}
    assert {n: installed.get(n) for n in wanted} == wanted
    assert installed.pop("portal-ops")
    host_run_ok(agent, "/opt/portal-ops/venv/bin/python -m pip check")


def test_man_page_and_completion_are_those_of_the_installed_ops(
    agent: Agent, agent_converged: Recap
) -> None:
    """`man ops` and bash completion on the host describe the version installed there."""
    for path, argv in (
        ("/usr/local/share/man/man1/ops.1", "manpage"),
        ("/etc/bash_completion.d/ops", "completion bash"),
    ):
        installed = agent.host.file(path)
        assert (installed.user, installed.group, installed.mode) == ("root", "root", 0o644)
        assert installed.content_string == host_run_ok(agent, f"{VENV_OPS} {argv}")
    assert agent.host.package("bash-completion").is_installed
    # man finds it (Debian's /usr/local/man links to /usr/local/share/man)
    listed = host_run_ok(agent, "readlink -f $(man -w ops)")
    assert listed.strip() == "/usr/local/share/man/man1/ops.1"


def host_run_ok(agent: Agent, command: str) -> str:
    """``command``'s stdout on the converged host; fails the test on a non-zero exit."""
    done = agent.host.run(command)
    assert done.rc == 0, f"{command}: exit {done.rc}: {done.stdout}{done.stderr}"
    return str(done.stdout)


def test_writer_key_only(agent: Agent, agent_converged: Recap) -> None:
    host = agent.host
    key = host.file(WRITER_KEY)
    assert (key.user, key.group, key.mode) == ("root", "root", 0o600)
    assert json.loads(key.content_string)["kind"] == "portal-ops writer key"
    assert key.content_string.strip() == agent.writer_key.read_text().strip()
    # the identity is nowhere the role writes (the controller's copy is in a temp dir)
    found = host.run(
        "grep -rlsF -e %s /etc /opt/portal-ops %s /usr/local/bin", agent.identity_secret, STATE_DIR
    )
    assert found.stdout == "", f"the identity reached the host: {found.stdout}"
    assert "identity" not in host.file(CONFIG).content_string


def test_cron_file_is_what_ops_cron_writes(agent: Agent, agent_converged: Recap) -> None:
    host = agent.host
    cron = host.file(CRON_FILE)
    assert (cron.user, cron.group, cron.mode) == ("root", "root", 0o644)
    rendered = json.loads(host.check_output("%s --json cron --role writer", OPS))
    assert cron.content_string == "\n".join(rendered["lines"]) + "\n"
    jobs = [line for line in cron.content_string.splitlines() if line[:1].isdigit()]
    assert len(jobs) == 1
    assert f" root {VENV_OPS} --config {CONFIG} backup run >/dev/null" in jobs[0]


def test_cron_line_runs_the_backup(agent: Agent, agent_converged: Recap) -> None:
    """The line's command part, run as cron hands it to the shell: /bin/sh -c with the cron
    file's variables, HOME and LOGNAME, nothing else from our environment."""
    host = agent.host
    env: dict[str, str] = {}
    command = ""
    for line in host.file(CRON_FILE).content_string.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line[:1].isdigit():
            command = line.split(None, 6)[6]
        else:
            name, _, value = line.partition("=")
            env[name.strip()] = value.strip()
    assert command
    assignments = " ".join(f"{k}={v}" for k, v in env.items())
    done = host.run(f"cd /root && env -i HOME=/root LOGNAME=root {assignments} /bin/sh -c %s",
                    command)  # fmt: skip
    assert done.rc == 0, done.stderr
    assert done.stderr == ""
    status = json.loads(host.file(f"{STATE_DIR}/backup-status.json").content_string)
    entry = next(e for e in status["entries"] if e["source"] == "webroot")
    assert entry["last_run"]["ok"] is True
    assert entry["last_run"]["snapshot"]
    metrics = host.file(f"{TEXTFILE_DIR}/portal_ops_backup.prom").content_string
    assert 'portalops_backup_last_run_success{category="code"' in metrics
    listing = json.loads(host.check_output("%s --json backup list", OPS))
    assert any(s.get("source") == "webroot" for s in listing), listing


def test_cron_runs(agent: Agent, agent_converged: Recap) -> None:
    assert agent.host.service("cron").is_running


def test_systemd_hosts_get_verified_timers(
    agent: Agent, agent_converged: Recap, tmp_path: Path
) -> None:
    """Where systemd runs the host, the role installs the units of `ops systemd --role writer`
    instead of the cron file. Forced here (this machine has no systemd as PID 1): the units go
    into a directory of the test's, nothing is started, and systemd-analyze verifies them as
    installed; the cron converge afterwards puts the cron file back."""
    host = agent.host
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    try:
        agent.run("agent", ops_agent_scheduler="systemd",
                  ops_agent_systemd_dir=str(unit_dir)).assert_ok()  # fmt: skip
        assert not host.file(CRON_FILE).exists  # one scheduler: no job runs twice
        rendered = json.loads(host.check_output("%s --json systemd --role writer", OPS))["units"]
        installed = sorted(unit_dir.iterdir())
        assert [p.name for p in installed] == sorted(u["name"] for u in rendered)
        for unit in rendered:
            assert (unit_dir / unit["name"]).read_text(encoding="utf-8") == unit["text"]
        assert "\nOnCalendar=*-*-* 02:30:00 Asia/Ho_Chi_Minh\n" in (
            unit_dir / "portal-ops-backup.timer"
        ).read_text(encoding="utf-8")
        service = (unit_dir / "portal-ops-backup.service").read_text(encoding="utf-8")
        assert f"\nExecStart={VENV_OPS} --config {CONFIG} --units " in service
        verify = subprocess.run(
            ["systemd-analyze", "verify", *map(str, installed)],
            env=dict(os.environ, SYSTEMD_UNIT_PATH=f"{unit_dir}:", SYSTEMD_LOG_COLOR="0"),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert verify.returncode == 0, verify.stderr
        assert verify.stderr == ""
    finally:
        agent.run("agent").assert_ok()
    assert host.file(CRON_FILE).exists


def test_agent_second_converge_changes_nothing(agent: Agent, agent_converged: Recap) -> None:
    agent.run("agent").assert_idempotent()


def test_agent_check_mode_reports_no_change(agent: Agent, agent_converged: Recap) -> None:
    recap = agent.runner.run("agent", extra_vars=agent.extra_vars, check=True, diff=True)
    recap.assert_idempotent()


def test_identity_given_as_writer_key_is_refused(agent: Agent, agent_converged: Recap) -> None:
    identity_text = agent.identity.read_text(encoding="ascii")
    recap = agent.run("agent", ops_agent_writer_key=identity_text, ops_agent_writer_key_file="")
    assert recap.returncode != 0
    assert recap[TEST_HOST].failed == 1
    assert "holds an age identity (AGE-SECRET-KEY-...)" in recap.stdout
    assert agent.identity_secret not in recap.stdout
    key = agent.host.file(WRITER_KEY).content_string
    assert json.loads(key)["kind"] == "portal-ops writer key"


# -- monitoring -----------------------------------------------------------------------------


def _get(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _body(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
        return str(response.read().decode("utf-8"))


def _wait_ok(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            if _get(url) == 200:
                return
        except OSError as exc:
            last = exc
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer 200 within {timeout:.0f} s ({last})")


@pytest.fixture(scope="module")
def monitoring_converged(agent: Agent, agent_converged: Recap) -> Recap:
    host = agent.host
    for port, service in PORTS.items():
        if host.socket(f"tcp://127.0.0.1:{port}").is_listening and not (
            host.file(f"/etc/init.d/{service}").exists and host.service(service).is_running
        ):
            pytest.fail(f"127.0.0.1:{port} is taken by something else than {service}: the "
                        "monitoring converge needs the standard ports")  # fmt: skip
    host.run("rm -f %s/provision-test.prom", TEXTFILE_DIR)
    started = time.monotonic()
    recap = agent.run("monitoring")
    print(f"monitoring: first converge {time.monotonic() - started:.1f} s, "
          f"changed={recap.hosts.get(TEST_HOST)}")  # fmt: skip
    return recap.assert_ok()


def test_services_answer(agent: Agent, monitoring_converged: Recap) -> None:
    for url in (
        "http://127.0.0.1:9090/-/ready",
        "http://127.0.0.1:9093/-/ready",
        "http://127.0.0.1:9100/metrics",
        "http://127.0.0.1:9433/healthz",
        "http://127.0.0.1:9434/healthz",
    ):
        _wait_ok(url)
    for name in ("portal-ops-monitor", "portal-ops-oncall"):
        assert agent.host.service(name).is_running, name
        # not root: the init script starts the server as the service user (--chuid)
        pid = agent.host.file(f"/run/{name}.pid").content_string.strip()
        owner = agent.host.check_output("ps -o user:32= -p %s", pid).strip()
        assert owner == SERVICE_USER, (name, owner)
    config = agent.host.file(CONFIG)
    assert (config.group, config.mode) == (SERVICE_USER, 0o640)  # the services read it


def test_node_exporter_reads_the_textfile_directory(
    agent: Agent, monitoring_converged: Recap
) -> None:
    host = agent.host
    host.run(
        "printf '%%s\\n' 'portalops_provision_test 1' > %s/provision-test.prom.tmp && "
        "mv %s/provision-test.prom.tmp %s/provision-test.prom",
        TEXTFILE_DIR, TEXTFILE_DIR, TEXTFILE_DIR,
    )  # fmt: skip
    try:
        _wait_ok("http://127.0.0.1:9100/metrics")
        metrics = _body("http://127.0.0.1:9100/metrics")
        assert "\nportalops_provision_test 1\n" in metrics
        assert "node_textfile_scrape_error 0" in metrics
    finally:
        host.run("rm -f %s/provision-test.prom", TEXTFILE_DIR)


def test_prometheus_loaded_the_rules(agent: Agent, monitoring_converged: Recap) -> None:
    _wait_ok("http://127.0.0.1:9090/-/ready")
    rules = json.loads(_body("http://127.0.0.1:9090/api/v1/rules"))["data"]["groups"]
    names = {rule["name"] for group in rules for rule in group["rules"]}
    assert {"PortalDown", "BackupMissing", "ExporterAbsent"} <= names


def test_alertmanager_pages_through_ops_oncall(agent: Agent, monitoring_converged: Recap) -> None:
    """Alertmanager runs the config `ops oncall alertmanager-config` rendered, and can read the
    bearer token that `ops oncall serve` accepts."""
    host = agent.host
    _wait_ok("http://127.0.0.1:9093/-/ready")
    status = json.loads(_body("http://127.0.0.1:9093/api/v2/status"))
    assert "http://127.0.0.1:9434/alertmanager" in status["config"]["original"]
    # each reads its own 0600 copy: the service's, and Alertmanager's (named in its config)
    token_file = f"{STATE_DIR}/oncall/webhook.token"
    am_token_file = "/etc/prometheus/portal-ops-webhook.token"
    assert f"credentials_file: {am_token_file}" in status["config"]["original"]
    token = host.run("runuser -u prometheus -- cat %s", am_token_file)
    assert token.rc == 0, token.stderr
    mine = host.file(token_file)
    assert (mine.user, mine.mode) == (SERVICE_USER, 0o600)
    assert host.file(am_token_file).mode == 0o600
    assert token.stdout == mine.content_string
    body = json.dumps({"version": "4", "status": "firing", "alerts": []}).encode()
    url = "http://127.0.0.1:9434/alertmanager"
    assert _get(url, body, {"Content-Type": "application/json"}) == 401
    authorized = {"Content-Type": "application/json",
                  "Authorization": f"Bearer {token.stdout.strip()}"}  # fmt: skip
    # past the token check: an empty notification is refused as a bad payload, not a stranger
    assert _get(url, body, authorized) == 400


def test_prometheus_scrapes_the_paging_chain(agent: Agent, monitoring_converged: Recap) -> None:
    """Alertmanager and the on-call service are scrape targets, and the on-call one is up:
    Prometheus's copy of the /metrics token (the role's) is the one the service accepts."""
    host = agent.host
    token_file = f"{STATE_DIR}/oncall/metrics.token"
    prom_copy = "/etc/prometheus/portal-ops-metrics.token"
    assert (host.file(token_file).user, host.file(token_file).mode) == (SERVICE_USER, 0o600)
    assert (host.file(prom_copy).user, host.file(prom_copy).mode) == ("prometheus", 0o600)
    assert _get("http://127.0.0.1:9434/metrics") == 401
    deadline = time.monotonic() + 90  # the first scrape: within one 30 s interval of the start
    health: dict[str, str] = {}
    while time.monotonic() < deadline:
        targets = json.loads(_body("http://127.0.0.1:9090/api/v1/targets"))
        health = {
            t["labels"]["job"]: f"{t['health']} {t.get('lastError', '')}".strip()
            for t in targets["data"]["activeTargets"]
        }
        if health.get("oncall") == "up" and health.get("alertmanager") == "up":
            return
        time.sleep(1)
    pytest.fail(f"the paging chain's targets are not up within 90 s: {health}")


def test_grafana_provisioning_files(agent: Agent, monitoring_converged: Recap) -> None:
    host = agent.host
    for kind in ("datasources", "dashboards"):
        assert host.file(f"/etc/grafana/provisioning/{kind}/portal-ops.yml").is_file
    dashboards = sorted(p.name for p in (PROJECT / "config/grafana/dashboards").iterdir())
    for name in dashboards:
        assert host.file(f"/var/lib/grafana/dashboards/portal-ops/{name}").is_file


def test_monitoring_second_converge_changes_nothing(
    agent: Agent, monitoring_converged: Recap
) -> None:
    agent.run("monitoring").assert_idempotent()
    _wait_ok("http://127.0.0.1:9434/healthz")
