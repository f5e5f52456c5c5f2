"""web.yml + tls.yml converge this machine's nginx, with certificates from a real ACME server.

Real components throughout (docs/testing.md): the system nginx (nginx-light, Debian's init
script), certbot, pebble + pebble-challtestsrv as the ACME CA (HTTP-01 validated by fetching
the token from the converged nginx on 127.0.0.1:80), Ansible over the sshd fixture, and the
project's own prober (``ops monitor check``) as the HTTPS client, pinned to loopback by its
``monitor.resolve`` setting. The host's resolver is never touched.

The converge leaves nginx's portal configuration on the machine (as every provisioning test
does); the fixtures stop nginx and pebble and delete the certbot lineages and account the
test made, so the next run starts from "no certificate" again.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from portalops.inventory.model import load_estate
from tests.fixtures.ansible_host import TEST_HOST, Converge, Recap
from tests.fixtures.cli import run_ops
from tests.fixtures.pebble import PebbleACME, pebble_context
from tests.fixtures.pki import ThrowawayPKI
from tests.fixtures.procs import LOOPBACK, require_binary, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CERTBOT_DIR = Path("/etc/letsencrypt")
TLS_DIR = Path("/etc/ssl/portal-ops")
SITES_DIR = Path("/etc/nginx/portal-ops/sites")
MAINTENANCE_DIR = Path("/var/www/maintenance")
#: The renewal cron file earlier versions of the role added; Debian's job renews now.
OLD_CRON_FILE = Path("/etc/cron.d/portal-ops-certbot")
#: Debian's certbot package: certbot.timer under systemd, this cron file without (as here).
DEBIAN_CRON_FILE = Path("/etc/cron.d/certbot")
DEPLOY_HOOK = CERTBOT_DIR / "renewal-hooks/deploy/portal-ops-reload-nginx"

#: The commune the last test adds to the units file (under Huyện Tam Đảo).
NEW_COMMUNE = "Xã Tam Quan"
NEW_DOMAIN = "tamquan.tamdao.vinhphuc.gov.vn"
#: Handlers a new portal legitimately sets off: they reload nginx, they change no file.
OBTAIN = "tls : Obtain a certificate for each portal that has none or an outdated one"
RELOAD_HANDLERS = {"portal_web : Reload nginx", "tls : Reload nginx for new certificates"}


# -- fixtures --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estate:
    """The converged test estate: every name and where each one must end up."""

    names: dict[str, str]
    """Every served name (primary, alias, legacy) -> the primary domain of its portal."""
    legacy: dict[str, str]
    """Legacy name -> the domain it must redirect to."""

    @classmethod
    def load(cls, units: Path) -> Estate:
        estate = load_estate(units)
        names = {name: p.domain for p in estate.portals for name in p.all_domains}
        return cls(names=names, legacy=dict(estate.redirects))

    @property
    def primaries(self) -> list[str]:
        return sorted(set(self.names.values()))


@pytest.fixture(scope="module")
def acme() -> Iterator[PebbleACME]:
    """Pebble for this module; afterwards the certbot state it left in /etc/letsencrypt goes."""
    with pebble_context() as server:
        try:
            yield server
        finally:
            _forget_pebble(server)


def _forget_pebble(server: PebbleACME) -> None:
    """Delete the lineages issued by this pebble and its account: they verify nowhere."""
    host_port = server.directory_url.split("/")[2]
    renewal = CERTBOT_DIR / "renewal"
    for conf in sorted(renewal.glob("*.conf")) if renewal.is_dir() else []:
        if f"server = {server.directory_url}" in conf.read_text(encoding="utf-8"):
            subprocess.run(
                ["certbot", "delete", "--non-interactive", "--cert-name", conf.stem],
                capture_output=True,
                check=False,
                timeout=60,
            )
    shutil.rmtree(CERTBOT_DIR / "accounts" / host_port, ignore_errors=True)


@pytest.fixture(scope="module")
def web(converge: Converge, acme: PebbleACME) -> Iterator[Converge]:
    """web.yml then tls.yml converged once; the system nginx is stopped afterwards."""
    require_binary("curl", "curl")
    try:
        first_web = converge.run("web").assert_ok()
        first_tls = converge.run("tls", extra_vars=acme_vars(acme)).assert_ok()
        # the first converge really did the work (nothing left over from an earlier run)
        assert OBTAIN in first_tls.changed_tasks(), first_tls.tail()
        assert first_web[TEST_HOST].failed == 0
        yield converge
    finally:
        subprocess.run(["service", "nginx", "stop"], capture_output=True, check=False, timeout=60)


def acme_vars(acme: PebbleACME) -> dict[str, Any]:
    """The tls role pointed at pebble: its directory, and the CA of pebble's own HTTPS."""
    return {
        "tls_acme_directory": acme.directory_url,
        "tls_acme_ca_bundle": str(acme.api_ca_file),
        "tls_acme_email": "hostmaster@vinhphuc.gov.vn",
    }


# -- helpers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    """Lower-cased names; the last value of a repeated header."""
    body: str


def fetch(url: str, ca_file: Path) -> Answer:
    """One request with curl, no redirect followed, every name pinned to 127.0.0.1."""
    host = url.split("/")[2]
    argv = [
        "curl", "--silent", "--show-error", "--max-time", "10", "--http1.1",
        "--cacert", str(ca_file),
        "--resolve", f"{host}:80:{LOOPBACK}", "--resolve", f"{host}:443:{LOOPBACK}",
        "--dump-header", "-", url,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, f"curl {url}: {done.stderr.strip()}"
    # text mode has turned the CRLFs into plain newlines
    head, _, body = done.stdout.partition("\n\n")
    status_line, *lines = head.splitlines()
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, body)


def peer_names(name: str, ca_file: Path) -> set[str]:
    """The DNS names of the certificate 127.0.0.1:443 presents for ``name``, verified."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection((LOOPBACK, 443), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=name) as tls,
    ):
        cert = tls.getpeercert()
    assert cert is not None
    sans: tuple[tuple[str, str], ...] = cert.get("subjectAltName", ())  # type: ignore[assignment]
    return {value for kind, value in sans if kind == "DNS"}


def monitor_check(workdir: Path, units: Path, acme: PebbleACME, names: list[str]) -> Any:
    """``ops monitor check --json`` over the whole estate, resolution pinned to loopback."""
    config = workdir / "ops-monitor.yaml"
    pins = [
        f"{name}:{port}:{address}"
        for name in names
        for port in (80, 443)
        for address in (LOOPBACK, "[::1]")
    ]
    config.write_text(
        json.dumps(
            {
                "state_dir": str(workdir / "ops-state"),
                "monitor": {"ca_file": str(acme.issuer_ca_file), "resolve": pins},
            }
        ),
        encoding="utf-8",
    )
    done = run_ops("--units", str(units), "--json", "monitor", "check", config=config)
    assert done.code in (0, 1), f"ops monitor check: {done.stderr[-2000:]}"
    return json.loads(done.stdout)


_TASK = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(?P<name>.*)\]")
_CHANGED = re.compile(r"^changed: \[[^\]]+\](?: => \(item=(?P<item>.*)\))?")


def changed_items(recap: Recap) -> list[tuple[str, str | None]]:
    """(task, item label) of every change the run reported; item None for a plain task."""
    out: list[tuple[str, str | None]] = []
    task = "?"
    for line in recap.stdout.splitlines():
        if found := _TASK.match(line):
            task = found["name"]
        elif found := _CHANGED.match(line):
            out.append((task, found["item"]))
    return out


def _add_commune(units: Path, district: str, commune: str) -> None:
    """Add ``- name: <commune>`` to the district's communes, as an operator would by hand."""
    text = units.read_text(encoding="utf-8")
    anchor = f"  - name: {district}\n    communes:\n"
    assert anchor in text, f"{district} not found in {units}"
    units.write_text(text.replace(anchor, f"{anchor}      - name: {commune}\n"), "utf-8")


# -- tests -----------------------------------------------------------------------------------


def test_every_portal_name_answers_https_graded_a(web: Converge, acme: PebbleACME) -> None:
    estate = Estate.load(web.units)
    results = monitor_check(web.workdir, web.units, acme, sorted(estate.names))
    by_domain = {r["domain"]: r for r in results}
    assert sorted(by_domain) == sorted(estate.names)
    for name, result in by_domain.items():
        problems = [f for f in result["findings"] if f["severity"] != "info"]
        assert result["success"], (name, result["findings"])
        assert result["grade"] in ("A+", "A"), (name, result["grade"], result["findings"])
        assert not [f for f in result["findings"] if f["code"].startswith("tls.")], name
        assert not problems, (name, problems)
        assert result["tls_version"] in ("TLSv1.2", "TLSv1.3")
        # IPv6 too: nginx listens on [::]:443 and the certificate verifies there
        assert result["ipv6_reachable"] is True, (name, result["addresses"])
        if name in estate.legacy:
            assert result["final_url"] == f"https://{estate.legacy[name]}/", result
        else:
            assert result["final_url"] == f"https://{name}/", result


def test_certificates_come_from_pebble_and_name_the_whole_portal(
    web: Converge, acme: PebbleACME
) -> None:
    estate = Estate.load(web.units)
    for name, primary in estate.names.items():
        portal_names = {n for n, p in estate.names.items() if p == primary}
        # verified against pebble's issuing root alone: nginx sends the intermediate
        assert peer_names(name, acme.issuer_ca_file) == portal_names
    for primary in estate.primaries:
        for file in ("fullchain.pem", "privkey.pem"):
            path = TLS_DIR / primary / file
            assert web.host.file(str(path)).is_symlink
            target = web.host.check_output("readlink %s", str(path))
            assert target == str(CERTBOT_DIR / "live" / primary / file)


def test_http_redirects_to_https_on_the_same_name(web: Converge, acme: PebbleACME) -> None:
    estate = Estate.load(web.units)
    for name in estate.names:
        answer = fetch(f"http://{name}/some/page?x=1", acme.issuer_ca_file)
        assert answer.status == 301, name
        assert answer.headers["location"] == f"https://{name}/some/page?x=1"


def test_legacy_names_redirect_to_their_new_name(web: Converge, acme: PebbleACME) -> None:
    estate = Estate.load(web.units)
    assert estate.legacy, "the test estate must have a legacy name"
    for old, new in estate.legacy.items():
        answer = fetch(f"https://{old}/tin-tuc/123?p=2", acme.issuer_ca_file)
        assert answer.status == 301
        assert answer.headers["location"] == f"https://{new}/tin-tuc/123?p=2"
        assert answer.headers["strict-transport-security"].startswith("max-age=")


def test_security_headers_and_no_server_version(web: Converge, acme: PebbleACME) -> None:
    answer = fetch("https://soyte.vinhphuc.gov.vn/", acme.issuer_ca_file)
    assert answer.status == 200
    assert answer.headers["server"] == "nginx"
    assert int(answer.headers["strict-transport-security"].split("=")[1]) >= 15_552_000
    csp = answer.headers["content-security-policy"]
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert "charset=utf-8" in answer.headers["content-type"]
    missing = fetch("https://soyte.vinhphuc.gov.vn/no-such-page", acme.issuer_ca_file)
    assert missing.status == 404
    assert missing.headers["server"] == "nginx"
    assert not re.search(r"nginx/\d", missing.body)
    assert missing.headers["x-frame-options"] == "DENY"  # error pages carry the headers too
    assert fetch("https://soyte.vinhphuc.gov.vn/.git/config", acme.issuer_ca_file).status == 404


def test_tls_configuration_is_mozilla_intermediate(web: Converge) -> None:
    conf = web.host.file("/etc/nginx/nginx.conf")
    assert conf.contains("^    server_tokens off;")
    assert conf.contains("^    ssl_protocols TLSv1.2 TLSv1.3;")
    assert conf.contains("^    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:")
    # what the prober makes of it (legacy protocols, suites outside the profile) is checked
    # by test_every_portal_name_answers_https_graded_a: no tls.* finding


def test_per_portal_webroot_logs_and_vhost(web: Converge) -> None:
    host = web.host
    for primary in Estate.load(web.units).primaries:
        assert host.file(f"/var/www/portals/{primary}/index.html").is_file
        assert host.file(str(SITES_DIR / f"{primary}.conf")).contains(f"server_name {primary}")
        assert host.file(f"/var/log/nginx/{primary}.access.log").is_file
    assert not host.file("/etc/nginx/sites-enabled/default").exists
    assert host.service("nginx").is_running


def test_renewal_is_scheduled_and_reloads_nginx(web: Converge, acme: PebbleACME) -> None:
    """No second certbot job: Debian's renews (its cron file here, where systemd is not PID 1),
    with the CA bundle the role put in that file's environment."""
    assert not web.host.file(str(OLD_CRON_FILE)).exists
    assert web.host.file(str(DEPLOY_HOOK)).mode == 0o755
    cron = web.host.file(str(DEBIAN_CRON_FILE))
    env: dict[str, str] = {}
    job = ""
    for line in cron.content_string.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line[:1].isdigit() or line.startswith("*"):
            job = line.split(None, 6)[6]  # past the five fields and the user
        else:
            name, _, value = line.partition("=")
            env[name.strip()] = value.strip().strip("\"'")
    assert env.get("REQUESTS_CA_BUNDLE") == str(acme.api_ca_file)
    # Debian's line: stand down under systemd, sleep up to 12 h, then renew. Its first and
    # last parts as cron would run them (the sleep is skipped), with the file's variables only.
    parts = job.split(" && ")
    assert parts[0].startswith("test -x /usr/bin/certbot")
    assert "certbot -q renew" in parts[-1]
    command = parts[-1]
    for part in (parts[0], command):  # nothing is due: it renews nothing, and succeeds
        done = subprocess.run(["sh", "-c", part], env=env, capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, (part, done.stderr)
    # a renewal that does happen goes through the deploy hook: nginx serves the new one
    before = _served_serial("soyte.vinhphuc.gov.vn", acme)
    forced = subprocess.run(
        [*command.split(), "--cert-name", "soyte.vinhphuc.gov.vn", "--force-renewal",
         # certbot sleeps up to 8 minutes before a renewal it was not asked for at a tty
         "--no-random-sleep-on-renew"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    # a reload is asynchronous: the old workers finish their connections first
    wait_until(
        lambda: _served_serial("soyte.vinhphuc.gov.vn", acme) != before,
        timeout=10,
        what="nginx serves the renewed certificate of soyte.vinhphuc.gov.vn",
    )


def _served_serial(name: str, acme: PebbleACME) -> str:
    context = ssl.create_default_context(cafile=str(acme.issuer_ca_file))
    with (
        socket.create_connection((LOOPBACK, 443), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=name) as tls,
    ):
        cert = tls.getpeercert()
    assert cert is not None
    return str(cert["serialNumber"])


def test_second_converge_changes_nothing(web: Converge, acme: PebbleACME) -> None:
    web.run("web").assert_idempotent()
    web.run("tls", extra_vars=acme_vars(acme)).assert_idempotent()


def test_maintenance_switch(web: Converge, acme: PebbleACME) -> None:
    flag = MAINTENANCE_DIR / "soyte.vinhphuc.gov.vn" / "ON"
    web.run("web", extra_vars={"portal_web_maintenance": ["soyte.vinhphuc.gov.vn"]}).assert_ok()
    try:
        assert web.host.file(str(flag)).exists
        down = fetch("https://soyte.vinhphuc.gov.vn/tin-tuc/1", acme.issuer_ca_file)
        assert down.status == 503
        assert down.headers["retry-after"] == "3600"
        assert "đang được bảo trì" in down.body
        assert "Sở Y tế" in down.body
        assert down.headers["x-frame-options"] == "DENY"
        # the other portals are not affected
        assert fetch("https://sotttt.vinhphuc.gov.vn/", acme.issuer_ca_file).status == 200
    finally:
        back = web.run("web")
    back.assert_ok()
    assert not web.host.file(str(flag)).exists
    assert fetch("https://soyte.vinhphuc.gov.vn/", acme.issuer_ca_file).status == 200
    # the flag alone switches it, without Ansible and without a reload (the runbook's way)
    flag.write_text("by hand\n", encoding="utf-8")
    try:
        assert fetch("https://soyte.vinhphuc.gov.vn/", acme.issuer_ca_file).status == 503
    finally:
        flag.unlink()
    assert fetch("https://soyte.vinhphuc.gov.vn/", acme.issuer_ca_file).status == 200


def test_a_new_commune_is_live_after_one_run_and_nothing_else_changes(
    web: Converge, acme: PebbleACME
) -> None:
    _add_commune(web.units, "Huyện Tam Đảo", NEW_COMMUNE)
    estate = Estate.load(web.units)
    assert NEW_DOMAIN in estate.names
    recaps = [web.run("web").assert_ok(), web.run("tls", extra_vars=acme_vars(acme)).assert_ok()]
    changes = [change for recap in recaps for change in changed_items(recap)]
    strays = [
        (task, item)
        for task, item in changes
        if not (item is not None and NEW_DOMAIN in item) and task not in RELOAD_HANDLERS
    ]
    assert not strays, f"changes beyond {NEW_DOMAIN}: {strays}"
    changed_tasks = {task for task, _ in changes}
    for expected in (
        "portal_web : Stage each portal's server blocks",
        "portal_web : Put each checked server block live",
        "tls : Obtain a certificate for each portal that has none or an outdated one",
        "tls : Point each portal's certificate paths at its ACME certificate",
    ):
        assert expected in changed_tasks, (expected, changes)
    # and it is live: vhost, certificate from pebble, graded A or better
    assert peer_names(NEW_DOMAIN, acme.issuer_ca_file) == {NEW_DOMAIN}
    (result,) = [
        r
        for r in monitor_check(web.workdir, web.units, acme, sorted(estate.names))
        if r["domain"] == NEW_DOMAIN
    ]
    assert result["success"], result
    assert result["grade"] in ("A+", "A"), result
    assert web.host.file(str(SITES_DIR / f"{NEW_DOMAIN}.conf")).exists


def test_operator_provided_certificates(web: Converge, acme: PebbleACME, pki: ThrowawayPKI) -> None:
    estate = Estate.load(web.units)
    good, bad = web.workdir / "operator-certs", web.workdir / "operator-certs-bad"
    for directory in (good, bad):
        directory.mkdir()
        for primary in estate.primaries:
            names = [primary, *sorted(n for n, p in estate.names.items() if p == primary != n)]
            # the bad set: sotttt's certificate forgets its legacy name
            if directory == bad and primary == "sotttt.vinhphuc.gov.vn":
                names = [primary]
            issued = pki.issue(primary, names, key_type="ecdsa")
            shutil.copyfile(issued.chain, directory / f"{primary}.crt")
            shutil.copyfile(issued.key, directory / f"{primary}.key")
    refused = web.run("tls", extra_vars={"tls_mode": "files", "tls_files_src_dir": str(bad)})
    assert refused.returncode != 0
    assert "it must name sotttt.vinhphuc.gov.vn, stttt.vinhphuc.gov.vn" in refused.stdout
    # checked before anything landed: nginx still serves pebble's certificates
    assert peer_names("stttt.vinhphuc.gov.vn", acme.issuer_ca_file)

    files = {"tls_mode": "files", "tls_files_src_dir": str(good)}
    web.run("tls", extra_vars=files).assert_ok()
    for name, primary in estate.names.items():
        assert primary in peer_names(name, pki.ca_file)
    key = web.host.file(str(TLS_DIR / "soyte.vinhphuc.gov.vn" / "privkey.pem"))
    assert not key.is_symlink
    assert key.mode == 0o600
    assert not web.host.file(str(OLD_CRON_FILE)).exists
    web.run("tls", extra_vars=files).assert_idempotent()
