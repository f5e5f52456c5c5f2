"""What a probe module reports: findings with a stable code, a severity and a short excerpt.

Shared by the pure judges in this package (exposure, defacement, ...): each turns what a
prober observed into a list of Finding; alerting and the Art. 19 report only read these.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    """How soon someone must act: critical now, warning this week, info when convenient."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        """0 for the most urgent; sort by it to put critical first."""
        return _RANK[self]


_RANK = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclass(frozen=True)
class Finding:
    """One problem a probe found.

    code: stable, dotted ("exposure.git"); alerts and silences key on it.
    severity: a Severity (a plain "critical" string is accepted and converted).
    message: English, plain words, names what was found where and what to do.
    evidence: a short printable excerpt of what was seen, secrets masked.
    subject: the URL or path the finding is about, so that two findings with the same code
    (two listable directories) stay apart.
    """

    code: str
    severity: Severity
    message: str
    evidence: str = ""
    subject: str = ""

    def __post_init__(self) -> None:
        # Raises ValueError for anything but critical, warning or info.
        object.__setattr__(self, "severity", Severity(self.severity))

    def to_json(self) -> dict[str, str]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "evidence": self.evidence,
            "subject": self.subject,
        }


def by_severity(findings: Iterable[Finding]) -> list[Finding]:
    """Most urgent first; ties keep their order (sorted() is stable)."""
    return sorted(findings, key=lambda f: f.severity.rank)


def worst(findings: Iterable[Finding]) -> Severity | None:
    """The most urgent severity among findings, or None when there are none."""
    return min((f.severity for f in findings), key=lambda s: s.rank, default=None)


_SPACE = re.compile(r"\s+")
_SPACE_IN_LINE = re.compile(r"[^\S\n]+")


def excerpt(text: str, limit: int, *, one_line: bool = True) -> str:
    """text made printable (controls become '?', runs of spaces one space; newlines kept only
    when one_line is False) and cut to at most limit characters, '…' marking a cut."""
    text = (_SPACE if one_line else _SPACE_IN_LINE).sub(" ", text)
    text = "".join(ch if ch.isprintable() or ch == "\n" else "?" for ch in text).strip()
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"
