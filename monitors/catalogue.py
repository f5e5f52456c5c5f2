"""Every probe module and every finding code it can raise: code, severity, one-line doc.

One place, so that the code that raises a finding, the exporter's ``portalops_exposed_path``
series and the table in docs/monitoring.md cannot drift apart. A check raises a finding
through its entry (``TLS.EXPIRING.finding(...)``), never through a bare string: a misspelt
entry is an AttributeError (and a mypy error), and the severity is the catalogue's.

Adding a code: a ``Code`` attribute on its check's class below, raised where the check runs,
then ``python -m portalops.monitors.catalogue --markdown`` pasted into docs/monitoring.md
(tests/unit/test_finding_catalogue.py fails until the two agree). Adding a probe module: a
member of ``Module``, a class below with ``module`` set and the class listed in ``CHECKS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

from portalops.monitors.findings import Finding, Severity


class Module(StrEnum):
    """The probe modules a config (``monitor.modules``) or ``--module`` may name, in the
    order a probe runs them."""

    HTTP = "http"
    TLS = "tls"
    DNS = "dns"
    HEADERS = "headers"
    EXPOSURE = "exposure"
    DEFACEMENT = "defacement"
    EXPECT = "expect"


ALL_MODULES = tuple(Module)
PROBER = "probe"  # the prober itself: not a module one can switch off


@dataclass(frozen=True)
class Code:
    """One finding code. ``escalated``: the more urgent severity some findings of this code
    take (a certificate a few days from expiry), chosen where the finding is raised."""

    code: str
    severity: Severity
    doc: str
    escalated: Severity | None = None

    @property
    def module(self) -> str:
        """The probe module (or ``probe``) that raises the code: its first dotted part."""
        return self.code.partition(".")[0]

    @property
    def severities(self) -> str:
        """'warning', or 'warning, critical' for a code that escalates: the docs' cell."""
        return ", ".join(s.value for s in (self.severity, self.escalated) if s is not None)

    def finding(
        self, message: str, evidence: str = "", subject: str = "", *, escalated: bool = False
    ) -> Finding:
        """A Finding of this code, at its severity (its escalated one if asked)."""
        if escalated and self.escalated is None:
            raise ValueError(f"{self.code} has no escalated severity")
        severity = self.escalated if escalated and self.escalated else self.severity
        return Finding(self.code, severity, message, evidence, subject)


_C, _W, _I = Severity.CRITICAL, Severity.WARNING, Severity.INFO


class Check:
    """A probe check: its module name and, as class attributes, its codes."""

    module: str

    @classmethod
    def codes(cls) -> tuple[Code, ...]:
        """The check's codes, in the order they are declared."""
        return tuple(value for value in vars(cls).values() if isinstance(value, Code))


class HTTP(Check):
    module = Module.HTTP
    DOWN = Code("http.down", _C, "no answer: the name does not resolve, or the connection fails")
    TIMEOUT = Code("http.timeout", _C, "no complete answer within monitor.timeout")
    STATUS = Code("http.status", _C, "the final answer is not a 2xx")
    NO_HTTPS_REDIRECT = Code("http.no_https_redirect", _W, "http:// does not redirect to https://")
    REDIRECT_LOOP = Code("http.redirect_loop", _C, "a redirect loop, or more than 10 redirects")
    REDIRECT_BLOCKED = Code(
        "http.redirect_blocked",
        _C,
        "a redirect to a loopback, private or link-local address (not configured): not followed",
    )
    HTTPS_DOWNGRADE = Code(
        "http.https_downgrade", _W, "the redirect chain goes from https:// back to http://"
    )
    NOT_UTF8 = Code("http.not_utf8", _W, "the page is not declared UTF-8 (Art. 3.1)")
    FOREIGN_ORIGIN = Code(
        "http.foreign_origin",
        _I,
        "the final page is on another host: exposure and defacement are not checked there",
    )
    LEGACY_NOT_REDIRECTED = Code(
        "http.legacy_not_redirected", _W, "a legacy name does not redirect to its new name"
    )


class TLS(Check):
    module = Module.TLS
    EXPIRED = Code("tls.expired", _C, "the certificate has expired")
    UNTRUSTED = Code("tls.untrusted", _C, "the certificate does not verify against the CA store")
    HOSTNAME_MISMATCH = Code("tls.hostname_mismatch", _C, "the certificate is not for this name")
    HANDSHAKE = Code("tls.handshake", _C, "the TLS handshake fails")
    EXPIRING = Code(
        "tls.expiring", _W, "the certificate expires within 21 days (critical within 7)", _C
    )
    LEGACY_PROTOCOL = Code("tls.legacy_protocol", _W, "a TLS 1.0/1.1 handshake is still accepted")
    WEAK_CIPHER = Code(
        "tls.weak_cipher", _W, "a suite or key outside Mozilla's intermediate profile"
    )


class DNS(Check):
    module = Module.DNS
    NO_AAAA = Code("dns.no_aaaa", _I, "no AAAA record: not reachable over IPv6")
    IPV6_UNREACHABLE = Code("dns.ipv6_unreachable", _W, "an AAAA record, but no answer over IPv6")


class HEADERS(Check):
    module = Module.HEADERS
    HSTS_MISSING = Code("headers.hsts_missing", _W, "no Strict-Transport-Security header")
    CSP_MISSING = Code("headers.csp_missing", _W, "no Content-Security-Policy, or report-only")
    CSP_UNSAFE_INLINE = Code("headers.csp_unsafe_inline", _W, "CSP allows 'unsafe-inline' scripts")
    XFO_MISSING = Code("headers.xfo_missing", _W, "no X-Frame-Options (or CSP frame-ancestors)")
    XCTO_MISSING = Code("headers.xcto_missing", _W, "no X-Content-Type-Options: nosniff")
    GRADE_LOW = Code("headers.grade_low", _W, "the Observatory grade is below monitor.min_grade")


class EXPOSURE(Check):
    module = Module.EXPOSURE
    GIT = Code("exposure.git", _C, "a git repository is served (/.git/config, /.git/HEAD)")
    ENV = Code("exposure.env", _C, "the application's /.env is served")
    SVN = Code("exposure.svn", _C, "a Subversion working copy is served (/.svn/)")
    BACKUP_FILE = Code("exposure.backup_file", _C, "a backup archive or SQL dump is served")
    PHPINFO = Code("exposure.phpinfo", _C, "a phpinfo() page is served")
    SERVER_STATUS = Code("exposure.server_status", _W, "the web server's status page is public")
    DIRECTORY_LISTING = Code("exposure.directory_listing", _W, "a directory lists its files")


class DEFACEMENT(Check):
    module = Module.DEFACEMENT
    DRIFT = Code(
        "defacement.drift",
        _C,
        "the home page's text drifted from its baseline beyond monitor.drift_threshold",
    )
    MARKER = Code("defacement.marker", _C, "the home page shows what defacers write")


class EXPECT(Check):
    module = Module.EXPECT
    MISSING = Code("expect.missing", _W, "a required link or element is missing")
    FORBIDDEN = Code("expect.forbidden", _C, "forbidden text is on the home page")


class PROBE(Check):
    module = PROBER
    ERROR = Code("probe.error", _C, "the prober itself failed on this target (a bug)")
    DEADLINE = Code(
        "probe.deadline",
        _W,
        "the probe overran monitor.deadline; what it learned is kept (critical: before the "
        "HTTP answer)",
        escalated=_C,
    )
    ANALYSIS_TIMEOUT = Code(
        "probe.analysis_timeout",
        _W,
        "judging the pages overran monitor.analysis_budget (a hostile page?); not judged",
    )


CHECKS: tuple[type[Check], ...] = (HTTP, TLS, DNS, HEADERS, EXPOSURE, DEFACEMENT, EXPECT, PROBE)


def codes() -> Iterator[Code]:
    """Every code, check by check, in declaration order."""
    for check in CHECKS:
        yield from check.codes()


def _validate() -> None:
    """Each module has one check, each code is unique and named after its check's module."""
    modules = [check.module for check in CHECKS]
    if sorted(modules) != sorted([*Module, PROBER]):
        raise RuntimeError(f"CHECKS covers {modules}, not every Module and {PROBER!r}")
    seen: set[str] = set()
    for check in CHECKS:
        for code in check.codes():
            if code.module != check.module or code.code in seen:
                raise RuntimeError(f"{check.__name__}: {code.code} misplaced or repeated")
            seen.add(code.code)


_validate()

TABLE_HEADER = ("| code | module | severity | meaning |", "|---|---|---|---|")


def markdown_rows() -> list[str]:
    """The rows of docs/monitoring.md's finding-code table, one per code."""
    return [f"| `{c.code}` | {c.module} | {c.severities} | {c.doc} |" for c in codes()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m portalops.monitors.catalogue", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--markdown", action="store_true", help="print the docs table")
    args = parser.parse_args(argv)
    if not args.markdown:
        parser.print_usage(sys.stderr)
        return 2
    print("\n".join([*TABLE_HEADER, *markdown_rows()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
