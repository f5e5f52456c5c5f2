"""Two hosts, end to end: an agent's backup metrics reach the monitoring host's Prometheus.

``agenthost`` is a second host on this machine (tests/fixtures/second_host.py: a network
namespace at 10.213.0.2 with its own overlay root, processes and sshd); ``monhost`` is this
machine, reached over the loopback sshd fixture, with 10.213.0.1 on its end of the veth pair.
The servers file of the test names both by those addresses, so everything the inventory
derives is real: the file_sd targets, the firewall's monitoring set, node_exporter's listen
address.

1. agent.yml on agenthost (portal-ops, the writer key, node_exporter on 10.213.0.2:9100) and
   the common role's firewall there (no trusted interface): node_exporter answers
   10.213.0.1, the monitoring server, and drops 10.213.0.3, a stranger.
2. ``ops backup run`` on agenthost over SSH.
3. monitoring.yml on monhost: Prometheus with the project's rules and the node job's
   targets written from the inventory (the same list as ``ops inventory prometheus-targets``).
4. Prometheus' HTTP API: agenthost's ``portalops_backup_*`` series, labelled from the
   inventory; BackupMissing evaluated on them and not firing for agenthost.
5. agenthost's node_exporter stopped: HostDown fires for agenthost.

Only the timing differs from production, to fit a test: the Prometheus config is the shipped
one with 5 s scrape and evaluation intervals, and the rules file is the shipped one with
HostDown's ``for: 2m`` shortened to 10 s (every expression and label as shipped).

Run under the converge lock (the monitoring stack uses its standard loopback ports):
``flock /tmp/brief/provision.lock .venv/bin/python -m pytest -q
tests/integration/test_estate_scrape.py``. Teardown stops the services the module started on
this machine, puts back the files that name the veth address or the test rules, and ends the
second host (its processes, mounts and namespace).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.ansible_host import Converge, Recap, converge_context, safety_vars
from tests.fixtures.cli import run_ops
from tests.fixtures.paths import PROJECT
from tests.fixtures.second_host import SecondHost, second_host_context
from tests.fixtures.sshd import SSHServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MON, AGENT = "monhost", "agenthost"
PROMETHEUS = "http://127.0.0.1:9090"
NODE_PORT = 9100
#: Services of the monitoring host this module may start; stopped again unless running before.
SERVICES = (
    "prometheus",
    "prometheus-alertmanager",
    "prometheus-node-exporter",
    "portal-ops-monitor",
    "portal-ops-oncall",
)
#: Files of this machine the module rewrites with test values; restored at teardown.
RESTORED = (
    "/etc/default/prometheus-node-exporter",
    "/etc/prometheus/prometheus.yml",
    "/etc/prometheus/rules/portal-ops.rules.yml",
    "/etc/prometheus/file_sd/portal-ops-nodes.json",
)
SITE = "/srv/estate-test/site"
REPO = "/var/backups/estate-test-repo"
HOST_DOWN_FOR = "10s"
INTERVAL = "5s"


@dataclass
class EstateConverge(Converge):
    """A Converge over two hosts: each with its own connection and role variables."""

    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def overrides(self) -> Path:
        path = self.workdir / "overrides.yml"
        path.write_text(json.dumps({"all": {"hosts": self.hosts}}, indent=2), encoding="utf-8")
        return path


def _connection(ssh: SSHServer) -> dict[str, Any]:
    return {
        "ansible_host": ssh.host,
        "ansible_port": ssh.port,
        "ansible_user": ssh.user,
        "ansible_ssh_private_key_file": str(ssh.client_key),
        "ansible_ssh_common_args": (
            f"-o UserKnownHostsFile={ssh.known_hosts} -o GlobalKnownHostsFile=/dev/null "
            "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
        ),
    }


def _servers_file(work: Path, host: SecondHost) -> Path:
    path = work / "servers.yaml"
    path.write_text(
        "servers:\n"
        f"  - name: {MON}\n    address: {host.peer}\n    roles: [monitoring]\n"
        f"  - name: {AGENT}\n    address: {host.address}\n    roles: [web, agent]\n"
        "    portals: [commune]\n",
        encoding="utf-8",
    )
    return path


def _test_prometheus(work: Path) -> tuple[Path, Path]:
    """The shipped prometheus.yml with 5 s intervals, and the shipped rules with HostDown's
    ``for`` shortened (see the module docstring)."""
    shipped = PROJECT / "config" / "prometheus"
    config = yaml.safe_load((shipped / "prometheus.yml").read_text(encoding="utf-8"))
    config["global"].update(scrape_interval=INTERVAL, evaluation_interval=INTERVAL,
                            scrape_timeout="4s")  # fmt: skip
    for job in config["scrape_configs"]:
        job.update(scrape_interval=INTERVAL, scrape_timeout="4s")
    config_path = work / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    rules_dir = work / "rules"
    rules_dir.mkdir()
    text = (shipped / "rules" / "portal-ops.rules.yml").read_text(encoding="utf-8")
    text, count = re.subn(
        r"(- alert: HostDown\n\s+expr: \|\n\s+up\{job=\"node\"\} == 0\n\s+for: )2m",
        rf"\g<1>{HOST_DOWN_FOR}",
        text,
    )
    assert count == 1, "HostDown's shape changed: adjust the test's rewrite of its `for`"
    (rules_dir / "portal-ops.rules.yml").write_text(text, encoding="utf-8")
    return config_path, rules_dir


def _wheelhouse(work: Path) -> Path:
    """The locked files for the second host, downloaded here: its network namespace reaches
    no package index (its pip found only what this machine's local mirror happened to hold,
    and failed when the lock asked for a newer release), as a host without one would need
    (the role's README, "wheelhouse")."""
    wheelhouse = work / "wheelhouse"
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(wheelhouse)]
    lock = PROJECT / "requirements" / "runtime.lock"
    for args in (["--require-hashes", "-r", str(lock)], ["setuptools", "packaging"]):
        done = subprocess.run(
            [*pip, *args], capture_output=True, text=True, timeout=900, check=False
        )
        assert done.returncode == 0, done.stderr[-2000:]
    return wheelhouse


def _host_vars(
    sshd: SSHServer, host: SecondHost, work: Path, writer_key: Path
) -> dict[str, dict[str, Any]]:
    config_path, rules_dir = _test_prometheus(work)
    safety = safety_vars()
    monitoring = _connection(sshd) | safety | {
        "monitoring_prometheus_config_src": str(config_path),
        "monitoring_prometheus_rules_src": str(rules_dir),
        "monitoring_grafana": False,
        "ops_agent_config": {
            "monitor": {"estate": False, "urls": [f"{PROMETHEUS}/-/ready"],
                        "modules": ["http"], "uplink": []},
            "oncall": {
                "people": [{"id": "an", "name": "Nguyễn Văn An",
                            "channels": ["json://127.0.0.1:9/"]}],
                "rotations": {"primary": {"people": ["an"], "every": "week",
                                          "start": "2026-11-30"}},
                "escalation": {"steps": [{"notify": "primary", "wait": "5m"}]},
            },
        },
    }  # fmt: skip
    # the second host trusts no interface: its firewall is the one under test
    agent = _connection(host.ssh) | safety | {
        "common_nftables_trusted_interfaces": [],
        "ops_agent_wheelhouse": str(_wheelhouse(work)),
        "ops_agent_writer_key_file": str(writer_key),
        "ops_agent_config": {
            "backup": {
                "repositories": [{"name": "local", "url": REPO}],
                "sources": [{"name": "webroot", "kind": "files", "category": "code",
                             "paths": [SITE]}],
            },
        },
    }  # fmt: skip
    return {MON: monitoring, AGENT: agent}


# -- this machine's state, put back after ------------------------------------------------------


def _service_running(name: str) -> bool:
    done = subprocess.run(["service", name, "status"], capture_output=True, timeout=30,
                          check=False)  # fmt: skip
    return done.returncode == 0


@dataclass
class Estate:
    runner: EstateConverge
    host: SecondHost
    servers: Path
    units: Path

    def run(self, playbook: str, **kwargs: Any) -> Recap:
        started = time.monotonic()
        recap = self.runner.run(playbook, **kwargs)
        print(f"{playbook} {kwargs}: {time.monotonic() - started:.1f} s, {recap.hosts}")
        return recap.assert_ok()


@pytest.fixture(scope="module")
def estate(sshd_server: SSHServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    work = tmp_path_factory.mktemp("estate")
    identity, writer_key = work / "identity.txt", work / "writer.key"
    made = run_ops("backup", "keygen", "--identity", str(identity), "--writer-key", str(writer_key))
    assert made.code == 0, made.stderr
    running_before = {name for name in SERVICES if _service_running(name)}
    saved = {path: Path(path).read_bytes() if Path(path).is_file() else None
             for path in RESTORED}  # fmt: skip
    with second_host_context(AGENT) as host:
        servers = _servers_file(work, host)
        try:
            with converge_context(sshd_server, servers=servers) as base:
                runner = EstateConverge(
                    sshd=base.sshd,
                    workdir=base.workdir,
                    units=base.units,
                    servers=base.servers,
                    host_vars={},
                    hosts=_host_vars(sshd_server, host, work, writer_key),
                )
                yield Estate(runner, host, base.servers, base.units)
        finally:
            for path, content in saved.items():
                if content is None:
                    Path(path).unlink(missing_ok=True)
                else:
                    Path(path).write_bytes(content)
            for name in reversed(SERVICES):
                if not Path(f"/etc/init.d/{name}").exists():
                    continue
                if name in running_before:
                    subprocess.run(["service", name, "restart"], capture_output=True,
                                   timeout=120, check=False)  # fmt: skip
                else:
                    subprocess.run(["service", name, "stop"], capture_output=True, timeout=120,
                                   check=False)  # fmt: skip


# -- helpers -----------------------------------------------------------------------------------


def _connects(source: str, address: str, port: int, timeout: float = 2.0) -> bool:
    """A TCP connection from ``source`` (an address of this machine) succeeds."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.bind((source, 0))
        try:
            sock.connect((address, port))
        except OSError:
            return False
        return True


def _query(expr: str) -> list[dict[str, Any]]:
    url = f"{PROMETHEUS}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _poll(expr: str, predicate: Any, timeout: float, what: str) -> list[dict[str, Any]]:
    """Query until ``predicate(result)`` holds, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    result: list[dict[str, Any]] = []
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = _query(expr)
            if predicate(result):
                return result
        except OSError as exc:
            last = exc
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting until {what}: {expr} -> {result} "
                f"({last})", pytrace=False)  # fmt: skip


# -- the agent ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent_converged(estate: Estate) -> Estate:
    estate.run("agent")
    estate.run("common", limit=AGENT, ansible_args=("--tags", "firewall"))
    return estate


def test_node_exporter_listens_on_the_agents_address_only(agent_converged: Estate) -> None:
    host = agent_converged.host
    listening = host.check("ss -Hltn")
    assert f"{host.address}:{NODE_PORT} " in listening
    assert f"0.0.0.0:{NODE_PORT} " not in listening
    assert f"*:{NODE_PORT} " not in listening
    flags = host.check("cat /etc/default/prometheus-node-exporter")
    assert f"--web.listen-address={host.address}:{NODE_PORT}" in flags
    assert "--collector.textfile.directory=/var/lib/prometheus/node-exporter" in flags


def test_only_the_monitoring_server_reaches_node_exporter(agent_converged: Estate) -> None:
    host = agent_converged.host
    ruleset = host.check("nft list table inet portal_ops_filter")
    assert f"elements = {{ {host.peer} }}" in ruleset
    assert _connects(host.peer, host.address, NODE_PORT)
    assert not _connects(host.stranger, host.address, NODE_PORT)
    # SSH stays open to all (the firewall lists it without sources)
    assert _connects(host.stranger, host.address, 22)


@pytest.fixture(scope="module")
def backed_up(agent_converged: Estate) -> Estate:
    host = agent_converged.host
    host.check(f"mkdir -p {SITE} && echo '<h1>Xã Đạo Trù</h1>' > {SITE}/index.html")
    done = host.run("/usr/local/bin/ops backup run", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    metrics = host.check("cat /var/lib/prometheus/node-exporter/portal_ops_backup.prom")
    assert 'portalops_backup_last_run_success{category="code"' in metrics
    return agent_converged


# -- the monitoring host -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def monitoring_converged(backed_up: Estate) -> Estate:
    backed_up.run("monitoring")
    return backed_up


def test_the_node_targets_are_the_inventorys(monitoring_converged: Estate) -> None:
    estate = monitoring_converged
    generated = run_ops("--units", str(estate.units), "inventory", "prometheus-targets",
                        "--servers", str(estate.servers))  # fmt: skip
    assert generated.code == 0, generated.stderr
    installed = json.loads(Path(RESTORED[3]).read_text(encoding="utf-8"))
    assert installed == json.loads(generated.stdout)
    assert installed[1] == {
        "targets": [f"{estate.host.address}:{NODE_PORT}"],
        "labels": {"host": AGENT, "roles": ",agent,web,", "portal_kinds": ",commune,"},
    }


def test_prometheus_scrapes_the_agents_backup_metrics(monitoring_converged: Estate) -> None:
    started = time.monotonic()
    found = _poll(
        f'portalops_backup_last_run_success{{job="node",host="{AGENT}"}}',
        lambda r: len(r) == 1,
        timeout=90,
        what="Prometheus has the agent's backup metrics",
    )
    print(f"backup metrics scraped after {time.monotonic() - started:.1f} s")
    labels = found[0]["metric"]
    assert found[0]["value"][1] == "1"
    assert labels["instance"] == f"{monitoring_converged.host.address}:{NODE_PORT}"
    assert labels["roles"] == ",agent,web,"
    assert labels["source"] == "webroot"
    # the host's own name, as the backup job wrote it (its UTS namespace's hostname)
    assert labels["exported_host"] == AGENT
    # a role is selected by one regex
    web = _query('up{job="node", roles=~".*,web,.*"} == 1')
    assert [r["metric"]["host"] for r in web] == [AGENT]
    monitors = _query('up{job="node", roles=~".*,monitoring,.*"} == 1')
    assert [r["metric"]["host"] for r in monitors] == [MON]
    # which server serves each portal: the info metric from the monitoring host's textfile
    served = _query(f'portalops_portal_server_info{{server="{AGENT}"}}')
    assert {r["metric"]["domain"] for r in served} == {
        "daotru.tamdao.vinhphuc.gov.vn", "hopchau.tamdao.vinhphuc.gov.vn",
    }  # fmt: skip


def test_backup_missing_is_evaluated_and_silent_for_the_agent(
    monitoring_converged: Estate,
) -> None:
    _poll(
        f'portalops_backup_last_success_timestamp_seconds{{host="{AGENT}"}}',
        lambda r: len(r) == 1,
        timeout=90,
        what="Prometheus has the agent's last success",
    )
    # evaluated after the series arrived: two evaluation intervals later
    seen = time.time()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{PROMETHEUS}/api/v1/rules?type=alert", timeout=5) as r:  # noqa: S310
            groups = json.loads(r.read())["data"]["groups"]
        rules = [rule for g in groups for rule in g["rules"] if rule["name"] == "BackupMissing"]
        assert len(rules) == 3
        evaluated = [rule["lastEvaluation"] for rule in rules]
        if all(_rfc3339(t) > seen + 5 for t in evaluated):
            break
        time.sleep(1)
    else:
        pytest.fail("BackupMissing was not evaluated after the metrics arrived")
    assert all(rule["health"] == "ok" for rule in rules), rules
    alerts = _query('ALERTS{alertname="BackupMissing"}')
    assert [a for a in alerts if a["metric"].get("host") in (AGENT, None)] == [], alerts
    # what it judges: the agent's backup succeeded moments ago
    age = _query(f'time() - portalops_backup_last_success_timestamp_seconds{{host="{AGENT}"}}')
    assert 0 <= float(age[0]["value"][1]) < 600


def _rfc3339(stamp: str) -> float:
    """Prometheus' lastEvaluation (RFC 3339, nanoseconds: Python 3.11 drops the excess)."""
    return datetime.fromisoformat(stamp).timestamp()


def test_host_down_fires_when_the_agents_node_exporter_stops(
    monitoring_converged: Estate,
) -> None:
    host = monitoring_converged.host
    _poll(f'up{{job="node",host="{AGENT}"}} == 1', lambda r: len(r) == 1, timeout=60,
          what="the agent is up")  # fmt: skip
    assert _query(f'ALERTS{{alertname="HostDown",host="{AGENT}"}}') == []
    host.check("service prometheus-node-exporter stop")
    started = time.monotonic()
    firing = _poll(
        f'ALERTS{{alertname="HostDown",host="{AGENT}",alertstate="firing"}}',
        lambda r: len(r) == 1,
        timeout=90,
        what="HostDown fires for the agent",
    )
    print(f"HostDown firing {time.monotonic() - started:.1f} s after the stop")
    labels = firing[0]["metric"]
    assert labels["severity"] == "critical"
    assert labels["instance"] == f"{host.address}:{NODE_PORT}"
    # the monitoring host itself stays up
    assert _query(f'ALERTS{{alertname="HostDown",host="{MON}"}}') == []
