"""The rendered alertmanager.yml passes amtool, routes as designed, and the real Alertmanager
0.25 loads it: maintenance windows mute (with a time zone), inhibitions inhibit, and the
webhook carries the bearer token from the token file."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from portalops.core.errors import BadInput
from portalops.oncall import amconfig
from portalops.oncall.config import Watchdog, Witness
from portalops.settings import Settings, load_settings
from tests.fixtures.monitoring_stack import Alertmanager, running_alertmanager
from tests.fixtures.procs import LOOPBACK, require_binary, run, temp_dir, wait_until

pytestmark = pytest.mark.integration

ZONE = "Asia/Ho_Chi_Minh"
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
WINDOWS: list[dict[str, Any]] = [
    {
        "name": "commune-saturday-night",
        "weekdays": ["saturday"],
        "times": [{"start": "22:00", "end": "23:59"}],
        "unit_kinds": ["commune"],
    },
    {
        "name": "congan-upgrade",
        "weekdays": ["saturday:sunday"],
        "times": [{"start": "23:00", "end": "02:00"}],  # past midnight
        "portals": ["congan"],
    },
]
CUSTOM_URL = "https://oncall.quangnam.gov.vn:8443/alertmanager"


def settings(state_dir: Path = Path("/var/lib/portal-ops"), **routing: Any) -> Settings:
    return Settings.model_validate(
        {"state_dir": str(state_dir), "oncall": {"alertmanager": routing}}
    )


def build(config: Settings) -> dict[str, Any]:
    return amconfig.build(config.oncall, config.state_dir)


def render(config: Settings, source: str | None = "config/ops.yaml") -> str:
    return amconfig.render(config.oncall, config.state_dir, source)


def amtool() -> str:
    return require_binary("amtool", "prometheus-alertmanager")


def write(tmp_path: Path, config: Settings) -> Path:
    path = tmp_path / "alertmanager.yml"
    path.write_text(render(config), encoding="utf-8")
    return path


def routes_test(path: Path, *labels: str, tree: bool = False) -> str:
    argv = [amtool(), "config", "routes", "test", f"--config.file={path}"]
    return run([*argv, *(["--tree"] if tree else []), *labels], what="amtool routes test")


def walk(route: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every route below ``route``."""
    for child in route.get("routes", []):
        yield child
        yield from walk(child)


# -- amtool ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "routing",
    [{}, {"maintenance": WINDOWS, "webhook_url": CUSTOM_URL}],
    ids=["defaults", "maintenance-and-custom-webhook"],
)
def test_amtool_check_config_passes(tmp_path: Path, routing: dict[str, Any]) -> None:
    path = write(tmp_path, settings(**routing))
    output = run([amtool(), "check-config", str(path)], what="amtool check-config")
    assert "SUCCESS" in output
    assert "5 inhibit rules" in output
    assert "4 receivers" in output


def test_committed_example_is_rendered_from_the_example_ops_yaml() -> None:
    """config/alertmanager/alertmanager.yml is what `ops oncall alertmanager-config` makes of
    config/ops.example.yaml: regenerate it when amconfig changes."""
    root = Path(__file__).resolve().parents[2]
    example = load_settings(root / "config" / "ops.example.yaml")
    committed = (root / "config" / "alertmanager" / "alertmanager.yml").read_text("utf-8")
    expected = amconfig.render(example.oncall, example.state_dir, "config/ops.example.yaml")
    assert committed == expected, "regenerate config/alertmanager/alertmanager.yml"


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=PortalDown", "domain=x", "unit_kind=province"], "oncall"),
        (["severity=warning", "alertname=PortalSlow", "unit_kind=commune"], "oncall"),
        (["severity=info", "alertname=SecurityGradeLow", "unit_kind=province"], "blackhole"),
        (["severity=info", "alertname=PortalSlow", "unit_kind=commune"], "blackhole"),
        (["alertname=Unlabelled"], "oncall"),  # no severity: still someone's problem
        (["severity=critical", "alertname=HostDown", "instance=web1"], "oncall"),
        # the dead man's switch: its own receiver, whatever window is open
        (["severity=info", "alertname=Watchdog"], "watchdog"),
        (["severity=info", "alertname=Watchdog", "portal=congan", "unit_kind=commune"], "watchdog"),
        # the paging chain's own alerts: to the on-call service and the witnesses
        (["severity=critical", "alertname=OncallDown", "job=oncall"], "paging-chain"),
        (["severity=critical", "alertname=AlertmanagerNotificationsFailing"], "paging-chain"),
        (["severity=critical", "alertname=OncallDeliveriesFailing"], "paging-chain"),
        # a dead Alertmanager delivers nothing: the Watchdog covers it, not a witness
        (["severity=critical", "alertname=AlertmanagerDown"], "oncall"),
    ],
)
@pytest.mark.parametrize("routing", [{}, {"maintenance": WINDOWS}], ids=["plain", "maintenance"])
def test_routes_reach_the_right_receiver(
    tmp_path: Path, routing: dict[str, Any], labels: list[str], receiver: str
) -> None:
    path = write(tmp_path, settings(**routing))
    assert routes_test(path, *labels).strip() == receiver


def test_route_paths(tmp_path: Path) -> None:
    path = write(tmp_path, settings(maintenance=WINDOWS))
    commune = routes_test(
        path, "severity=critical", "alertname=PortalDown", "unit_kind=commune", "portal=xa-a",
        tree=True,
    )  # fmt: skip
    # the commune window's route, then critical, then grouping per unit kind
    assert 'unit_kind="commune"' in commune
    assert '{severity="critical"}' in commune
    assert 'unit_kind=~"district|commune"' in commune
    province = routes_test(
        path, "severity=warning", "alertname=PortalSlow", "unit_kind=province", "portal=ubnd",
        tree=True,
    )  # fmt: skip
    assert "portal" not in province  # no maintenance route: straight to the general ones
    assert '{severity="warning"}' in province


# -- the document ----------------------------------------------------------------------------


def test_defaults() -> None:
    doc = build(Settings())
    route = doc["route"]
    assert route["receiver"] == "oncall"
    assert route["group_by"] == ["alertname", "portal"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == (
        "30s", "5m", "4h",
    )  # fmt: skip
    assert "time_intervals" not in doc
    watchdog, chain, info, critical, warning, unlabelled = route["routes"]
    assert watchdog == {
        "matchers": ['alertname="Watchdog"'],
        "receiver": "watchdog",
        "group_by": ["alertname"],
        "group_wait": "0s",
        "group_interval": "30s",
        "repeat_interval": "1m",
        "continue": False,
    }
    assert chain == {
        "matchers": [
            'alertname=~"OncallDown|AlertmanagerNotificationsFailing|OncallDeliveriesFailing"'
        ],
        "receiver": "paging-chain",
        "group_wait": "10s",
        "repeat_interval": "1h",
    }
    assert info == {"matchers": ['severity="info"'], "receiver": "blackhole"}
    assert critical["group_wait"] == "10s"
    assert critical["repeat_interval"] == "1h"
    for parent in (critical, warning):
        [per_kind] = parent["routes"]
        assert per_kind["matchers"] == ['unit_kind=~"district|commune"']
        assert per_kind["group_by"] == ["alertname", "unit_kind"]
    assert unlabelled["group_by"] == ["alertname", "unit_kind"]
    assert not any(r.get("continue") for r in walk(route))
    [oncall, blackhole, watchdog_receiver, chain_receiver] = doc["receivers"]
    # no witness: the on-call service alone (render warns: test_paging_chain_alerts_...)
    assert chain_receiver == {"name": "paging-chain", "webhook_configs": oncall["webhook_configs"]}
    assert blackhole == {"name": "blackhole"}
    # the same webhook, without resolutions (the Watchdog never resolves but when it stops)
    [own] = watchdog_receiver["webhook_configs"]
    assert own == {**oncall["webhook_configs"][0], "send_resolved": False}
    assert oncall["webhook_configs"] == [
        {
            "url": "http://127.0.0.1:9434/alertmanager",
            "send_resolved": True,
            "max_alerts": 0,
            "http_config": {
                "authorization": {
                    "type": "Bearer",
                    "credentials_file": "/var/lib/portal-ops/oncall/webhook.token",
                }
            },
        }
    ]


def test_render_is_the_dumped_build_under_a_header() -> None:
    text = render(settings(maintenance=WINDOWS), "/etc/portal-ops/ops.yaml")
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert "ops oncall alertmanager-config" in header[0]
    assert "/etc/portal-ops/ops.yaml" in header[0]
    assert any("Do not edit by hand" in line for line in header)
    assert yaml.safe_load(text) == build(settings(maintenance=WINDOWS))
    assert "&id" not in text  # no YAML anchors for a human to decode


def test_webhook_url_and_token_file() -> None:
    doc = build(
        Settings.model_validate({"state_dir": "/srv/ops", "oncall": {"listen": "0.0.0.0:9500"}})
    )
    [webhook] = doc["receivers"][0]["webhook_configs"]
    assert webhook["url"] == "http://127.0.0.1:9500/alertmanager"
    token = webhook["http_config"]["authorization"]["credentials_file"]
    assert token == "/srv/ops/oncall/webhook.token"
    doc = build(
        Settings.model_validate(
            {"oncall": {
                "webhook_token_file": "/etc/portal-ops/am.token",
                "alertmanager": {"webhook_url": CUSTOM_URL},
            }}
        )
    )  # fmt: skip
    [webhook] = doc["receivers"][0]["webhook_configs"]
    assert webhook["url"] == CUSTOM_URL
    assert webhook["http_config"]["authorization"]["credentials_file"] == "/etc/portal-ops/am.token"


def test_watchdog_witnesses_and_switch_off() -> None:
    """The Watchdog also goes to every witness (another host's on-call service, with that
    service's token); switched off, it goes to the blackhole and no watchdog receiver is
    rendered."""
    doc = build(
        Settings.model_validate({"oncall": {"watchdog": {
            "repeat_interval": "5s", "missing_after": "10s",
            "witnesses": [{"url": CUSTOM_URL, "token_file": "/etc/prometheus/witness.token"}],
        }}})
    )  # fmt: skip
    first = doc["route"]["routes"][0]
    assert (first["group_interval"], first["repeat_interval"]) == ("2s", "5s")
    [receiver] = [r for r in doc["receivers"] if r["name"] == "watchdog"]
    own, witness = receiver["webhook_configs"]
    assert own["url"] == "http://127.0.0.1:9434/alertmanager"
    assert witness["url"] == CUSTOM_URL
    assert witness["send_resolved"] is False
    assert witness["http_config"]["authorization"]["credentials_file"] == (
        "/etc/prometheus/witness.token"
    )
    off = build(Settings.model_validate({"oncall": {"watchdog": {"enabled": False}}}))
    assert off["route"]["routes"][0] == {
        "matchers": ['alertname="Watchdog"'], "receiver": "blackhole",
    }  # fmt: skip
    assert [r["name"] for r in off["receivers"]] == ["oncall", "blackhole", "paging-chain"]


def test_paging_chain_alerts_go_to_every_witness_and_warn_without_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A dead on-call service (or one refusing Alertmanager's token) cannot take the alert
    saying so: it goes to every witness too, with resolutions (the witness opens and closes
    an incident); without a witness the config is still valid, and rendering warns."""
    with_witness = Settings.model_validate({"oncall": {"watchdog": {
        "witnesses": [{"url": CUSTOM_URL, "token_file": "/etc/prometheus/witness.token"}],
    }}})  # fmt: skip
    [receiver] = [r for r in build(with_witness)["receivers"] if r["name"] == "paging-chain"]
    own, witness = receiver["webhook_configs"]
    assert own["url"] == "http://127.0.0.1:9434/alertmanager"
    assert (witness["url"], witness["send_resolved"]) == (CUSTOM_URL, True)
    assert witness["http_config"]["authorization"]["credentials_file"] == (
        "/etc/prometheus/witness.token"
    )
    with caplog.at_level("WARNING", logger="portalops.oncall.amconfig"):
        render(with_witness)
        assert not caplog.records
        render(Settings())
    [warning] = caplog.records
    assert "OncallDown" in warning.getMessage()
    assert "witness" in warning.getMessage()


def test_watchdog_missing_after_must_exceed_two_repeats() -> None:
    with pytest.raises(ValueError, match="under twice repeat_interval"):
        Settings.model_validate(
            {"oncall": {"watchdog": {"repeat_interval": "1m", "missing_after": "90s"}}}
        )


def test_maintenance_routes_come_first_and_mute_every_node() -> None:
    route = build(settings(maintenance=WINDOWS))["route"]
    assert route["routes"][0]["receiver"] == "watchdog"  # never muted, before everything
    muted = [r for r in route["routes"] if "mute_time_intervals" in r]
    assert route["routes"][1 : len(muted) + 1] == muted  # before the general routes
    assert {tuple(r["matchers"]): r["mute_time_intervals"] for r in muted} == {
        # a commune portal named by the other window: both windows mute it
        ('portal="congan"', 'unit_kind="commune"'): ["commune-saturday-night", "congan-upgrade"],
        ('portal="congan"', 'unit_kind!="commune"'): ["congan-upgrade"],
        ('portal!="congan"', 'unit_kind="commune"'): ["commune-saturday-night"],
    }
    for top in muted:
        # Alertmanager does not inherit mute_time_intervals: each node must carry them,
        # and no continue: a muted alert must not fall through to an unmuted sibling
        for node in walk(top):
            assert node["mute_time_intervals"] == top["mute_time_intervals"]
    assert not any(r.get("continue") for r in walk(route))
    general = route["routes"][len(muted) + 1 :]
    assert general == build(Settings())["route"]["routes"][1:]


def test_a_window_for_everything_mutes_every_alert() -> None:
    route = build(settings(maintenance=[{"name": "tet", "weekdays": ["monday"]}]))["route"]
    first = route["routes"][1]  # after the Watchdog's
    assert "matchers" not in first
    assert first["mute_time_intervals"] == ["tet"]


def test_time_intervals() -> None:
    doc = build(settings(maintenance=WINDOWS))
    assert doc["time_intervals"] == [
        {
            "name": "commune-saturday-night",
            "time_intervals": [
                {
                    "weekdays": ["saturday"],
                    "times": [{"start_time": "22:00", "end_time": "24:00"}],  # 23:59: day's end
                    "location": ZONE,
                }
            ],
        },
        {
            "name": "congan-upgrade",
            "time_intervals": [
                # Alertmanager counts weeks from Sunday and refuses "saturday:sunday"
                {
                    "weekdays": ["sunday", "saturday"],
                    "times": [{"start_time": "23:00", "end_time": "24:00"}],
                    "location": ZONE,
                },
                # after midnight: the mornings after Saturday and Sunday
                {
                    "weekdays": ["sunday:monday"],
                    "times": [{"start_time": "00:00", "end_time": "02:00"}],
                    "location": ZONE,
                },
            ],
        },
    ]


@pytest.mark.parametrize(
    ("weekdays", "expected"),
    [
        (["monday:friday"], ["monday:friday"]),
        (["Fri:Mon"], ["sunday:monday", "friday:saturday"]),
        (["sunday", "wednesday", "tuesday"], ["sunday", "tuesday:wednesday"]),
        (["monday:sunday"], None),  # every day: no weekdays key at all
    ],
)
def test_weekdays(weekdays: list[str], expected: list[str] | None) -> None:
    window = {"name": "w", "weekdays": weekdays, "portals": ["p"]}
    [interval] = build(settings(maintenance=[window]))["time_intervals"]
    assert interval["time_intervals"][0].get("weekdays") == expected


def test_bad_weekday_and_duplicate_window_are_config_errors_with_their_line(
    tmp_path: Path,
) -> None:
    config = tmp_path / "ops.yaml"
    config.write_text(
        "oncall:\n  alertmanager:\n    maintenance:\n      - {name: w, weekdays: [caturday]}\n",
        encoding="utf-8",
    )
    with pytest.raises(BadInput, match=r"ops.yaml:4: oncall\.alertmanager\.maintenance\[0\]"
                       r"\.weekdays: 'caturday' is not a day"):  # fmt: skip
        load_settings(config)
    config.write_text(
        "oncall:\n  alertmanager:\n    maintenance:\n      - {name: w}\n      - {name: w}\n",
        encoding="utf-8",
    )
    with pytest.raises(BadInput, match=r"ops.yaml:5: .*maintenance\[1\]\.name: 'w' appears twice"):
        load_settings(config)


def test_inhibit_rules() -> None:
    rules = build(Settings())["inhibit_rules"]
    by_source = {tuple(r["source_matchers"]): r for r in rules}
    blind = by_source[('alertname="MonitoringBlind"',)]
    assert blind["target_matchers"] == [
        'alertname=~"PortalDown|PortalSlow|IPv6Unreachable|ProbeStale"'
    ]
    assert blind["equal"] == ["instance"]  # the exporter both alerts come from
    down = by_source[('alertname="PortalDown"',)]
    assert down["equal"] == ["domain"]
    for name in ("PortalSlow", "IPv6Unreachable", "SecurityGradeLow", "LegacyTLSAccepted"):
        assert name in down["target_matchers"][0]
    assert "Certificate" not in down["target_matchers"][0]
    expired = by_source[('alertname="CertificateExpired"',)]
    assert expired["target_matchers"] == ['alertname="CertificateExpiringSoon"']
    assert expired["equal"] == ["domain"]
    severity = by_source[('severity="critical"',)]
    assert severity["target_matchers"] == ['severity="warning"']
    assert severity["equal"][:2] == ["alertname", "domain"]
    host = by_source[('alertname="HostDown"',)]
    assert host["target_matchers"] == ['alertname="DiskFilling"']  # never ExporterAbsent
    assert host["equal"] == ["instance"]
    named = {m.split('"')[1] for r in rules for m in r["source_matchers"] if "alertname" in m}
    assert named <= set(amconfig.ALERTS)
    for r in rules:
        for target in r["target_matchers"]:
            if target.startswith("alertname=~"):
                assert set(target.split('"')[1].split("|")) <= set(amconfig.ALERTS)


# -- the real Alertmanager -------------------------------------------------------------------


class WebhookSink:
    """A loopback HTTP server keeping every POST Alertmanager makes: (path, auth, body)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, dict[str, Any]]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                sink.received.append((self.path, self.headers.get("Authorization", ""), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}/alertmanager"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self) -> list[dict[str, str]]:
        return [alert["labels"] for _, _, body in self.received for alert in body["alerts"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[Alertmanager, WebhookSink, str]]:
    """Alertmanager running the rendered config: a window active now (today and tomorrow in
    the on-call zone, so midnight cannot end it mid-test) for the portal ``dang-bao-tri``,
    one three days away for communes; the webhook goes to a sink, with a real token file."""
    today = datetime.now(ZoneInfo(ZONE)).weekday()
    sink = WebhookSink()
    try:
        with temp_dir("amconfig") as root:
            token = "t0ken-" + "x" * 32
            (root / "oncall").mkdir()
            (root / "oncall" / "webhook.token").write_text(token + "\n", encoding="utf-8")
            (root / "witness.token").write_text(WITNESS_TOKEN + "\n", encoding="utf-8")
            config = settings(
                root,
                group_wait="1s",
                group_interval="1s",
                webhook_url=sink.url,
                maintenance=[
                    {
                        "name": "now",
                        "weekdays": [f"{DAYS[today]}:{DAYS[(today + 1) % 7]}"],
                        "portals": ["dang-bao-tri"],
                    },
                    {
                        "name": "later",
                        "weekdays": [DAYS[(today + 3) % 7]],
                        "times": [{"start": "00:00", "end": "23:59"}],
                        "unit_kinds": ["commune"],
                    },
                ],
            )
            witness = {"url": sink.url.replace("/alertmanager", "/witness"),
                       "token_file": str(root / "witness.token")}  # fmt: skip
            config = config.model_copy(
                update={"oncall": config.oncall.model_copy(
                    update={"watchdog": Watchdog(witnesses=[Witness.model_validate(witness)])}
                )}
            )  # fmt: skip
            path = root / "alertmanager.yml"
            path.write_text(render(config), encoding="utf-8")
            with running_alertmanager(path) as server:
                yield server, sink, token
    finally:
        sink.close()


PROBER = {"job": "portal-ops", "instance": "monitor-1:9433"}
WITNESS_TOKEN = "w1tness-" + "y" * 32


def alert(name: str, severity: str, **labels: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": name, "severity": severity, **PROBER, **labels},
        "startsAt": datetime.now(UTC).isoformat(),
        "endsAt": (datetime.now(UTC) + timedelta(minutes=5)).isoformat(),
    }


def test_real_alertmanager_mutes_inhibits_and_delivers(
    live: tuple[Alertmanager, WebhookSink, str],
) -> None:
    server, sink, token = live
    assert server.status()["config"]["original"]  # it loaded the file, time_intervals and all
    muted = alert(
        "CertificateExpired", "critical", portal="dang-bao-tri", unit_kind="department",
        domain="dangbaotri.quangnam.gov.vn",
    )  # fmt: skip
    open_window_later = alert(
        "CertificateExpired", "critical", portal="xa-an-binh", unit_kind="commune",
        domain="anbinh.quangnam.gov.vn",
    )  # fmt: skip
    blind = alert("MonitoringBlind", "critical", cause="uplink")
    down = alert(
        "PortalDown", "critical", portal="so-tai-chinh", unit_kind="department",
        domain="sotaichinh.quangnam.gov.vn",
    )  # fmt: skip
    # another prober, which is not blind: its PortalDown stands
    seen_elsewhere = alert(
        "PortalDown", "critical", portal="so-xay-dung", unit_kind="department",
        domain="soxaydung.quangnam.gov.vn", instance="monitor-2:9433",
    )  # fmt: skip
    info = alert("SecurityGradeLow", "info", portal="ubnd", domain="quangnam.gov.vn")
    # the blind prober's probes run into their deadline: not news either
    stale = alert("ProbeStale", "critical", portal="so-noi-vu", domain="sonoivu.quangnam.gov.vn")
    # the Watchdog, from the portal a window mutes now: it is never muted
    watchdog = alert("Watchdog", "info", portal="dang-bao-tri")
    # the on-call service is down: the witness must hear of it
    oncall_down = alert("OncallDown", "critical", job="oncall", instance="monitor-1:9434")
    server.post_alerts(
        [muted, open_window_later, blind, down, seen_elsewhere, info, stale, watchdog, oncall_down]
    )

    def delivered() -> set[tuple[str, str]]:
        return {(a["alertname"], a.get("portal", "")) for a in sink.alerts()}

    expected = {
        ("CertificateExpired", "xa-an-binh"),
        ("MonitoringBlind", ""),
        ("PortalDown", "so-xay-dung"),
        ("Watchdog", "dang-bao-tri"),
        ("OncallDown", ""),
    }
    wait_until(
        lambda: expected <= delivered(), timeout=20, what=f"the webhook received {expected}",
        log=server.log,
    )  # fmt: skip
    # every group was due at the same moment (group_wait 1s): give stragglers a moment more.
    # A real wait: Alertmanager runs on its own clock, and nothing it reports tells "will
    # never send" from "has not sent yet"
    time.sleep(2)
    assert delivered() == expected  # muted, inhibited and info alerts never arrived
    assert {(path, auth) for path, auth, _ in sink.received} == {
        ("/alertmanager", f"Bearer {token}"),
        ("/witness", f"Bearer {WITNESS_TOKEN}"),  # to the external witness
    }
    witnessed = {a["labels"]["alertname"] for path, _, body in sink.received
                 if path == "/witness" for a in body["alerts"]}  # fmt: skip
    assert witnessed == {"Watchdog", "OncallDown"}  # the switch, and the chain's own alert
    assert ("/alertmanager", "OncallDown") in {
        (path, a["labels"]["alertname"]) for path, _, body in sink.received for a in body["alerts"]
    }

    [portal_down] = server.alerts(filter='portal="so-tai-chinh"')
    assert portal_down["status"]["inhibitedBy"], portal_down["status"]
    [blind_held] = server.alerts(filter='alertname="MonitoringBlind"')
    assert portal_down["status"]["inhibitedBy"] == [blind_held["fingerprint"]]
    [stale_held] = server.alerts(filter='alertname="ProbeStale"')
    assert stale_held["status"]["inhibitedBy"] == [blind_held["fingerprint"]]
    # muting is not inhibition: the muted alert is held as active, to be sent after the window
    [held] = [a for a in server.alerts(filter='portal="dang-bao-tri"')
              if a["labels"]["alertname"] == "CertificateExpired"]  # fmt: skip
    assert held["status"]["state"] == "active"
