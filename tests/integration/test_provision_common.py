"""The ``common`` role converged on this machine over SSH, verified with testinfra, re-run for
idempotence (molecule's delegated driver: converge, verify, idempotence).

The test host is the machine the tests run on (no Docker, no systemd here), so the module
leaves it as it found it where that matters: services the converge started are stopped, the
firewall table is deleted, kernel parameters and audit rules are put back. The files written
under /etc stay (they are inert without their services).

Two things differ from a production server, both on purpose (tests/fixtures/ansible_host.py):
every non-loopback interface is trusted by the firewall so a default-deny input chain cannot
cut the shared machine off (the deny itself is verified on the rendered ruleset), and the
system sshd is not the one Ansible talks to (the fixture's is), so it is not started.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fixtures.ansible_host import Converge, Recap

pytestmark = pytest.mark.integration

TABLE = "portal_ops_filter"
SERVICES = ("chrony", "fail2ban", "auditd", "ssh")
SYSCTLS = (
    "net.ipv4.conf.all.accept_redirects",
    "net.ipv4.conf.default.accept_redirects",
    "net.ipv4.conf.all.secure_redirects",
    "net.ipv4.conf.default.secure_redirects",
    "net.ipv4.conf.all.send_redirects",
    "net.ipv4.conf.default.send_redirects",
    "net.ipv4.conf.all.accept_source_route",
    "net.ipv4.conf.default.accept_source_route",
    "net.ipv4.conf.all.rp_filter",
    "net.ipv4.conf.default.rp_filter",
    "net.ipv4.conf.all.log_martians",
    "net.ipv4.conf.default.log_martians",
    "net.ipv4.icmp_echo_ignore_broadcasts",
    "net.ipv4.icmp_ignore_bogus_error_responses",
    "net.ipv4.tcp_syncookies",
    "net.ipv6.conf.all.accept_redirects",
    "net.ipv6.conf.default.accept_redirects",
    "net.ipv6.conf.all.accept_source_route",
    "net.ipv6.conf.default.accept_source_route",
    "kernel.kptr_restrict",
    "kernel.dmesg_restrict",
    "kernel.randomize_va_space",
    "fs.protected_hardlinks",
    "fs.protected_symlinks",
    "fs.suid_dumpable",
)


@dataclass
class Converged:
    runner: Converge
    first: Recap
    first_seconds: float
    tables_before: set[str]

    @property
    def host(self) -> Any:
        return self.runner.host


def _nft_tables(host: Any) -> set[str]:
    out = host.check_output("nft list tables")
    return {line.strip() for line in out.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def converged(converge: Converge) -> Iterator[Converged]:
    host = converge.host
    running_before = {name for name in SERVICES if host.service(name).is_running}
    sysctl_before = {key: host.sysctl(key) for key in SYSCTLS}
    audit_rules_before = host.run("auditctl -l").stdout.strip()
    tables_before = _nft_tables(host) - {f"table inet {TABLE}"}
    started = time.monotonic()
    first = converge.run("common")
    seconds = time.monotonic() - started
    try:
        yield Converged(converge, first, seconds, tables_before)
    finally:
        for name in SERVICES:
            if name not in running_before:
                host.run(f"service {name} stop")
        host.run(f"nft delete table inet {TABLE}")
        for key, value in sysctl_before.items():
            host.run(f"sysctl -q -w {key}={value}")
        if audit_rules_before == "No rules":
            host.run("auditctl -D")


def test_first_converge_succeeds(converged: Converged) -> None:
    converged.first.assert_ok()
    print(
        f"first converge: {converged.first_seconds:.1f} s, "
        f"changed={converged.first['testhost'].changed}"
    )


def test_sshd_effective_configuration_is_hardened(converged: Converged) -> None:
    """The system sshd's effective configuration, as ``sshd -T`` computes it from
    /etc/ssh/sshd_config with its Include of our drop-in. Not the fixture's running sshd:
    that one reads its own config file (tests/fixtures/sshd.py) and only carries Ansible."""
    out = converged.host.check_output("/usr/sbin/sshd -T -f /etc/ssh/sshd_config")
    effective: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        effective.setdefault(key, value)
    assert effective["permitrootlogin"] == "without-password"  # = prohibit-password
    assert effective["passwordauthentication"] == "no"
    assert effective["kbdinteractiveauthentication"] == "no"
    assert effective["pubkeyauthentication"] == "yes"
    assert effective["authenticationmethods"] == "publickey"
    assert effective["permitemptypasswords"] == "no"
    assert effective["maxauthtries"] == "3"
    assert effective["logingracetime"] == "30"
    assert effective["maxstartups"] == "10:30:60"
    assert effective["x11forwarding"] == "no"
    assert effective["allowtcpforwarding"] == "no"
    assert effective["port"] == "22"
    assert not [c for c in effective["ciphers"].split(",") if c.endswith("-cbc")]
    assert "hmac-sha1" not in effective["macs"].split(",")
    dropin = converged.host.file("/etc/ssh/sshd_config.d/00-portal-ops.conf")
    assert dropin.mode == 0o600


def test_nftables_table_default_deny_with_the_needed_ports(converged: Converged) -> None:
    host = converged.host
    listed = json.loads(host.check_output(f"nft -j list table inet {TABLE}"))["nftables"]
    chains = [item["chain"] for item in listed if "chain" in item]
    assert [(c["name"], c["hook"], c["policy"]) for c in chains] == [("input", "input", "drop")]
    text = host.check_output(f"nft list table inet {TABLE}")
    for rule in (
        'iif "lo" accept',
        "ct state established,related accept",
        "tcp dport 22 accept",
        "tcp dport { 80, 443 } accept",  # testhost is a web server
        "udp dport 53 accept",  # and a dns server
        "tcp dport 53 accept",
        "ip saddr @monitoring_v4 tcp dport { 9090, 9093, 9100, 9433, 9434 } accept",
        "ip6 saddr @monitoring_v6 tcp dport { 9090, 9093, 9100, 9433, 9434 } accept",
    ):
        assert rule in text, f"{rule!r} missing from\n{text}"
    sets = {item["set"]["name"]: item["set"] for item in listed if "set" in item}
    assert sets["monitoring_v4"]["elem"] == ["127.0.0.1"]
    assert sets["monitoring_v6"]["elem"] == ["::1"]
    # nothing else was flushed: every table that was there before is there still
    assert converged.tables_before <= _nft_tables(host)
    # the loopback SSH that carries Ansible still works, and IPv6 is still on
    assert host.run("true").rc == 0
    assert host.sysctl("net.ipv6.conf.all.disable_ipv6") == 0
    boot = host.file("/etc/nftables.conf")
    assert 'include "/etc/nftables.d/*.nft"' in boot.content_string


def test_services_run_with_the_roles_configuration(converged: Converged) -> None:
    host = converged.host
    assert host.service("chrony").is_running
    assert host.process.filter(comm="chronyd")
    assert host.service("fail2ban").is_running
    jails = host.check_output("fail2ban-client status")
    for jail in ("sshd", "nginx-http-auth", "nginx-botsearch"):
        assert jail in jails
    assert "127.0.0.0/8" in host.check_output("fail2ban-client get sshd ignoreip")
    assert host.service("auditd").is_running
    rules = host.check_output("auditctl -l")
    assert "-w /etc/ssh/sshd_config -p wa -k sshd" in rules
    assert "-k identity" in rules


def test_unattended_security_upgrades_configured(converged: Converged) -> None:
    dump = converged.host.check_output("apt-config dump")
    assert 'APT::Periodic::Unattended-Upgrade "1";' in dump
    assert 'APT::Periodic::Update-Package-Lists "1";' in dump
    origins = [line for line in dump.splitlines() if line.startswith("Unattended-Upgrade::Origins")]
    assert origins, dump
    assert all("Debian-Security" in line for line in origins[1:]), origins


def test_kernel_parameters_and_log_retention(converged: Converged) -> None:
    host = converged.host
    assert host.sysctl("net.ipv4.conf.all.accept_redirects") == 0
    assert host.sysctl("net.ipv4.tcp_syncookies") == 1
    assert host.sysctl("kernel.kptr_restrict") == 2
    assert host.sysctl("fs.protected_symlinks") == 1
    assert host.file("/etc/sysctl.d/90-portal-ops.conf").contains("^kernel.dmesg_restrict=1$")
    # 31 days by default: weekly rotation keeping 5 weeks
    assert host.file("/etc/logrotate.conf").contains("^rotate 5$")
    assert host.file("/etc/logrotate.d/fail2ban").contains("rotate 31")
    assert host.run("logrotate --debug /etc/logrotate.conf").rc == 0


def test_second_converge_changes_nothing(converged: Converged) -> None:
    started = time.monotonic()
    converged.runner.run("common").assert_idempotent()
    print(f"second converge: {time.monotonic() - started:.1f} s, changed=0")


def test_check_mode_at_security_level_3_would_keep_logs_three_months(
    converged: Converged,
) -> None:
    recap = converged.runner.run(
        "common", check=True, diff=True, extra_vars={"portal_security_level": 3}
    ).assert_ok()
    assert "+rotate 14" in recap.stdout  # 93 days: 14 weeks
    assert recap.changed_tasks() == [
        "common : Rotate logs weekly and keep them for the retention period",
        "common : Keep fail2ban's log for the retention period too",
    ]
    # check mode changed nothing for real
    assert converged.host.file("/etc/logrotate.conf").contains("^rotate 5$")


_LISTEN = """
import socket, sys, time
socks = []
for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    for port in map(int, sys.argv[1:]):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, port))
        s.listen(16)
        socks.append(s)
print("listening", flush=True)
time.sleep(600)
"""

_PROBE = """
import json, socket, sys
out = {}
for spec in sys.argv[1:]:
    src, dst, port = spec.rsplit(",", 2)
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(1.0)
    s.bind((src, 0))
    try:
        s.connect((dst, int(port)))
        out[spec] = "open"
    except OSError as exc:
        out[spec] = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
    finally:
        s.close()
print(json.dumps(out))
"""


@pytest.fixture
def netns_pair() -> Iterator[tuple[str, str]]:
    """Two throwaway network namespaces joined by a veth pair (198.18.0.0/24, fd99::/64),
    so the converged ruleset can drop real packets without touching this machine's own
    interfaces or routes."""
    server, client = f"pops-fw-s{os.getpid()}", f"pops-fw-c{os.getpid()}"

    def ip(*args: str) -> None:
        # 'ip -n' and 'ip netns exec' make / a slave mount first: in a chroot whose / is not a
        # mount point that fails ("mount --make-rslave /" failed: Invalid argument, exit 255);
        # scripts/check-fresh-root bind-mounts the root on itself as a booted machine has it.
        done = subprocess.run(
            ["ip", *args], check=False, capture_output=True, text=True, timeout=30
        )
        if done.returncode != 0:
            pytest.fail(
                f"ip {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}",
                pytrace=False,
            )

    ip("netns", "add", server)
    try:
        ip("netns", "add", client)
        ip("link", "add", "vfw-s", "netns", server, "type", "veth", "peer", "name", "vfw-c",
           "netns", client)  # fmt: skip
        for ns, dev, addrs in (
            (server, "vfw-s", ["198.18.0.1/24", "fd99::1/64"]),
            (client, "vfw-c", ["198.18.0.2/24", "198.18.0.3/24", "fd99::2/64"]),
        ):
            for addr in addrs:
                ip("-n", ns, "addr", "add", addr, "dev", dev, *(["nodad"] if ":" in addr else []))
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield server, client
    finally:
        for ns in (client, server):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, timeout=30)


def test_the_converged_ruleset_drops_what_it_does_not_list(
    converged: Converged, netns_pair: tuple[str, str]
) -> None:
    """The ruleset the role wrote, loaded in a namespace of its own where no interface is
    trusted: SSH, web and DNS reach the server from anywhere; the exporter ports only from a
    monitoring address; anything else (PostgreSQL here) is dropped, IPv4 and IPv6 alike."""
    server, client = netns_pair
    rules = converged.host.file("/etc/nftables.d/portal_ops_filter.nft").content_string
    subprocess.run(
        ["ip", "netns", "exec", server, "nft", "-f", "-"],
        input=rules, text=True, check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    # 198.18.0.3 plays the monitoring server
    subprocess.run(
        ["ip", "netns", "exec", server, "nft", "add", "element", "inet", TABLE,
         "monitoring_v4", "{ 198.18.0.3 }"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    ports = ["22", "80", "443", "53", "5432", "9100"]
    listener = subprocess.Popen(
        ["ip", "netns", "exec", server, "/usr/bin/python3", "-c", _LISTEN, *ports],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "listening"
        specs = [f"198.18.0.2,198.18.0.1,{p}" for p in ports]
        specs += ["198.18.0.3,198.18.0.1,9100", "198.18.0.3,198.18.0.1,5432"]
        specs += ["fd99::2,fd99::1,443", "fd99::2,fd99::1,9100", "fd99::2,fd99::1,5432"]
        probe = subprocess.run(
            ["ip", "netns", "exec", client, "/usr/bin/python3", "-c", _PROBE, *specs],
            capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        seen = json.loads(probe.stdout)
    finally:
        listener.kill()
        listener.wait(timeout=10)
    assert seen == {
        "198.18.0.2,198.18.0.1,22": "open",
        "198.18.0.2,198.18.0.1,80": "open",
        "198.18.0.2,198.18.0.1,443": "open",
        "198.18.0.2,198.18.0.1,53": "open",
        "198.18.0.2,198.18.0.1,5432": "timeout",
        "198.18.0.2,198.18.0.1,9100": "timeout",
        "198.18.0.3,198.18.0.1,9100": "open",
        "198.18.0.3,198.18.0.1,5432": "timeout",
        "fd99::2,fd99::1,443": "open",
        "fd99::2,fd99::1,9100": "timeout",
        "fd99::2,fd99::1,5432": "timeout",
    }
