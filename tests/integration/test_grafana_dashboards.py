"""Every PromQL expression of every Grafana dashboard parses and returns data.

The dashboards under ``config/grafana/dashboards/`` are checked three ways:

- their shape: unique uid and title; every panel, query and query variable reads its
  datasource from the ``$datasource`` variable (no fixed uid anywhere), preset to the
  provisioned datasource, which is not Grafana's default; the monitoring role's templates
  give the datasource and that preset the uid and name a site chooses;
- parsing: each expression (Grafana variables substituted by :func:`substitute`) becomes a
  recording rule that ``promtool check rules`` must accept (promtool 2.42 has no standalone
  expression checker); the rule is named after the dashboard and panel, so promtool's message
  points at them;
- data: a real Prometheus scrapes the real exporter (``ops monitor serve`` probing the
  ``portal_sites`` nginx) and a real node_exporter whose textfile directory holds the backup
  and drill metrics of a real ``ops demo`` run; each expression must return a non-empty
  result. A panel that shows nothing when all is well is a panel nobody trusts, so the
  dashboards are written to return data (zeros included) in that case too.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.local_play import local_play
from tests.fixtures.monitoring_stack import (
    Prometheus,
    PrometheusAPIError,
    promtool,
    running_node_exporter,
    running_prometheus,
    wait_for_samples,
)
from tests.fixtures.paths import OPS_PY, PROJECT
from tests.fixtures.portal_sites import PortalSites
from tests.fixtures.procs import (
    free_port,
    run,
    start_process,
    stop_process,
    tcp_accepts,
    temp_dir,
    wait_until,
)

pytestmark = pytest.mark.integration

GRAFANA = PROJECT / "config" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "portal-ops.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "portal-ops.yml"

#: The sites the exporter probes: a clean one, and one of each defect a fleet panel counts.
SITES = ("good", "expired", "gitexposed", "defaced", "tls10", "expiring")
#: ``$domain`` in the drill-down dashboard: the clean site, which has every metric.
DOMAIN_SITE = "good"

#: Grafana's built-in interval variables, as durations a test Prometheus with a few seconds of
#: data can answer: ``rate()`` needs two samples in its window, scraped every second here.
BUILTIN_INTERVALS: Mapping[str, str] = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
}
#: How every panel, target and query variable names its datasource: the variable.
DATASOURCE_REF: Mapping[str, str] = {"type": "prometheus", "uid": "${datasource}"}
#: Uids a site's own Prometheus datasource may well have already.
GENERIC_UIDS = ("prometheus", "Prometheus", "default")
#: Multi-value variables with "All" (``allValue: .+``), used in ``=~`` matchers only.
ALL_VALUE_VARIABLES = ("unit_kind", "host", "category")

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.+),\s*(?P<label>\w+)\s*\)\s*$", re.S)


def substitute(expr: str, domain: str) -> str:
    """``expr`` with every Grafana variable replaced, deterministically, by what Grafana would
    put there for a test Prometheus:

    - ``$__rate_interval``, ``$__interval``, ``$__range``: :data:`BUILTIN_INTERVALS`;
    - ``$domain``: ``domain``, a portal the test exporter probes;
    - ``$unit_kind``, ``$host``, ``$category`` (multi-value, "All" = ``.+``): ``.+``, which
      is what Grafana sends when "All" is selected; these appear only in ``=~`` matchers.

    All spellings (``$var``, ``${var}``, ``${var:format}``, ``[[var]]``) are replaced. A
    variable not listed here raises ``KeyError``: a new variable needs a deliberate test value.
    """
    values = {**BUILTIN_INTERVALS, "domain": domain}
    values.update(dict.fromkeys(ALL_VALUE_VARIABLES, ".+"))

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in values:
            raise KeyError(f"no test value for the Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(value, expr)


@dataclass(frozen=True)
class Query:
    """One PromQL expression of a dashboard: a panel target or a templating variable."""

    dashboard: str
    panel: str
    ref: str
    expr: str
    label: str | None = None
    """For ``label_values(selector, label)``: the label the selector's series must carry."""

    @property
    def id(self) -> str:
        return f"{self.dashboard}:{self.panel}:{self.ref}"

    @property
    def where(self) -> str:
        return f"{self.dashboard}, panel {self.panel!r}, query {self.ref}"


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels (collapsed rows keep theirs inside) included."""
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def queries(path: Path) -> list[Query]:
    """The expressions of one dashboard: panel targets, then templating variables."""
    doc, name = load(path), path.name
    found = [
        Query(name, panel.get("title", f"id {panel.get('id')}"), target.get("refId", "?"),
              target.get("expr", ""))
        for panel in panels(doc.get("panels", []))
        for target in panel.get("targets", [])
    ]  # fmt: skip
    for variable in doc.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        match = _LABEL_VALUES.match(text)
        panel = f"variable ${variable['name']}"
        if match is None:
            # only label_values(selector, label) is supported: anything else shows up as a
            # query that cannot parse, naming the variable
            found.append(Query(name, panel, variable["name"], text))
        else:
            found.append(Query(name, panel, variable["name"], match["selector"], match["label"]))
    return found


ALL_QUERIES = [q for path in DASHBOARDS for q in queries(path)]


def _rule_name(query: Query, index: int) -> str:
    """A recording-rule name that says where the expression lives (promtool quotes it)."""
    words = re.sub(r"[^A-Za-z0-9]+", "_", f"{query.panel}_{query.ref}").strip("_").lower()
    dashboard = re.sub(r"[^A-Za-z0-9]+", "_", query.dashboard.removesuffix(".json"))
    return f"grafana:{dashboard}:{index:02d}_{words}"


# -- the dashboards' shape -------------------------------------------------------------------


def test_the_dashboards_exist() -> None:
    assert {p.name for p in DASHBOARDS} >= {"fleet.json", "portal.json", "backups.json"}
    assert ALL_QUERIES, "no PromQL expression found in the dashboards"


def provisioned_datasource() -> dict[str, Any]:
    [datasource] = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]
    assert isinstance(datasource, dict)
    return datasource


def test_provisioning_names_the_datasource_and_the_dashboards_directory() -> None:
    datasource = provisioned_datasource()
    assert datasource["type"] == "prometheus"
    # not the default, not a generic uid: it sits beside a Prometheus the site already has
    assert datasource["isDefault"] is False
    assert datasource["uid"] not in GENERIC_UIDS
    assert "portal-ops" in datasource["name"]
    assert datasource["url"] == "http://127.0.0.1:9090"
    [provider] = yaml.safe_load(DASHBOARD_PROVIDERS.read_text(encoding="utf-8"))["providers"]
    assert provider["type"] == "file"
    assert Path(provider["options"]["path"]).is_absolute()


def test_dashboards_have_unique_uids_and_titles_and_read_the_datasource_variable() -> None:
    uid = DATASOURCE_REF["uid"]
    uids: dict[str, str] = {}
    titles: dict[str, str] = {}
    problems = []
    for path in DASHBOARDS:
        doc = load(path)
        for key, seen in (("uid", uids), ("title", titles)):
            value = doc.get(key)
            if not value:
                problems.append(f"{path.name}: no {key}")
            elif value in seen:
                problems.append(f"{path.name}: {key} {value!r} is also {seen[value]}'s")
            else:
                seen[value] = path.name
        if not 36 <= doc.get("schemaVersion", 0) <= 41:
            problems.append(f"{path.name}: schemaVersion {doc.get('schemaVersion')}")
        ids = [panel.get("id") for panel in panels(doc["panels"])]
        if len(ids) != len(set(ids)) or None in ids:
            problems.append(f"{path.name}: panel ids missing or repeated: {ids}")
        users = [
            (f"panel {p.get('title')!r}", p.get("datasource"))
            for p in panels(doc["panels"])
            if p.get("type") != "row" or "datasource" in p
        ]
        users += [
            (f"panel {p.get('title')!r} target {t.get('refId')}", t.get("datasource"))
            for p in panels(doc["panels"])
            for t in p.get("targets", [])
        ]
        users += [
            (f"variable ${v['name']}", v.get("datasource"))
            for v in doc.get("templating", {}).get("list", [])
            if v.get("type") == "query"
        ]
        problems += [
            f"{path.name}: {who} uses datasource {ds!r}, not {DATASOURCE_REF!r}"
            for who, ds in users
            if ds != DATASOURCE_REF
        ]
    assert uid == "${datasource}"
    assert not problems, "\n".join(problems)


def datasource_uids(node: object, where: str = "") -> Iterator[tuple[str, object]]:
    """(where, uid) of every ``datasource`` object anywhere in a dashboard, and every bare
    ``"datasource": "<name or uid>"`` string (the older spelling)."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}.{key}"
            if key == "datasource" and isinstance(value, dict):
                yield here, value.get("uid")
            elif key == "datasource" and isinstance(value, str):
                yield here, value
            yield from datasource_uids(value, here)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from datasource_uids(value, f"{where}[{index}]")


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_no_fixed_datasource_uid_anywhere(path: Path) -> None:
    """Panels, targets, variables and annotations name the datasource through ``$datasource``
    (Grafana's own annotation source aside): a site's uid never has to match ours."""
    doc = load(path)
    fixed = [
        f"{where}: {uid!r}"
        for where, uid in [*datasource_uids(doc["panels"]), *datasource_uids(doc["templating"])]
        if uid not in ("${datasource}", "$datasource")
    ]
    fixed += [
        f"{where}: {uid!r}"
        for where, uid in datasource_uids(doc.get("annotations", {}))
        if uid not in ("${datasource}", "$datasource", "-- Grafana --")
    ]
    assert not fixed, f"{path.name}: fixed datasource uids:\n" + "\n".join(fixed)
    # the provisioned uid is only the variable's preset, which the role rewrites
    text = path.read_text(encoding="utf-8")
    assert text.count(f'"{provisioned_datasource()["uid"]}"') == 1, path.name


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_the_datasource_variable_is_preset_to_the_provisioned_datasource(path: Path) -> None:
    variables = load(path)["templating"]["list"]
    mine = [v for v in variables if v.get("type") == "datasource"]
    assert [v["name"] for v in mine] == ["datasource"], f"{path.name}: {mine}"
    [variable] = mine
    assert variables[0] is variable, "the data source is the first variable (the others use it)"
    assert variable["query"] == "prometheus"
    assert not variable.get("multi")
    assert not variable.get("includeAll")
    datasource = provisioned_datasource()
    assert variable["current"]["value"] == datasource["uid"]
    assert variable["current"]["text"] == datasource["name"]


# -- the monitoring role: the site's uid and name ------------------------------------------

ROLE_PLAY = """\
- name: Grafana's files only (the monitoring role's grafana.yml)
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: The role's Grafana tasks
      ansible.builtin.include_role:
        name: monitoring
        tasks_from: grafana.yml
"""


def _install_grafana_files(root: Path, extra_vars: Mapping[str, str]) -> str:
    """Run the monitoring role's Grafana tasks into ``root`` with real ansible-playbook (no
    service, no port: only files under ``root``); its output."""
    variables = {
        "monitoring_grafana_src": str(GRAFANA),
        "monitoring_grafana_provisioning_dir": str(root / "provisioning"),
        "monitoring_grafana_dashboards_dir": str(root / "dashboards"),
        **extra_vars,
    }
    done = local_play(root, ROLE_PLAY, variables)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


def test_the_monitoring_role_installs_them_under_the_sites_uid_and_name(tmp_path: Path) -> None:
    site = {
        "monitoring_grafana_datasource_uid": "ops-prom-vp",
        "monitoring_grafana_datasource_name": "Prometheus (Vĩnh Phúc ops)",
        "monitoring_prometheus_listen": "0.0.0.0:9190",
    }
    _install_grafana_files(tmp_path, site)
    [datasource] = yaml.safe_load(
        (tmp_path / "provisioning/datasources/portal-ops.yml").read_text(encoding="utf-8")
    )["datasources"]
    assert datasource == {
        **provisioned_datasource(),
        "uid": "ops-prom-vp",
        "name": "Prometheus (Vĩnh Phúc ops)",
        "url": "http://127.0.0.1:9190",  # Grafana asks on loopback, not 0.0.0.0
        "isDefault": False,
    }
    provider = tmp_path / "provisioning/dashboards/portal-ops.yml"
    assert provider.read_bytes() == DASHBOARD_PROVIDERS.read_bytes()
    installed = sorted(p.name for p in (tmp_path / "dashboards").iterdir())
    assert installed == [p.name for p in DASHBOARDS]
    for path in DASHBOARDS:
        doc = load(tmp_path / "dashboards" / path.name)
        [variable] = [v for v in doc["templating"]["list"] if v["type"] == "datasource"]
        assert variable["current"]["value"] == "ops-prom-vp"
        assert variable["current"]["text"] == "Prometheus (Vĩnh Phúc ops)"
        # nothing else changed: the repository's dashboard with the preset swapped
        original = load(path)
        for v in original["templating"]["list"]:
            if v["type"] == "datasource":
                v["current"] = variable["current"]
        assert doc == original, path.name
    again = _install_grafana_files(tmp_path, site)
    assert re.search(r"localhost\s*:\s*ok=\d+\s+changed=0\b", again), again[-3000:]


def test_every_expression_is_non_empty_and_has_test_values_for_its_variables() -> None:
    problems = []
    for query in ALL_QUERIES:
        if not query.expr.strip():
            problems.append(f"{query.where}: empty expression")
            continue
        try:
            substitute(query.expr, "example.vinhphuc.gov.vn")
        except KeyError as exc:
            problems.append(f"{query.where}: {exc.args[0]}")
    assert not problems, "\n".join(problems)


def test_substitute_replaces_every_spelling_and_refuses_unknown_variables() -> None:
    expr = (
        'avg_over_time(probe_success{domain="$domain",unit_kind=~"${unit_kind:regex}"}'
        "[$__range]) + rate(x[$__rate_interval]) + y[[[__interval]]]"
    )
    assert substitute(expr, "good.test.vinhphuc.gov.vn") == (
        'avg_over_time(probe_success{domain="good.test.vinhphuc.gov.vn",unit_kind=~".+"}'
        "[1h]) + rate(x[1m]) + y[15s]"
    )
    with pytest.raises(KeyError, match=r"\$portal"):
        substitute('probe_success{portal="$portal"}', "good.test.vinhphuc.gov.vn")


# -- parsing: promtool -----------------------------------------------------------------------


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_expressions_parse_with_promtool(path: Path, tmp_path: Path) -> None:
    mine = [q for q in ALL_QUERIES if q.dashboard == path.name]
    assert mine, f"{path.name} has no PromQL expression"
    rules = [
        {"record": _rule_name(q, i), "expr": substitute(q.expr, "example.vinhphuc.gov.vn")}
        for i, q in enumerate(mine)
    ]
    rule_file = tmp_path / f"{path.stem}.rules.yml"
    rule_file.write_text(
        yaml.safe_dump({"groups": [{"name": path.name, "rules": rules}]}, sort_keys=False),
        encoding="utf-8",
    )
    done = subprocess.run(
        [promtool(), "check", "rules", str(rule_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        legend = "\n".join(
            f"  {r['record']}: {q.where}: {q.expr}" for r, q in zip(rules, mine, strict=True)
        )
        pytest.fail(
            f"promtool check rules rejects an expression of {path.name}:\n"
            f"{done.stdout}{done.stderr}\nrule names:\n{legend}",
            pytrace=False,
        )


# -- data: a live Prometheus over the real exporters -----------------------------------------


@dataclass(frozen=True)
class Stack:
    prometheus: Prometheus
    domain: str


def _write_monitor_config(root: Path, sites: PortalSites) -> Path:
    config = root / "ops.yaml"
    monitor = {
        "resolve": sites.resolve_pins(),
        "ca_file": str(sites.ca_file),
        "http_port": sites.http_port,
        "https_port": sites.https_port,
        "timeout": 5,
        "interval": 5,
        "estate": False,  # the project's own units.yaml names real portals: not here
        "urls": [sites.url(name) for name in SITES],
        "expect": {
            "links": ["https://dichvucong.vinhphuc.gov.vn", "https://congbao.vinhphuc.gov.vn"],
            "elements": ["form", "input[name=q]"],
        },
    }
    config.write_text(
        yaml.safe_dump({"state_dir": str(root / "state"), "monitor": monitor}), encoding="utf-8"
    )
    return config


def _take_baselines(ops: list[str], sites: PortalSites) -> None:
    """``ops monitor baseline``, then give ``defaced`` the good page's baseline (as if it
    had been taken before the break-in), so the defacement gauge has a 1 and 0s."""
    urls = [sites.url("good"), sites.url("defaced")]
    doc = json.loads(
        run([*ops, "--json", "monitor", "baseline", *urls], what="ops monitor baseline")
    )
    path = Path(doc["file"])
    baselines = json.loads(path.read_text(encoding="utf-8"))
    baselines[sites.hostname("defaced")] = baselines[sites.hostname("good")]
    path.write_text(json.dumps(baselines), encoding="utf-8")


@pytest.fixture(scope="module")
def stack(portal_sites: PortalSites) -> Iterator[Stack]:
    """Prometheus scraping ``ops monitor serve`` and node_exporter (textfiles of ``ops demo``)
    every second, once every series the dashboards read is there."""
    with temp_dir("dashboards") as root:
        demo = root / "demo"
        run([sys.executable, str(OPS_PY), "demo", "--dir", str(demo)],
            what="ops demo (backups and a drill, for their metrics)", timeout=300)  # fmt: skip
        textfiles = demo / "metrics"
        assert {p.name for p in textfiles.glob("*.prom")} == {
            "portal_ops_backup.prom",
            "portal_ops_drill.prom",
        }
        ops = [sys.executable, str(OPS_PY), "--config",
               str(_write_monitor_config(root, portal_sites))]  # fmt: skip
        _take_baselines(ops, portal_sites)
        port, log = free_port(), root / "exporter.log"
        exporter = start_process([*ops, "monitor", "serve", "--listen", f"127.0.0.1:{port}"], log)
        try:
            wait_until(
                lambda: tcp_accepts(port),
                timeout=30,
                what=f"ops monitor serve listens on 127.0.0.1:{port}",
                log=log,
                proc=exporter,
            )
            with (
                running_node_exporter(textfiles) as node,
                running_prometheus(
                    scrape={"portal-ops": [f"127.0.0.1:{port}"], "node": [node.address]}
                ) as prometheus,
            ):
                prometheus.wait_for_targets_up(timeout=60)
                prometheus.wait_for(
                    "count(portalops_probe_last_run_timestamp_seconds)",
                    timeout=60,
                    predicate=lambda r: bool(r) and int(r[0]["value"][1]) == len(SITES),
                    what=f"the exporter has probed all {len(SITES)} sites",
                )
                prometheus.wait_for("portalops_drill_restore_objective_seconds", timeout=30)
                # rate() and friends need a few samples of each series
                wait_for_samples(prometheus, "probe_success", 3)
                wait_for_samples(prometheus, "portalops_backup_last_run_success", 3)
                yield Stack(prometheus, portal_sites.hostname(DOMAIN_SITE))
        finally:
            stop_process(exporter)


@pytest.mark.parametrize("query", ALL_QUERIES, ids=[q.id for q in ALL_QUERIES])
def test_expression_returns_data(query: Query, stack: Stack) -> None:
    expr = substitute(query.expr, stack.domain)
    try:
        result = stack.prometheus.query(expr)
    except PrometheusAPIError as exc:
        pytest.fail(f"{query.where}: {exc}", pytrace=False)
    assert result, f"{query.where}: no data from {query.expr!r} (run as {expr!r})"
    if query.label is not None:
        values = {s["metric"].get(query.label) for s in result} - {None}
        assert values, f"{query.where}: no series of {expr!r} has the label {query.label!r}"
