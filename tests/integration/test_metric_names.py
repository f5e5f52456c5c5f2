"""Every metric portal-ops emits passes Prometheus' own linter and ends in its unit.

The producers, each run for real and its real output linted:

- the backup job's textfile (``portal_ops_backup.prom``), left by ``ops backup run`` with a
  good and a failing source (every series present);
- the drill's textfile (``portal_ops_drill.prom``), left by ``ops drill``;
- the exporter's ``/metrics``, scraped from a running ``ops monitor serve`` probing the
  ``portal_sites`` nginx, uplink check included;
- the textfile of ``ops inventory prometheus-targets --info`` (which server serves each
  portal), for the project's own estate;
- the textfile of the systemd failure unit, ``ops systemd --record-failure`` (and the
  success record a job's ``ExecStartPost=`` writes);
- the on-call service's ``/metrics`` (``ops oncall serve``, with its token) after a Watchdog
  and an alert whose page failed.

Two checks: ``promtool check metrics`` (Prometheus' linter: counters end in ``_total``, base
units, snake case, help text...), and the unit rule of the Prometheus naming guide, which
promtool 2.42 does not check: a unit (``seconds``, ``bytes``...) is the name's last word
(``portalops_backup_added_bytes``, not ``…_bytes_added``), a timestamp ends in
``_timestamp_seconds``, and a word that needs a unit (``duration``, ``expiry``...) has one.
Names that break a rule on purpose are in :data:`ALLOWED` with the reason (blackbox_exporter's
names, kept for compatibility); a deprecated name
(``status.DEPRECATED``) is allowed until the release its comment names, and nothing in the
rules, their tests or the dashboards may still read it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from portalops.backup.jobs.status import DEPRECATED, METRICS_NAME
from tests.fixtures.backup_env import BackupEnv
from tests.fixtures.cli import run_ops
from tests.fixtures.monitoring_stack import promtool
from tests.fixtures.oncall import OncallService, alert, http, webhook
from tests.fixtures.paths import OPS_PY, PROJECT
from tests.fixtures.portal_sites import PortalSites
from tests.fixtures.procs import free_port, start_process, stop_process, tcp_accepts, wait_until

pytestmark = pytest.mark.integration

DRILL_METRICS = "portal_ops_drill.prom"

#: Base units (Prometheus naming guide); the ones portal-ops could plausibly use.
UNITS = ("seconds", "bytes", "ratio", "celsius", "meters", "volts", "amperes", "joules")
#: Words that say "a quantity with a unit" and so need one after them.
NEEDS_UNIT = ("duration", "expiry", "latency", "length", "size", "age", "time", "timestamp")
#: Suffixes that may follow a unit.
AFTER_UNIT = ("total", "info", "created", "count", "sum", "bucket")

#: name -> why it breaks the unit rule on purpose.
ALLOWED: Mapping[str, str] = {
    "probe_http_uncompressed_body_length": (
        "blackbox_exporter's name (kept so existing blackbox dashboards and rules work)"
    ),
    "probe_ssl_earliest_cert_expiry": (
        "blackbox_exporter's name, a Unix time (kept so existing blackbox dashboards and rules "
        "work)"
    ),
    **{
        old: f"deprecated name of {new}, emitted beside it until portal-ops 0.3.0"
        for old, new in DEPRECATED.items()
    },
}

#: Where metric names are read: none may use a deprecated one.
READERS = (
    *sorted((PROJECT / "config" / "prometheus").rglob("*.yml")),
    *sorted((PROJECT / "config" / "grafana").rglob("*.json")),
)


def unit_problems(name: str) -> list[str]:
    """What breaks the unit rule in one metric (family) name."""
    words = name.split("_")
    while len(words) > 1 and words[-1] in AFTER_UNIT:
        words.pop()
    problems = []
    for index, word in enumerate(words):
        last = index == len(words) - 1
        if word in UNITS and not last:
            problems.append(f"{name}: the unit {word!r} is not at the end of the name")
        if word in NEEDS_UNIT and (last or words[index + 1] not in (*UNITS, "timestamp")):
            problems.append(f"{name}: {word!r} has no unit after it")
        if word == "timestamp" and words[index + 1 : index + 2] != ["seconds"]:
            problems.append(f"{name}: a timestamp ends in '_timestamp_seconds'")
    return problems


def promtool_problems(text: str) -> list[str]:
    """``promtool check metrics``' complaints about an exposition (it reads stdin)."""
    done = subprocess.run(
        [promtool(), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    if done.returncode != 0 and not lines:
        lines = [f"promtool check metrics exited {done.returncode}"]
    return lines


def lint(text: str, allowed: Mapping[str, str] = ALLOWED) -> list[str]:
    """Every problem in an exposition, promtool's and the unit rule's, but those of the names
    in ``allowed`` (promtool starts each line with the metric's name)."""
    problems = [p for p in promtool_problems(text) if p.split(" ", 1)[0] not in allowed]
    for family in text_string_to_metric_families(text):
        name = family.name
        if family.type == "counter":
            name += "_total"
        if name not in allowed:
            problems += unit_problems(name)
    return problems


def families(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


def series_names(text: str) -> set[str]:
    """Families and the names of their samples (a counter ``x`` is read as ``x_total``)."""
    found = families(text)
    for family in text_string_to_metric_families(text):
        found |= {sample.name for sample in family.samples}
    return found


# -- the linter itself -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fault"),
    [
        ("portalops_backup_bytes_added", "'bytes' is not at the end"),
        ("portalops_restore_seconds_max", "'seconds' is not at the end"),
        ("portalops_backup_duration", "'duration' has no unit"),
        ("portalops_cert_expiry", "'expiry' has no unit"),
        ("portalops_last_run_timestamp", "_timestamp_seconds"),
    ],
)
def test_the_unit_rule_finds(name: str, fault: str) -> None:
    assert any(fault in p for p in unit_problems(name)), unit_problems(name)


@pytest.mark.parametrize(
    "name",
    [
        "portalops_backup_added_bytes",
        "portalops_backup_bytes",
        "portalops_backup_duration_seconds",
        "portalops_backup_last_success_timestamp_seconds",
        "portalops_drill_restore_objective_seconds",
        "probe_dns_lookup_time_seconds",
        "portalops_pages_sent_total",
        "portalops_security_grade_info",
        "portalops_probe_findings",
    ],
)
def test_the_unit_rule_passes(name: str) -> None:
    assert unit_problems(name) == []


def test_promtool_check_metrics_is_run_and_heard() -> None:
    """A counter without ``_total`` and a non-base unit: promtool must say so, or the
    producers' checks below would pass on anything."""
    bad = (
        "# HELP portalops_pages_sent Pages sent.\n"
        "# TYPE portalops_pages_sent counter\n"
        "portalops_pages_sent 3\n"
        "# HELP portalops_probe_milliseconds How long.\n"
        "# TYPE portalops_probe_milliseconds gauge\n"
        "portalops_probe_milliseconds 12\n"
    )
    problems = "\n".join(promtool_problems(bad))
    assert "_total" in problems, problems
    assert "milliseconds" in problems, problems
    assert not promtool_problems(
        "# HELP portalops_x_seconds How long.\n# TYPE portalops_x_seconds gauge\n"
        "portalops_x_seconds 1\n"
    )


def test_nothing_reads_a_deprecated_name() -> None:
    """Rules, rule tests and dashboards use the new names (the old ones go in 0.3.0)."""
    used = [
        f"{path.relative_to(PROJECT)}: {old}"
        for path in READERS
        for old in DEPRECATED
        if re.search(rf"\b{old}\b", path.read_text(encoding="utf-8"))
    ]
    assert not used, "\n".join(used)


# -- the producers ---------------------------------------------------------------------------


def _backup_and_drill(root: Path, scratch: Path) -> dict[str, str]:
    """The two textfiles of a real ``ops backup run`` (a good and a failing source: every
    series present) and a real ``ops drill``, on a local repository under ``root``."""
    env = BackupEnv(root, str(root / "repo"))
    env.write_config()
    env.init()
    site = root / "www"
    site.mkdir()
    (site / "index.html").write_text("<h1>Cổng thông tin điện tử</h1>\n", encoding="utf-8")
    env.add_source("webroot", site)
    env.add_source("gone", root / "missing", category="config")
    textfile = root / "textfile"
    textfile.mkdir()
    env.write_config(
        drill={"rto_seconds": 3600, "scratch_dir": str(scratch)},
        metrics={"textfile_dir": str(textfile)},
    )
    ran = env.ops("--json", "backup", "run")
    assert ran.returncode == 1, ran.stdout + ran.stderr  # "gone" failed, webroot did not
    drilled = env.ops("--json", "drill", "--source", "webroot")
    assert drilled.returncode == 0, drilled.stdout + drilled.stderr
    return {
        f"ops backup run ({METRICS_NAME})": (textfile / METRICS_NAME).read_text(encoding="utf-8"),
        f"ops drill ({DRILL_METRICS})": (textfile / DRILL_METRICS).read_text(encoding="utf-8"),
    }


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - 127.0.0.1 only
        body: bytes = response.read()
    return body.decode()


def _probed_everything(text: str, targets: int) -> bool:
    found = [
        s for f in text_string_to_metric_families(text) for s in f.samples
        if s.name == "probe_success"
    ]  # fmt: skip
    return len(found) == targets


def _exporter(root: Path, sites: PortalSites) -> str:
    """``/metrics`` of a running ``ops monitor serve`` once it has probed every site: clean
    ones and defective ones, with an uplink check."""
    names = ("good", "expired", "tls10", "gitexposed")
    port, log = free_port(), root / "exporter.log"
    monitor = {
        "resolve": sites.resolve_pins(),
        "ca_file": str(sites.ca_file),
        "http_port": sites.http_port,
        "https_port": sites.https_port,
        "timeout": 5,
        "interval": 5,
        "estate": False,  # the project's own units.yaml names real portals: not here
        "urls": [sites.url(name) for name in names],
        "uplink": [f"127.0.0.1:{sites.https_port}"],
    }
    config = root / "ops.yaml"
    config.write_text(
        yaml.safe_dump({"state_dir": str(root / "state"), "monitor": monitor}), encoding="utf-8"
    )
    argv = [sys.executable, str(OPS_PY), "--config", str(config)]
    exporter = start_process([*argv, "monitor", "serve", "--listen", f"127.0.0.1:{port}"], log)
    scraped = [""]

    def probed() -> bool:
        scraped[0] = _fetch(f"http://127.0.0.1:{port}/metrics")
        return _probed_everything(scraped[0], len(names))

    try:
        wait_until(lambda: tcp_accepts(port), timeout=30, what="ops monitor serve listens",
                   log=log, proc=exporter)  # fmt: skip
        wait_until(probed, timeout=60, what=f"the exporter has probed all {len(names)} sites",
                   log=log, proc=exporter, interval=0.2)  # fmt: skip
    finally:
        stop_process(exporter)
    return scraped[0]


def _server_info(root: Path) -> str:
    """The ``--info`` textfile of ``ops inventory prometheus-targets`` for the project's own
    estate (inventory/units.yaml and servers.yaml)."""
    info = root / "portal_ops_servers.prom"
    done = run_ops("inventory", "prometheus-targets", "--output", str(root / "nodes.json"),
                   "--info", str(info), cwd=PROJECT)  # fmt: skip
    assert done.code == 0, done.stdout + done.stderr
    return info.read_text(encoding="utf-8")


def _job_failure(root: Path) -> str:
    """The textfile of the systemd failure unit (``ops systemd --record-failure``, which
    ``OnFailure=`` runs): one job failed, another recorded its success."""
    textfile = root / "textfile"
    textfile.mkdir()
    config = root / "ops.yaml"
    config.write_text(
        f"state_dir: {root / 'state'}\nmetrics:\n  textfile_dir: {textfile}\n", encoding="utf-8"
    )
    for flag, unit in (
        ("--record-failure", "portal-ops-backup.service"),
        ("--record-success", "portal-ops-drill.service"),
    ):
        done = run_ops("--config", str(config), "systemd", flag, unit)
        assert done.code == 0, done.stderr
    return (textfile / "portal_ops_jobs.prom").read_text(encoding="utf-8")


def _oncall(root: Path) -> str:
    """``/metrics`` of the on-call service (in this process, loopback) once a Watchdog has
    arrived and a page has failed (its only channel refuses): every family has a sample."""
    config = {
        "state_dir": str(root / "state"),
        "oncall": {
            "listen": f"127.0.0.1:{free_port()}",
            "tick": "0.2s",
            "people": [{"id": "an", "name": "Nguyễn Văn An", "channels": ["json://127.0.0.1:9/"]}],
            "rotations": {"primary": {"people": ["an"], "start": "2026-01-05"}},
            "escalation": {"steps": [{"notify": "primary", "wait": "1h"}], "repeat": False},
            "delivery": {"attempts": 1, "timeout": "2s"},
        },
    }
    service = OncallService(root, config)
    service.start()
    try:
        watchdog = alert(alertname="Watchdog", severity="info")
        assert service.post(webhook(alert(), watchdog))[0] == 200
        token = (root / "state" / "oncall" / "metrics.token").read_text().strip()
        scraped = [""]

        def page_failed() -> bool:
            status, text = http(
                f"{service.url}/metrics", headers={"Authorization": f"Bearer {token}"}
            )
            assert status == 200, text
            scraped[0] = str(text)
            return 'result="failed"' in scraped[0]

        wait_until(page_failed, timeout=20, what="the on-call /metrics counts the failed page")
        return scraped[0]
    finally:
        service.stop()


@pytest.fixture(scope="module")
def outputs(portal_sites: PortalSites, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """producer -> its real output, each producer run once for the module."""
    # scratch space the drill user can enter (tmp_path is root's 0700), as the scratch fixture
    scratch = Path(tempfile.mkdtemp(prefix="drill-scratch-"))
    scratch.chmod(0o711)
    try:
        found = _backup_and_drill(tmp_path_factory.mktemp("textfiles"), scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    found["ops monitor serve (/metrics)"] = _exporter(
        tmp_path_factory.mktemp("exporter"), portal_sites
    )
    found["ops inventory prometheus-targets (--info)"] = _server_info(
        tmp_path_factory.mktemp("inventory")
    )
    found["ops systemd --record-failure"] = _job_failure(tmp_path_factory.mktemp("jobs"))
    found["ops oncall serve (/metrics)"] = _oncall(tmp_path_factory.mktemp("oncall"))
    return found


PRODUCERS = (
    "ops backup run", "ops drill", "ops monitor serve", "ops inventory", "ops systemd",
    "ops oncall serve",
)  # fmt: skip


@pytest.mark.parametrize("producer", PRODUCERS)
def test_the_output_passes_promtool_and_the_unit_rule(
    producer: str, outputs: Mapping[str, str]
) -> None:
    [(name, text)] = [(k, v) for k, v in outputs.items() if k.startswith(producer)]
    assert families(text), f"{name}: no metric at all"
    problems = lint(text)
    assert not problems, f"{name}:\n" + "\n".join(problems) + f"\n--- output ---\n{text}"


def test_deprecated_names_are_emitted_beside_the_new_ones(outputs: Mapping[str, str]) -> None:
    """Same values under both names, and the unit rule does flag the old ones (so the
    allow-list, not luck, lets them through)."""
    [backup] = [v for k, v in outputs.items() if k.startswith("ops backup run")]
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(backup)
        for s in f.samples
    }
    for old, new in DEPRECATED.items():
        olds = {labels: v for (n, labels), v in samples.items() if n == old}
        news = {labels: v for (n, labels), v in samples.items() if n == new}
        assert olds, old
        assert olds == news, (old, new)
        assert unit_problems(old), old


def test_the_allow_list_holds_only_names_that_are_emitted(outputs: Mapping[str, str]) -> None:
    emitted = set().union(*(families(text) for text in outputs.values()))
    assert set(ALLOWED) <= emitted, set(ALLOWED) - emitted


def test_rules_read_only_names_that_are_emitted(outputs: Mapping[str, str]) -> None:
    """A metric renamed in the code but not in an alert rule would leave the alert silent
    forever (its promtool tests feed it made-up series): every ``portalops_*`` and ``probe_*``
    name the rules read is one a producer emits."""
    emitted = set().union(*(series_names(text) for text in outputs.values()))
    rules = sorted((PROJECT / "config" / "prometheus" / "rules").glob("*.yml"))
    assert rules
    read = {
        (path.name, name)
        for path in rules
        for name in re.findall(r"\b(?:portalops|probe)_\w*[a-z0-9]\b",
                               path.read_text(encoding="utf-8"))
    }  # fmt: skip
    assert read
    unknown = sorted(f"{where}: {name}" for where, name in read if name not in emitted)
    assert not unknown, "\n".join(unknown)
