"""The servers file against the estate, and the Ansible inventory derived from both."""

import textwrap
from pathlib import Path

import pytest

from portalops.cli.context import PROJECT_ROOT
from portalops.core.errors import SourceError
from portalops.inventory.ansible import inventory_host, inventory_list
from portalops.inventory.model import Estate, load_estate
from portalops.inventory.servers import Servers, load_servers

UNITS = """\
province:
  name: Tỉnh Vĩnh Phúc
  zone: vinhphuc.gov.vn
levels: 3
departments:
  - name: Sở Y tế
    slug: soyte
  - name: Sở Thông tin và Truyền thông
    slug: sotttt
districts:
  - name: Huyện Tam Đảo
    communes:
      - name: Xã Đạo Trù
legacy:
  - {from: stttt.vinhphuc.gov.vn, to: sotttt.vinhphuc.gov.vn}
  - {from: www.oldzone.gov.vn, to: www.vinhphuc.gov.vn}
"""

SPLIT = """\
servers:
  - name: web1
    address: 203.0.113.11
    ipv6: "2001:db8::11"
    roles: [web, agent]
    portals: [province, department]
    database: mariadb
  - name: web2
    address: 203.0.113.12
    ssh_port: 2222
    roles: [web, database]
    portals: [district, daotru.tamdao.vinhphuc.gov.vn]
    database: postgresql
  - name: db1
    address: 203.0.113.20
    roles: [database]
  - name: ns1
    address: 203.0.113.53
    roles: [dns, monitoring]
"""


@pytest.fixture
def estate(tmp_path: Path) -> Estate:
    path = tmp_path / "units.yaml"
    path.write_text(UNITS, encoding="utf-8")
    return load_estate(path)


def servers(tmp_path: Path, estate: Estate, text: str) -> Servers:
    path = tmp_path / "servers.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_servers(path, estate)


def problems(tmp_path: Path, estate: Estate, text: str) -> list[str]:
    with pytest.raises(SourceError) as caught:
        servers(tmp_path, estate, text)
    return [p.split("servers.yaml:", 1)[-1] for p in caught.value.problems]


def test_groups_are_roles_and_hosts_are_servers(tmp_path: Path, estate: Estate) -> None:
    inv = inventory_list(servers(tmp_path, estate, SPLIT))
    assert inv["all"] == {"children": ["web", "database", "dns", "monitoring", "agent"]}
    assert inv["web"]["hosts"] == ["web1", "web2"]
    assert inv["database"]["hosts"] == ["web2", "db1"]
    assert inv["dns"]["hosts"] == ["ns1"]
    assert inv["agent"]["hosts"] == ["web1"]
    hv = inv["_meta"]["hostvars"]
    assert hv["web1"]["ansible_host"] == "203.0.113.11"
    assert "ansible_port" not in hv["web1"]
    assert hv["web2"]["ansible_port"] == 2222
    assert hv["ns1"]["portal_zone"] == "vinhphuc.gov.vn"
    assert hv["web1"]["portal_monitoring_addresses"] == ["203.0.113.53"]


def test_sites_carry_domains_aliases_legacy_and_slugs(tmp_path: Path, estate: Estate) -> None:
    hv = inventory_list(servers(tmp_path, estate, SPLIT))["_meta"]["hostvars"]
    web1 = {s["domain"]: s for s in hv["web1"]["portal_sites"]}
    assert list(web1) == [
        "www.vinhphuc.gov.vn",
        "soyte.vinhphuc.gov.vn",
        "sotttt.vinhphuc.gov.vn",
    ]
    assert web1["www.vinhphuc.gov.vn"] == {
        "domain": "www.vinhphuc.gov.vn",
        "aliases": ["english.vinhphuc.gov.vn"],
        "legacy": ["www.oldzone.gov.vn"],
        "unit": "Tỉnh Vĩnh Phúc",
        "kind": "province",
        "slug": "www",
        "database": "mariadb",
    }
    assert web1["sotttt.vinhphuc.gov.vn"]["legacy"] == ["stttt.vinhphuc.gov.vn"]
    web2 = [(s["domain"], s["slug"], s["database"]) for s in hv["web2"]["portal_sites"]]
    assert web2 == [
        ("tamdao.vinhphuc.gov.vn", "tamdao", "postgresql"),
        ("daotru.tamdao.vinhphuc.gov.vn", "daotru_tamdao", "postgresql"),
    ]
    assert "portal_sites" not in hv["db1"]


def test_databases_live_with_their_web_server_or_on_the_first_database_server(
    tmp_path: Path, estate: Estate
) -> None:
    hv = inventory_list(servers(tmp_path, estate, SPLIT))["_meta"]["hostvars"]
    # web2 has the database role: it keeps its own; web1 has none, so its databases go to
    # the first database server, which is web2 too
    assert [(d["name"], d["engine"], d["site"]) for d in hv["web2"]["portal_databases"]] == [
        ("portal_www", "mariadb", "www.vinhphuc.gov.vn"),
        ("portal_soyte", "mariadb", "soyte.vinhphuc.gov.vn"),
        ("portal_sotttt", "mariadb", "sotttt.vinhphuc.gov.vn"),
        ("portal_tamdao", "postgresql", "tamdao.vinhphuc.gov.vn"),
        ("portal_daotru_tamdao", "postgresql", "daotru.tamdao.vinhphuc.gov.vn"),
    ]
    assert all(d["owner"] == d["name"] for d in hv["web2"]["portal_databases"])
    assert hv["db1"]["portal_databases"] == []
    split = SPLIT.replace("roles: [web, database]", "roles: [web]")
    hv = inventory_list(servers(tmp_path, estate, split))["_meta"]["hostvars"]
    names = [(d["name"], d["engine"]) for d in hv["db1"]["portal_databases"]]
    assert names == [
        ("portal_www", "mariadb"),
        ("portal_soyte", "mariadb"),
        ("portal_sotttt", "mariadb"),
        ("portal_tamdao", "postgresql"),
        ("portal_daotru_tamdao", "postgresql"),
    ]


def test_dns_records_cover_every_served_name_in_the_zone(tmp_path: Path, estate: Estate) -> None:
    records = inventory_host(servers(tmp_path, estate, SPLIT), "ns1")
    assert records is not None
    assert records["portal_dns_records"] == [
        {"name": "daotru.tamdao", "ipv4": "203.0.113.12", "ipv6": None},
        {"name": "english", "ipv4": "203.0.113.11", "ipv6": "2001:db8::11"},
        {"name": "sotttt", "ipv4": "203.0.113.11", "ipv6": "2001:db8::11"},
        {"name": "soyte", "ipv4": "203.0.113.11", "ipv6": "2001:db8::11"},
        {"name": "stttt", "ipv4": "203.0.113.11", "ipv6": "2001:db8::11"},
        {"name": "tamdao", "ipv4": "203.0.113.12", "ipv6": None},
        {"name": "www", "ipv4": "203.0.113.11", "ipv6": "2001:db8::11"},
    ]  # www.oldzone.gov.vn is another zone's record


def test_a_commune_added_to_the_units_file_appears_everywhere(
    tmp_path: Path, estate: Estate
) -> None:
    before = inventory_list(servers(tmp_path, estate, SPLIT))
    units = tmp_path / "units.yaml"
    units.write_text(
        UNITS.replace(
            "      - name: Xã Đạo Trù\n", "      - name: Xã Đạo Trù\n      - name: Xã Đại Đình\n"
        ),
        encoding="utf-8",
    )
    after = inventory_list(servers(tmp_path, load_estate(units), SPLIT))
    # web2 serves the district and one named commune: a new commune goes to the default...
    # no server takes communes by kind here, so nothing changes; with 'commune' it appears.
    assert after == before
    by_kind = SPLIT.replace("[district, daotru.tamdao.vinhphuc.gov.vn]", "[district, commune]")
    after = inventory_list(servers(tmp_path, load_estate(units), by_kind))
    hv = after["_meta"]["hostvars"]
    assert "daidinh.tamdao.vinhphuc.gov.vn" in [s["domain"] for s in hv["web2"]["portal_sites"]]
    assert "portal_daidinh_tamdao" in [d["name"] for d in hv["web2"]["portal_databases"]]
    assert {"name": "daidinh.tamdao", "ipv4": "203.0.113.12", "ipv6": None} in hv["ns1"][
        "portal_dns_records"
    ]


def test_every_portal_by_default(tmp_path: Path, estate: Estate) -> None:
    one = "servers:\n  - {name: all1, address: 127.0.0.1, roles: [web, dns]}\n"
    hv = inventory_list(servers(tmp_path, estate, one))["_meta"]["hostvars"]["all1"]
    assert len(hv["portal_sites"]) == len(estate.portals)
    assert {s["database"] for s in hv["portal_sites"]} == {None}
    assert "portal_databases" not in hv


def test_no_servers_is_an_empty_inventory(tmp_path: Path, estate: Estate) -> None:
    inv = inventory_list(servers(tmp_path, estate, "servers: []\n"))
    assert inv["web"] == {"hosts": []}
    assert inv["_meta"] == {"hostvars": {}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("servers:\n  - {name: a, address: 10.0.0.1, roles: [webserver]}\n",
         ["2: servers[0].roles[0]: expected 'web', 'database', 'dns', 'monitoring' or 'agent', "
          "got 'webserver'"]),
        ("servers:\n  - {name: a, address: 10.0.0.300, roles: [web]}\n",
         ["2: servers[0].address: input is not a valid IPv4 address, got '10.0.0.300'"]),
        ("servers:\n  - {name: a, address: 10.0.0.1, ipv6: 10.0.0.2, roles: [web]}\n",
         ["2: servers[0].ipv6: input is not a valid IPv6 address, got '10.0.0.2'"]),
        ("servers:\n  - {name: Web_1!, address: 10.0.0.1, roles: [web]}\n",
         ["2: servers[0].name: 'Web_1!' is not an inventory hostname: lowercase letters, "
          "digits, '.', '-', '_', starting with a letter or digit"]),
        ("servers:\n  - {name: a, address: 10.0.0.1, roles: []}\n",
         ["2: servers[0].roles: list should have at least 1 item after validation, not 0, "
          "got a list"]),
        ("servers:\n  - {name: a, address: 10.0.0.1, roles: [web], portal: [commune]}\n",
         ["2: servers[0].portal: unknown key; did you mean 'portals'?"]),
        ("servers:\n  - {name: a, address: 10.0.0.1, roles: [web]}\n"
         "  - {name: a, address: 10.0.0.2, roles: [dns]}\n",
         ["3: servers[1].name: 'a' is already defined on line 2"]),
        # A copied address: two scrape targets for one machine, the other one unwatched.
        ("servers:\n  - {name: a, address: 10.0.0.1, roles: [web]}\n"
         "  - {name: b, address: 10.0.0.1, roles: [dns]}\n",
         ["3: servers[1].address: '10.0.0.1' is already the address of 'a' on line 2"]),
        ("servers:\n  - {name: a, address: 10.0.0.1, ipv6: '2001:db8::1', roles: [web]}\n"
         "  - {name: b, address: 10.0.0.2, ipv6: '2001:DB8:0::1', roles: [dns]}\n",
         ["3: servers[1].ipv6: '2001:db8::1' is already the ipv6 of 'a' on line 2"]),
        ("servers:\n  - {name: a, address: 10.0.0.1, roles: [web], portals: [communes]}\n",
         ["2: servers[0].portals[0]: 'communes' is neither a unit kind (commune, department, "
          "district, province) nor a domain of"]),
        ("servers:\n  - {name: a, address: 10.0.0.1, roles: [dns], portals: [commune]}\n",
         ["2: servers[0].portals: 'a' has no 'web' role, so it serves no portals; add the role "
          "or remove the list"]),
        ("servers:\n  - {name: a, address: 10.0.0.1, roles: [web]}\n"
         "  - {name: b, address: 10.0.0.2, roles: [web], portals: [soyte.vinhphuc.gov.vn]}\n",
         ["3: servers[1].portals: soyte.vinhphuc.gov.vn is already served by 'a' (line 2); a "
          "portal lives on one web server"]),
        ("servers:\n  - {name: a, address: 10.0.0.1, roles: [web], database: postgresql}\n",
         ["2: servers[0].database: 'a' wants postgresql databases but no server has the "
          "'database' role"]),
        ("servers:\n  - {name: a, address: 10.0.0.1, roles: [web], database: oracle}\n",
         ["2: servers[0].database: expected 'postgresql', 'mariadb' or 'none', got 'oracle'"]),
        ("servers: {}\n", ["1: servers: expected a list, got a mapping"]),
        ("", ["1: servers: required key is missing"]),
    ],
)  # fmt: skip
def test_bad_servers_files_name_line_and_key(
    tmp_path: Path, estate: Estate, text: str, expected: list[str]
) -> None:
    found = problems(tmp_path, estate, text)
    assert len(found) == len(expected), found
    for got, want in zip(found, expected, strict=True):
        assert got.startswith(want), got


def test_shipped_servers_file_matches_the_shipped_estate() -> None:
    estate = load_estate(PROJECT_ROOT / "inventory/units.yaml")
    shipped = load_servers(PROJECT_ROOT / "inventory/servers.yaml", estate)
    served = [site.domain for web in shipped.servers for site in web.sites]
    assert sorted(served) == sorted(p.domain for p in estate.portals)  # each exactly once
    test_estate = load_estate(PROJECT_ROOT / "tests/fixtures/provision/units.yaml")
    test_servers = load_servers(PROJECT_ROOT / "tests/fixtures/provision/servers.yaml", test_estate)
    assert [s.name for s in test_servers.servers] == ["testhost"]


def test_unserved_lists_the_portals_no_web_server_carries(tmp_path: Path, estate: Estate) -> None:
    only_province = (
        "servers:\n  - {name: web1, address: 203.0.113.11, roles: [web], portals: [province]}\n"
    )
    carried = servers(tmp_path, estate, only_province)
    unserved = carried.unserved(estate)
    province = [p.domain for p in estate.portals if p.kind.value == "province"]
    assert unserved == [p.domain for p in estate.portals if p.domain not in province]
    assert province
    assert unserved
    assert servers(tmp_path, estate, SPLIT).unserved(estate) == []
