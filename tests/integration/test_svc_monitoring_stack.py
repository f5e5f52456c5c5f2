"""The monitoring stack fixtures start the real servers, wire them together and clean up."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fixtures.monitoring_stack import (
    Alertmanager,
    NodeExporter,
    PrometheusAPIError,
    running_prometheus,
)
from tests.fixtures.procs import tcp_accepts

pytestmark = pytest.mark.integration

TEXTFILE = """\
# HELP portalops_test_backup_bytes Bytes of a pretend backup.
# TYPE portalops_test_backup_bytes gauge
portalops_test_backup_bytes{source="webroot",category="code"} 2414258
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_prometheus_scrapes_a_textfile_metric_from_node_exporter(
    node_exporter: NodeExporter, tmp_path: Path
) -> None:
    (node_exporter.textfile_dir / "portal_ops_test.prom").write_text(TEXTFILE, encoding="utf-8")
    text = node_exporter.metrics()
    assert 'portalops_test_backup_bytes{category="code",source="webroot"} 2.414258e+06' in text
    assert "node_textfile_scrape_error 0" in text
    assert "node_load1 " in text
    # the collectors left off stay off
    assert "node_cpu_seconds_total" not in text
    assert "node_network_receive_bytes_total" not in text

    rules = tmp_path / "rules.yml"
    rules.write_text(
        "groups:\n- name: test\n  rules:\n"
        "  - alert: BackupTooSmall\n    expr: portalops_test_backup_bytes < 1e9\n",
        encoding="utf-8",
    )
    with running_prometheus(
        scrape={"node": [node_exporter.address]},
        rule_files=[rules],
        external_labels={"province": "vinhphuc"},
    ) as prometheus:
        assert prometheus.url == f"http://127.0.0.1:{prometheus.port}"
        assert prometheus.config_path.is_file()
        [target] = prometheus.wait_for_targets_up(timeout=30)
        assert target["labels"] == {"instance": node_exporter.address, "job": "node"}
        [sample] = prometheus.wait_for("portalops_test_backup_bytes")
        assert sample["metric"]["source"] == "webroot"
        assert sample["metric"]["job"] == "node"
        assert float(sample["value"][1]) == 2414258
        assert prometheus.value("sum(portalops_test_backup_bytes)") == 2414258
        assert prometheus.value("time()") > 0  # a scalar comes back as one sample
        alert = prometheus.wait_for_alert("BackupTooSmall", timeout=30)
        assert alert["labels"]["source"] == "webroot"
        [group] = prometheus.rules()
        assert group["rules"][0]["health"] == "ok"
        with pytest.raises(PrometheusAPIError, match=r"bad_data: .*parse error"):
            prometheus.query("sum(portalops_test_backup_bytes")
        pid, data = prometheus.pid, prometheus.root / "data"
        assert data.is_dir()
    assert not _alive(pid)
    assert not data.exists()  # the temp dir is gone with the server


def test_a_bad_rule_file_fails_with_promtools_message(tmp_path: Path) -> None:
    rules = tmp_path / "bad.yml"
    rules.write_text(
        "groups:\n- name: bad\n  rules:\n  - record: x\n    expr: sum(up\n", encoding="utf-8"
    )
    with (
        pytest.raises(pytest.fail.Exception, match=r"promtool check config") as excinfo,
        running_prometheus(scrape={}, rule_files=[rules]),
    ):
        pass
    assert "parse error" in str(excinfo.value)


def test_alertmanager_is_ready_without_gossip_and_lists_a_posted_alert(
    alertmanager: Alertmanager,
) -> None:
    assert alertmanager.url == f"http://127.0.0.1:{alertmanager.port}"
    assert alertmanager.status()["cluster"]["status"] == "disabled"
    assert not tcp_accepts(9094)  # the default gossip port stays closed
    starts = datetime.now(UTC) - timedelta(minutes=1)
    alertmanager.post_alerts(
        [
            {
                "labels": {
                    "alertname": "PortalDown",
                    "portal": "daotru.tamdao.vinhphuc.gov.vn",
                    "severity": "critical",
                },
                "annotations": {"summary": "Cổng thông tin xã Đạo Trù không truy cập được"},
                "startsAt": starts.isoformat().replace("+00:00", "Z"),
            }
        ]
    )
    alert = alertmanager.wait_for_alert("PortalDown", timeout=10)
    assert alert["labels"]["portal"] == "daotru.tamdao.vinhphuc.gov.vn"
    assert alert["annotations"]["summary"] == "Cổng thông tin xã Đạo Trù không truy cập được"
    assert alert["status"]["state"] == "active"
    with pytest.raises(PrometheusAPIError, match=r"HTTP 400"):
        alertmanager.post_alerts([{"labels": {}}])
