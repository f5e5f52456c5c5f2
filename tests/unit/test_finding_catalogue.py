"""The finding-code catalogue against the docs table, the exporter and the code that raises."""

from __future__ import annotations

import re

import pytest

from portalops.monitors import catalogue, exporter, exposure
from portalops.monitors.catalogue import CHECKS, EXPOSURE, TLS, Code, Module, codes, main
from portalops.monitors.config import Monitor
from portalops.monitors.findings import Severity
from portalops.monitors.headers import GRADE_CHART, GRADES
from tests.fixtures.paths import PROJECT

DOC = PROJECT / "docs" / "monitoring.md"
BEGIN, END = "<!-- finding codes: begin", "<!-- finding codes: end -->"
ROW = re.compile(r"\| `([a-z0-9_.]+)` \| ([a-z]+) \| ([a-z, ]+) \| (.+) \|")


def doc_rows(text: str) -> dict[str, tuple[str, str, str]]:
    """code -> (module, severity, meaning) as the docs' table has them."""
    table = text[text.index(BEGIN) : text.index(END)].splitlines()[1:]
    rows: dict[str, tuple[str, str, str]] = {}
    for line in table[2:]:  # the header and the |---| line
        match = ROW.fullmatch(line)
        assert match, f"docs/monitoring.md: not a finding-code row: {line!r}"
        code, module, severity, meaning = match.groups()
        assert code not in rows, f"docs/monitoring.md lists {code} twice"
        rows[code] = (module, severity, meaning)
    return rows


def disagreements(text: str) -> list[str]:
    """Every way the docs' table and the catalogue differ, one line each."""
    documented = doc_rows(text)
    problems = []
    for entry in codes():
        row = documented.pop(entry.code, None)
        if row is None:
            problems.append(f"{entry.code}: missing from the docs")
            continue
        for what, doc, ours in zip(
            ("module", "severity", "meaning"),
            row,
            (entry.module, entry.severities, entry.doc),
            strict=True,
        ):
            if doc != ours:
                problems.append(f"{entry.code}: {what} is {doc!r} in the docs, {ours!r} here")
    problems += [f"{code}: documented but not in the catalogue" for code in documented]
    return problems


def test_the_docs_table_agrees_with_the_catalogue() -> None:
    assert disagreements(DOC.read_text(encoding="utf-8")) == [], (
        "run: python -m portalops.monitors.catalogue --markdown, paste into docs/monitoring.md"
    )


def test_the_comparison_catches_each_kind_of_disagreement() -> None:
    text = DOC.read_text(encoding="utf-8")
    changed = (
        text.replace("| `dns.no_aaaa` | dns | info |", "| `dns.no_aaaa` | dns | warning |")
        .replace("| the certificate has expired |", "| the certificate expired |")
        .replace("| `http.not_utf8` |", "| `http.not_utf_8` |")
    )
    assert disagreements(changed) == [
        "http.not_utf8: missing from the docs",
        "tls.expired: meaning is 'the certificate expired' in the docs, "
        "'the certificate has expired' here",
        "dns.no_aaaa: severity is 'warning' in the docs, 'info' here",
        "http.not_utf_8: documented but not in the catalogue",
    ]


def test_the_docs_table_is_what_the_generator_prints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--markdown"]) == 0
    printed = capsys.readouterr().out.strip()
    text = DOC.read_text(encoding="utf-8")
    block = text[text.index(BEGIN) : text.index(END)].split("\n", 1)[1].strip()
    assert block == printed, "run: python -m portalops.monitors.catalogue --markdown"


def test_every_module_has_one_check_and_every_code_its_module_prefix() -> None:
    assert {check.module for check in CHECKS} == {*Module, catalogue.PROBER}
    for check in CHECKS:
        assert check.codes(), f"{check.__name__} declares no code"
        assert all(c.code.startswith(f"{check.module}.") for c in check.codes())
    every = [c.code for c in codes()]
    assert len(every) == len(set(every))


def test_the_config_accepts_exactly_the_catalogue_modules() -> None:
    assert Monitor().modules == list(Module)
    assert Monitor(modules=["tls", "exposure"]).modules == [Module.TLS, Module.EXPOSURE]
    with pytest.raises(ValueError, match="Input should be 'http', 'tls'"):
        Monitor(modules=["ssl"])


def test_grades_come_from_the_observatory_chart() -> None:
    assert tuple(letter for _, letter in GRADE_CHART) == GRADES
    assert (GRADES[0], GRADES[-1]) == ("A+", "F")
    Monitor(min_grade="C-")
    with pytest.raises(ValueError, match="is not one of A\\+, A, A-"):
        Monitor(min_grade="E")


def test_the_exporter_has_a_series_for_every_exposure_code() -> None:
    raised = {check.code for check in exposure.checks("daotru.tamdao.vinhphuc.gov.vn")}
    assert set(exporter.EXPOSURE_CODES) == raised == {c.code for c in EXPOSURE.codes()}
    assert sorted(exporter.EXPOSURE_CODES) == exporter.EXPOSURE_CODES


def test_a_finding_takes_the_catalogue_severity() -> None:
    found = EXPOSURE.GIT.finding("served", "ref: refs/heads/main", "/.git/HEAD")
    assert (found.code, found.severity, found.subject) == ("exposure.git", "critical", "/.git/HEAD")
    assert TLS.EXPIRING.finding("soon").severity == Severity.WARNING
    assert TLS.EXPIRING.finding("very soon", escalated=True).severity == Severity.CRITICAL


def test_only_a_code_that_escalates_can_be_escalated() -> None:
    with pytest.raises(ValueError, match=r"tls\.expired has no escalated severity"):
        TLS.EXPIRED.finding("expired", escalated=True)


def test_a_misplaced_code_is_refused_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    class Stray(catalogue.Check):
        module = Module.DNS
        WRONG = Code("dsn.no_aaaa", Severity.INFO, "a typo in the prefix")

    monkeypatch.setattr(catalogue, "CHECKS", (*catalogue.CHECKS[:2], Stray, *CHECKS[3:]))
    with pytest.raises(RuntimeError, match=r"dsn\.no_aaaa misplaced or repeated"):
        catalogue._validate()
