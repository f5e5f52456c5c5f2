"""``ops oncall who | check | test | alertmanager-config | ack | incidents`` through the CLI's
``main(argv, env)`` in this process: exit codes, JSON, messages; ``test`` delivers through
real SMTP (aiosmtpd) and a real HTTP endpoint (apprise's generic ``json://`` webhook), and a
dead channel fails the command."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.cli import Result, run_ops
from tests.fixtures.monitoring_stack import amtool
from tests.fixtures.procs import LOOPBACK, free_port, run
from tests.fixtures.smtp import SMTPServer

pytestmark = pytest.mark.integration


def ops(config: dict[str, Any], root: Path, *args: str) -> Result:
    """``ops --config ROOT/ops.yaml ARGS`` in this process, ``config`` written there first."""
    path = root / "ops.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    done = run_ops(*args, config=path)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def team(smtp: SMTPServer | None = None, **extra: Any) -> dict[str, Any]:
    mail = (
        f"mailto://{smtp.host}:{smtp.port}?from=oncall@vinhphuc.gov.vn&to=an@vinhphuc.gov.vn"
        "&mode=insecure"
        if smtp
        else "mailtos://oncall:secret@mail.vinhphuc.gov.vn?to=an@vinhphuc.gov.vn"
    )
    oncall: dict[str, Any] = {
        "team_lead": "chi",
        "people": [
            {"id": "an", "name": "Nguyễn Văn An", "channels": [mail]},
            {"id": "binh", "name": "Trần Thị Bình",
             "channels": ["mailtos://oncall:secret@mail.vinhphuc.gov.vn?to=binh@vinhphuc.gov.vn"]},
            {"id": "chi", "name": "Lê Minh Chí",
             "channels": ["mailtos://oncall:secret@mail.vinhphuc.gov.vn?to=chi@vinhphuc.gov.vn"]},
        ],
        "rotations": {
            # weekly, Monday 08:00 handovers: the week of 2026-11-30 is an's, then binh's
            "primary": {"people": ["an", "binh"], "start": "2026-11-30 08:00"},
            "secondary": {"people": ["binh", "an"], "start": "2026-11-30 08:00"},
        },
        "overrides": [{"rotation": "primary", "person": "chi", "start": "2026-12-24 08:00",
                       "end": "2026-12-26 08:00", "reason": "Giáng sinh"}],
    }  # fmt: skip
    oncall.update(extra)
    return {"oncall": oncall}


def test_who_at_a_time_follows_rotation_and_overrides(tmp_path: Path) -> None:
    done = ops(team(), tmp_path, "--json", "oncall", "who", "--at", "2026-12-02 09:00")
    assert done.returncode == 0, done.stderr
    shifts = {s["rotation"]: s for s in json.loads(done.stdout)["shifts"]}
    assert shifts["primary"]["person"] == "an"
    assert shifts["secondary"]["person"] == "binh"
    assert shifts["primary"]["start"] == "2026-11-30T01:00:00Z"  # 08:00 +07
    assert shifts["primary"]["end"] == "2026-12-07T01:00:00Z"
    # Christmas Eve, 09:00: the override puts chi on primary
    done = ops(team(), tmp_path, "oncall", "who", "--at", "2026-12-24 09:00")
    assert done.returncode == 0
    line = next(row for row in done.stdout.splitlines() if row.startswith("primary"))
    assert "Lê Minh Chí (chi)" in line
    assert "Giáng sinh" in line
    # before the rotations start there is nobody: exit 1
    done = ops(team(), tmp_path, "oncall", "who", "--at", "2026-11-01 09:00")
    assert done.returncode == 1
    assert "NOBODY" in done.stdout


def test_who_with_a_bad_time_is_bad_input(tmp_path: Path) -> None:
    done = ops(team(), tmp_path, "oncall", "who", "--at", "tomorrow-ish")
    assert done.returncode == 2
    assert done.stderr.startswith("ops: --at:")


def test_check_finds_a_person_without_a_working_channel(tmp_path: Path) -> None:
    config = team()
    config["oncall"]["rotations"]["primary"]["start"] = "2026-01-05 08:00"
    config["oncall"]["rotations"]["secondary"]["start"] = "2026-01-05 08:00"
    assert ops(config, tmp_path, "oncall", "check", "--weeks", "3").returncode == 0
    config["oncall"]["people"][1]["channels"] = ["nosuchscheme://x"]
    done = ops(config, tmp_path, "--json", "oncall", "check", "--weeks", "3")
    assert done.returncode == 1
    gaps = json.loads(done.stdout)["gaps"]
    assert gaps
    assert {g["person"] for g in gaps} == {"binh"}
    assert all("no working channel" in g["problem"] for g in gaps)


def test_config_naming_an_unknown_person_points_at_the_line(tmp_path: Path) -> None:
    config = team()
    config["oncall"]["rotations"]["secondary"]["people"] = ["binh", "dung"]
    done = ops(config, tmp_path, "oncall", "who")
    assert done.returncode == 2
    assert "oncall.rotations.secondary.people[1]: 'dung' is not in oncall.people" in done.stderr


class _Catcher(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def json_endpoint() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A plain HTTP server on loopback that keeps the JSON bodies posted to it."""
    received: list[dict[str, Any]] = []
    handler = type("Catcher", (_Catcher,), {"received": received})
    server = HTTPServer((LOOPBACK, free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"json://{LOOPBACK}:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def test_test_sends_through_every_channel_and_fails_on_a_dead_one(
    tmp_path: Path, smtp_server: SMTPServer, json_endpoint: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = json_endpoint
    config = team(smtp_server)
    config["oncall"]["people"][0]["channels"].append(url)
    done = ops(config, tmp_path, "--json", "oncall", "test", "--person", "an")
    assert done.returncode == 0, done.stdout
    assert [(r["channel"], r["ok"]) for r in json.loads(done.stdout)] == [
        ("1:mailto", True),
        ("2:json", True),
    ]
    (mail,) = smtp_server.wait_for(1)
    assert "Tin thử" in str(mail.parsed()["Subject"])
    assert received[0]["title"] == "Tin thử của hệ thống trực portal-ops"
    # binh's mail server does not exist here: the command says which channel failed
    dead = f"mailto://{LOOPBACK}:{free_port()}?from=o@vinhphuc.gov.vn&to=binh@vinhphuc.gov.vn"
    config["oncall"]["people"][1]["channels"] = [dead]
    done = ops(config, tmp_path, "oncall", "test", "--person", "binh")
    assert done.returncode == 1
    assert "FAILED" in done.stdout
    assert dead not in done.stdout  # channel URLs hold secrets: never printed
    assert ops(config, tmp_path, "oncall", "test", "--person", "zoe").returncode == 2


def test_alertmanager_config_output_passes_amtool(tmp_path: Path) -> None:
    out = tmp_path / "alertmanager.yml"
    done = ops(team(), tmp_path, "oncall", "alertmanager-config", "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8").startswith("# Generated by `ops oncall")
    run([amtool(), "check-config", str(out)], what="amtool check-config")


def test_ack_and_incidents_before_the_service_ever_ran_create_nothing(tmp_path: Path) -> None:
    config = {**team(), "state_dir": str(tmp_path / "state")}
    done = ops(config, tmp_path, "oncall", "ack", "3")
    assert done.returncode == 2
    assert "no on-call database" in done.stderr
    done = ops(config, tmp_path, "--json", "oncall", "incidents")
    assert (done.returncode, json.loads(done.stdout)) == (0, [])
    assert not (tmp_path / "state").exists()
