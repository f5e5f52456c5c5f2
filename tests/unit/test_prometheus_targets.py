"""``ops inventory prometheus-targets``: every server's node_exporter as file_sd, and the
portal-to-server info metric, from the servers file."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from portalops.inventory.ansible import inventory_list
from portalops.inventory.model import Estate, load_estate
from portalops.inventory.servers import load_servers
from portalops.inventory.targets import joined, node_targets, portal_server_info
from tests.fixtures.cli import run_ops
from tests.fixtures.procs import require_binary

UNITS = """\
province:
  name: Tỉnh Vĩnh Phúc
  zone: vinhphuc.gov.vn
levels: 3
departments:
  - name: Sở Y tế
    slug: soyte
districts:
  - name: Huyện Tam Đảo
    communes:
      - name: Xã Đạo Trù
legacy:
  - {from: syt.vinhphuc.gov.vn, to: soyte.vinhphuc.gov.vn}
"""

SERVERS = """\
servers:
  - name: web1
    address: 203.0.113.11
    ipv6: "2001:db8::11"
    roles: [web, agent, database]
    portals: [province, department]
    database: postgresql
  - name: web2
    address: 203.0.113.12
    roles: [agent, web]
    portals: [district, commune]
  - name: mon1
    address: 203.0.113.90
    ipv6: "2001:db8::90"
    roles: [monitoring, agent]
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    units = tmp_path / "units.yaml"
    units.write_text(UNITS, encoding="utf-8")
    servers = tmp_path / "servers.yaml"
    servers.write_text(SERVERS, encoding="utf-8")
    return units, servers


@pytest.fixture
def estate(files: tuple[Path, Path]) -> Estate:
    return load_estate(files[0])


def _by_host(groups: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {str(g["labels"]["host"]): g for g in groups}  # type: ignore[index]


def test_every_server_is_one_target_on_its_ipv4_address(
    files: tuple[Path, Path], estate: Estate
) -> None:
    groups = node_targets(load_servers(files[1], estate))
    assert [g["targets"] for g in groups] == [
        ["203.0.113.11:9100"],
        ["203.0.113.12:9100"],
        ["203.0.113.90:9100"],
    ]
    assert _by_host(groups)["mon1"]["labels"] == {"host": "mon1", "roles": ",agent,monitoring,"}


def test_a_role_is_selected_by_one_regex_whatever_the_others(
    files: tuple[Path, Path], estate: Estate
) -> None:
    """PromQL label matchers are anchored: ``.*,web,.*`` must pick exactly the web servers,
    and no role may match inside another's name."""
    labels = [g["labels"] for g in node_targets(load_servers(files[1], estate))]

    def select(role: str) -> list[str]:
        pattern = re.compile(f".*,{role},.*")
        return [lab["host"] for lab in labels if pattern.fullmatch(lab["roles"])]

    assert select("web") == ["web1", "web2"]
    assert select("agent") == ["web1", "web2", "mon1"]
    assert select("monitoring") == ["mon1"]
    assert select("dns") == []
    assert joined(["web", "agent", "web"]) == ",agent,web,"
    assert joined([]) == ""


def test_portal_kinds_label_stays_small_and_domains_go_to_the_info_metric(
    files: tuple[Path, Path], estate: Estate
) -> None:
    servers = load_servers(files[1], estate)
    labels = {h: g["labels"] for h, g in _by_host(node_targets(servers)).items()}
    assert labels["web1"]["portal_kinds"] == ",department,province,"  # type: ignore[index]
    assert labels["web2"]["portal_kinds"] == ",commune,district,"  # type: ignore[index]
    assert "portal_kinds" not in labels["mon1"]  # type: ignore[operator]
    info = portal_server_info(servers)
    assert (
        'portalops_portal_server_info{domain="daotru.tamdao.vinhphuc.gov.vn",'
        'portal="Xã Đạo Trù",unit_kind="commune",server="web2"} 1'
    ) in info
    # legacy names are served (redirected) by the portal's server: the prober probes them too
    assert 'domain="syt.vinhphuc.gov.vn",portal="Sở Y tế",unit_kind="department",server="web1"' in (
        info
    )
    assert info.count("\n") == 2 + sum(len(p.all_domains) for p in estate.portals)


def test_the_info_textfile_is_valid_exposition_format(
    files: tuple[Path, Path], estate: Estate, tmp_path: Path
) -> None:
    promtool = require_binary("promtool", "prometheus")
    text = portal_server_info(load_servers(files[1], estate))
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    # promtool lints (an info metric as a gauge is fine); a parse error would exit non-zero
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_label_values_are_escaped(tmp_path: Path) -> None:
    units = tmp_path / "units.yaml"
    units.write_text(UNITS.replace("name: Sở Y tế", "name: 'Sở \"Y\" tế \\'"), encoding="utf-8")
    servers = tmp_path / "servers.yaml"
    servers.write_text(SERVERS, encoding="utf-8")
    info = portal_server_info(load_servers(servers, load_estate(units)))
    assert 'portal="Sở \\"Y\\" tế \\\\"' in info


def test_monitoring_hosts_get_the_targets_in_their_inventory_variables(
    files: tuple[Path, Path], estate: Estate
) -> None:
    servers = load_servers(files[1], estate)
    hostvars = inventory_list(servers)["_meta"]["hostvars"]
    assert hostvars["mon1"]["portal_node_targets"] == node_targets(servers)
    assert hostvars["mon1"]["portal_server_info"] == portal_server_info(servers)
    assert "portal_node_targets" not in hostvars["web1"]
    assert hostvars["web2"]["portal_address"] == "203.0.113.12"
    assert hostvars["web2"]["portal_monitoring_addresses"] == ["203.0.113.90", "2001:db8::90"]


def test_cli_prints_file_sd_json_and_writes_files(files: tuple[Path, Path], tmp_path: Path) -> None:
    units, servers = files
    base = ("--units", str(units), "inventory", "prometheus-targets", "--servers", str(servers))
    printed = run_ops(*base, "--port", "9101")
    assert printed.code == 0, printed.stderr
    groups = json.loads(printed.stdout)
    assert groups[0] == {
        "targets": ["203.0.113.11:9101"],
        "labels": {"host": "web1", "roles": ",agent,database,web,",
                   "portal_kinds": ",department,province,"},
    }  # fmt: skip
    out, info = tmp_path / "nodes.json", tmp_path / "info.prom"
    written = run_ops(*base, "--output", str(out), "--info", str(info))
    assert written.code == 0, written.stderr
    assert json.loads(out.read_text(encoding="utf-8"))[0]["targets"] == ["203.0.113.11:9100"]
    assert info.read_text(encoding="utf-8").startswith("# HELP portalops_portal_server_info ")
    assert "wrote" in written.stdout


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (("--output", "/nonexistent-dir/nodes.json"), 3, "cannot write /nonexistent-dir/"),
        (("--port", "70000"), 2, "--port 70000: a TCP port is 1..65535"),
        (("--servers", "/nonexistent.yaml"), 2, "/nonexistent.yaml"),
    ],
)
def test_cli_errors_are_clear(
    files: tuple[Path, Path], extra: tuple[str, ...], code: int, message: str
) -> None:
    units, servers = files
    argv = ["--units", str(units), "inventory", "prometheus-targets"]
    if "--servers" not in extra:
        argv += ["--servers", str(servers)]
    done = run_ops(*argv, *extra)
    assert done.code == code, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_shipped_inventory_targets() -> None:
    """The shipped servers file: every server a target, web servers with their kinds."""
    done = run_ops("inventory", "prometheus-targets")
    assert done.code == 0, done.stderr
    groups = _by_host(json.loads(done.stdout))
    assert set(groups) == {"web1", "web2", "ns1", "mon1"}
    assert groups["ns1"]["labels"] == {"host": "ns1", "roles": ",dns,"}
