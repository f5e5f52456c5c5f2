"""The Prometheus configuration, the alert rules and their promtool unit tests.

promtool (Debian package ``prometheus``, 2.42) checks the example configuration and the rules
and runs the unit tests in ``config/prometheus/tests/``. The Python tests hold the rules to the
contract the rest of portal-ops relies on: the 26 alert names (Alertmanager inhibitions and the
on-call service refer to them), severity and clause labels, annotations in Vietnamese (NFC)
and English, a runbook for every alert, and, for every alert, a promtool case where it fires
and one where it must stay silent (but the Watchdog, which always fires).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from portalops.oncall import amconfig
from portalops.settings import Settings
from tests.fixtures.cli import run_ops
from tests.fixtures.paths import PROJECT
from tests.fixtures.procs import require_binary

pytestmark = pytest.mark.integration

PROMETHEUS = PROJECT / "config" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULES = PROMETHEUS / "rules" / "portal-ops.rules.yml"
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.test.yml"))
RUNBOOKS = PROJECT / "docs" / "runbooks"
#: the on-call service's /metrics token, beside prometheus.yml (the monitoring role's copy)
METRICS_TOKEN = "portal-ops-metrics.token"
RUNBOOK_BASE = "https://git.vinhphuc.gov.vn/portal-ops/portal-ops/-/blob/main/docs/runbooks/"

ALERTS = {
    "PortalDown", "PortalSlow", "CertificateExpiringSoon", "CertificateExpired",
    "LegacyTLSAccepted", "SecurityGradeLow", "SensitivePathExposed", "DefacementSuspected",
    "IPv6Unreachable", "BackupMissing", "BackupFailed", "DrillOverdue", "DrillFailed",
    "RestoreObjectiveExceeded", "ExporterAbsent", "HostDown", "DiskFilling", "MonitoringBlind",
    "ScheduledJobFailed", "Watchdog", "ProbeStale", "AlertmanagerDown",
    "AlertmanagerNotificationsFailing", "PrometheusNotificationsDropped", "OncallDown",
    "OncallDeliveriesFailing",
}  # fmt: skip
#: Always firing (the dead man's switch): no case can show it silent.
ALWAYS_FIRING = {"Watchdog"}
SEVERITIES = {"critical", "warning", "info"}
CLAUSE = re.compile(r"^Art\. \d+(\.\d+)*$")  # "Art. 19.3": Decision 32/2023/QĐ-UBND
VIETNAMESE = ("summary", "description")
ENGLISH = ("summary_en", "description_en")

# The labels that tell one object from another: a firing alert of these families must carry
# them, so routing, inhibition and the on-call service see which portal or backup it is.
PORTAL_LABELS = {"portal", "unit_kind", "domain"}
BACKUP_LABELS = {"source", "category", "repository"}
PER_PORTAL = {
    "PortalDown", "PortalSlow", "CertificateExpiringSoon", "CertificateExpired",
    "LegacyTLSAccepted", "SecurityGradeLow", "SensitivePathExposed", "DefacementSuspected",
    "IPv6Unreachable", "ProbeStale",
}  # fmt: skip
PER_BACKUP = {"BackupMissing", "BackupFailed", "DrillOverdue", "DrillFailed",
              "RestoreObjectiveExceeded"}  # fmt: skip


def promtool(*args: str) -> str:
    """Run promtool; fail the test with its whole output if it exits non-zero."""
    binary = require_binary("promtool", "prometheus")
    argv = [binary, *args]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=300, cwd=PROJECT, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(argv)} did not finish within 300 s", pytrace=False)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited {done.returncode}:\n{output}", pytrace=False)
    return output


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> Iterator[dict[str, Any]]:
    for group in load(RULES)["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                yield rule


def rule_id(rule: dict[str, Any]) -> str:
    labels = rule.get("labels", {})
    extra = "/".join(str(labels[k]) for k in ("severity", "cause") if k in labels)
    return f"{rule['alert']}[{extra}]"


def alert_tests() -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every ``alert_rule_test`` case of every promtool test file, with its file."""
    for path in TEST_FILES:
        for group in load(path)["tests"]:
            for case in group.get("alert_rule_test") or []:
                yield path, case


# --- promtool ---------------------------------------------------------------------------


def installed(directory: Path) -> Path:
    """prometheus.yml as the monitoring role installs it in ``directory``: the rules beside it
    and the /metrics token it names (promtool check config wants the file to exist)."""
    shutil.copy(CONFIG, directory / "prometheus.yml")
    shutil.copytree(RULES.parent, directory / "rules")
    (directory / METRICS_TOKEN).write_text("a-test-token-of-enough-length\n")
    return directory / "prometheus.yml"


def test_promtool_checks_the_config_and_the_rule_files_it_names(tmp_path: Path) -> None:
    output = promtool("check", "config", str(installed(tmp_path)))
    assert "SUCCESS" in output, output
    assert RULES.name in output, f"check config did not check {RULES.name}:\n{output}"


def test_promtool_checks_the_rules() -> None:
    output = promtool("check", "rules", str(RULES))
    assert "SUCCESS" in output, output


def test_there_are_promtool_unit_tests() -> None:
    assert TEST_FILES, f"no *.test.yml in {PROMETHEUS / 'tests'}"


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(test_file: Path) -> None:
    rule_files = [(test_file.parent / f).resolve() for f in load(test_file)["rule_files"]]
    assert rule_files == [RULES], f"{test_file.name} must test {RULES}, not {rule_files}"
    output = promtool("test", "rules", str(test_file))
    assert "SUCCESS" in output, output


# --- the example configuration ------------------------------------------------------------


def test_config_scrapes_the_exporter_node_exporter_the_paging_chain_and_itself() -> None:
    config = load(CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"portal-ops", "node", "prometheus", "alertmanager", "oncall"}
    targets = {name: job["static_configs"][0]["targets"] for name, job in jobs.items()
               if name != "node"}  # fmt: skip
    assert targets["portal-ops"] == ["127.0.0.1:9433"]
    assert targets["alertmanager"] == ["127.0.0.1:9093"]
    assert targets["oncall"] == ["127.0.0.1:9434"]
    # the on-call service's /metrics wants its bearer token: the monitoring role's copy
    assert jobs["oncall"]["authorization"] == {
        "type": "Bearer",
        "credentials_file": METRICS_TOKEN,
    }
    # every server's node_exporter, from the file the monitoring role writes (relative to
    # prometheus.yml: /etc/prometheus/file_sd/portal-ops-nodes.json)
    assert jobs["node"]["file_sd_configs"] == [{"files": ["file_sd/portal-ops-nodes.json"]}]
    assert "static_configs" not in jobs["node"]
    assert jobs["portal-ops"].get("metrics_path", "/metrics") == "/metrics"
    assert jobs["portal-ops"]["scrape_interval"] == "30s"
    assert [(CONFIG.parent / f).resolve() for f in config["rule_files"]] == [RULES]
    alertmanagers = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["127.0.0.1:9093"]
    # node_exporter's textfile directory, documented beside the job, is the one the example
    # ops.yaml has the backup and drill jobs write to
    example = yaml.safe_load((CONFIG.parents[1] / "ops.example.yaml").read_text("utf-8"))
    assert str(example["metrics"]["textfile_dir"]) in CONFIG.read_text(encoding="utf-8")


def test_promtool_accepts_the_node_targets_the_inventory_generates(tmp_path: Path) -> None:
    """The config with the file_sd file that ``ops inventory prometheus-targets`` writes from
    the shipped servers file: promtool reads the targets and checks every label."""
    installed(tmp_path)
    (tmp_path / "file_sd").mkdir()
    targets = tmp_path / "file_sd" / "portal-ops-nodes.json"
    done = run_ops("inventory", "prometheus-targets", "--output", str(targets))
    assert done.code == 0, done.stderr
    output = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert "SUCCESS" in output, output
    assert "WARNING" not in output, output
    # and a label promtool refuses makes it fail: the check reads the file
    targets.write_text('[{"targets": ["a:9100"], "labels": {"bad label": "x"}}]')
    failed = subprocess.run(
        [require_binary("promtool", "prometheus"), "check", "config",
         str(tmp_path / "prometheus.yml")],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert failed.returncode != 0
    assert "not a valid label name" in failed.stdout + failed.stderr


# --- the rules' contract --------------------------------------------------------------------


def test_the_alert_names_are_the_contract() -> None:
    assert {rule["alert"] for rule in alert_rules()} == ALERTS
    assert set(amconfig.ALERTS) == ALERTS  # what the Alertmanager config refers to


def test_the_watchdog_always_fires_and_is_routed_only_to_the_switch() -> None:
    """``vector(1)``, no ``for``; and the rendered Alertmanager config sends it on its own
    route, first (no maintenance window mutes it), to the on-call webhook only."""
    (rule,) = [r for r in alert_rules() if r["alert"] == "Watchdog"]
    assert rule["expr"].strip() == "vector(1)"
    assert "for" not in rule
    route = amconfig.build(Settings().oncall, Path("/var/lib/portal-ops"))["route"]
    first = route["routes"][0]
    assert first["matchers"] == ['alertname="Watchdog"']
    assert first["receiver"] == amconfig.WATCHDOG_RECEIVER


@pytest.mark.parametrize("rule", list(alert_rules()), ids=rule_id)
def test_every_rule_has_severity_clause_and_bilingual_annotations(rule: dict[str, Any]) -> None:
    labels, annotations = rule.get("labels", {}), rule.get("annotations", {})
    assert labels.get("severity") in SEVERITIES, labels
    assert CLAUSE.match(labels.get("clause", "")), f"clause {labels.get('clause')!r}"
    for key in (*VIETNAMESE, *ENGLISH, "runbook_url"):
        assert isinstance(annotations.get(key), str), f"annotation {key} missing"
        assert annotations[key].strip(), f"annotation {key} empty"
    for key in VIETNAMESE:
        text = annotations[key]
        assert unicodedata.is_normalized("NFC", text), f"{key} is not NFC: {text!r}"
        assert not text.isascii(), f"{key} has no Vietnamese diacritics: {text!r}"


@pytest.mark.parametrize("rule", list(alert_rules()), ids=rule_id)
def test_every_runbook_url_names_a_runbook_section(rule: dict[str, Any]) -> None:
    url = rule["annotations"]["runbook_url"]
    assert url.startswith(RUNBOOK_BASE), url
    page, _, anchor = url.removeprefix(RUNBOOK_BASE).partition("#")
    runbook = RUNBOOKS / page
    assert runbook.is_file(), f"{url}: no {runbook.relative_to(PROJECT)}"
    # GitLab and GitHub make "## PortalDown" the anchor "#portaldown"
    anchors = {
        re.sub(r"[^\w-]", "", line.lstrip("#").strip().lower().replace(" ", "-"))
        for line in runbook.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }
    assert anchor == rule["alert"].lower(), f"{url}: the anchor should be the alert's name"
    assert anchor in anchors, f"{url}: {runbook.name} has no heading '## {rule['alert']}'"


def test_every_alert_is_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for _path, case in alert_tests():
        (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    assert ALERTS - firing == set(), "no promtool case where these fire"
    assert ALERTS - ALWAYS_FIRING - silent == set(), "no promtool case where these stay silent"


def test_firing_cases_keep_the_object_labels() -> None:
    """Per-portal alerts name the portal, backup and drill alerts the source: the rules
    must not aggregate these labels away (the no-metrics variants have none to keep)."""
    checked = 0
    for path, case in alert_tests():
        name = case["alertname"]
        for alert in case.get("exp_alerts") or []:
            labels = alert.get("exp_labels", {})
            if name in PER_PORTAL:
                wanted = PORTAL_LABELS
            elif name in PER_BACKUP and labels.get("cause") != "no_metrics":
                wanted = BACKUP_LABELS
            else:
                continue
            assert wanted <= set(labels), f"{path.name}: {name} {labels} lacks {wanted}"
            checked += 1
    assert checked


def test_expected_texts_are_nfc() -> None:
    """The Vietnamese texts the promtool tests expect are NFC too, so a test can only pass
    if the rule renders the same code points."""
    for path, case in alert_tests():
        for alert in case.get("exp_alerts") or []:
            for key in VIETNAMESE:
                text = alert.get("exp_annotations", {}).get(key, "")
                assert unicodedata.is_normalized("NFC", text), f"{path.name}: {text!r}"
