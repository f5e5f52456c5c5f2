"""Defacement watch (Art. 19): a portal's home page against a baseline of its own text.

Pure and stdlib-only: the caller fetches the page and stores baselines; this module reduces a
page to its visible, stable text and says how far today's page has moved from the baseline.

Fingerprint: the normalised visible text (normalise()) and the set of its 3-word shingles
(every run of three consecutive words). Similarity is the Sørensen-Dice coefficient of the two
shingle sets, 2|A∩B| / (|A|+|B|), and drift = 1 - similarity: roughly the share of the page's
text that is new or gone. Dice rather than Jaccard because that reading holds: replace a
quarter of the text and Dice drift is about 0.25, Jaccard's 0.40. On a commune home page of
20 headlines (tests/unit/test_defacement.py): a day's news, 4 headlines new, drifts 0.15
(Jaccard 0.25); a week's, 10 new, 0.36 (Jaccard 0.53); the news list swapped for a defacer's
message inside the site's own template 0.63; a defacement page 1.00. The default threshold,
0.5, sits between: "half the text is new". A marker phrase is reported whatever the drift.
The baseline should move forward: take a new one each day the page is judged clean, so that
drift measures one day's change, not a month's.

The shingle set is not stored: it is rebuilt from the text, so a baseline file holds the
text alone (at most TEXT_LIMIT characters) and reads well in a diff.

Every step is linear in the page, because the page is the attacker's: the text is capped at
TEXT_LIMIT characters before shingling (so a set holds at most about TEXT_LIMIT / 2 shingles),
similarity is set arithmetic, whitespace is collapsed before the volatile-text patterns run
(no ``\\s*`` can scan a long blank run again and again), and the evidence's "removed" and
"added" runs are the words no shared 3-word run covers, found in one pass each, never by a
sequence diff (difflib's is quadratic: a 20 KB page of one repeated word took minutes).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from html.parser import HTMLParser

from portalops.monitors.catalogue import DEFACEMENT
from portalops.monitors.findings import Finding, excerpt

TEXT_LIMIT = 20_000
SHINGLE_WORDS = 3
DEFAULT_THRESHOLD = 0.5
EVIDENCE_LIMIT = 300
FORMAT = 1  # of Baseline.to_json(); bump when normalise() changes what it keeps


class BaselineError(ValueError):
    """A baseline that cannot be used (bad JSON field, bad timestamp); the message names it."""


# --- Visible text ----------------------------------------------------------------------------

_HIDDEN = frozenset({"script", "style", "noscript", "template", "svg", "iframe", "object"})
# Tags that sit inside a word as often as between words: no space for them.
_INLINE = frozenset(
    {"a", "abbr", "b", "em", "font", "i", "small", "span", "strong", "sub", "sup", "u"}
)


class _Visible(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.title: list[str] = []
        self.hidden = 0
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self.hidden += 1
        if tag == "title" and not self.hidden:  # an <svg> has titles of its own
            self.in_title = True
        if tag not in _INLINE:
            self.chunks.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _INLINE:
            self.chunks.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN and self.hidden:
            self.hidden -= 1
        if tag == "title":
            self.in_title = False
        elif tag not in _INLINE:
            self.chunks.append(" ")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        elif not self.hidden:
            self.chunks.append(data)


# Volatile text, removed from the lower-cased NFC text in this order: counters with their
# labels, dates (long forms first), times, then any long run of digits.
_COUNTER = (
    r"(?:(?:số\s+|tổng\s+(?:số\s+)?)?lượt\s+truy\s+cập|tổng\s+truy\s+cập"
    r"|đang\s+(?:online|truy\s+cập|trực\s+tuyến)|trực\s+tuyến|online|hôm\s+nay|hôm\s+qua"
    r"|tuần\s+này|tháng\s+này|năm\s+nay|tổng(?:\s+cộng)?|visitors?|visits|page\s*views|hits"
    r"|today|yesterday|this\s+(?:week|month))\s*:?\s*\d[\d.,]*"
)
_WEEKDAY = (
    r"(?:\b(?:thứ\s*(?:hai|ba|tư|năm|sáu|bảy|[2-7])|chủ\s*nhật|cn"
    r"|mon|tue|wed|thu|fri|sat|sun)[a-z]*\s*,?\s*)?"
)
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
_VOLATILE = [
    re.compile(pattern)
    for pattern in (
        _COUNTER,
        _WEEKDAY + r"(?:ngày\s+)?\d{1,2}\s+tháng\s+\d{1,2}\s*,?\s*năm\s+\d{4}",
        _WEEKDAY + r"(?:ngày\s+)?\d{1,2}[/.-]\d{1,2}[/.-]\d{4}\b|\b\d{1,2}/\d{1,2}/\d{2}\b",
        r"\b\d{4}-\d{1,2}-\d{1,2}(?:t\d{1,2}:\d{2}(?::\d{2})?(?:\.\d+)?(?:z|[+-]\d{2}:?\d{2})?)?",
        _WEEKDAY
        + rf"\b(?:\d{{1,2}}\s+{_MONTH}\s*,?\s*\d{{4}}|{_MONTH}\s+\d{{1,2}}\s*,?\s*\d{{4}})",
        r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s*(?:am|pm|sa|ch)\b)?(?:\s*\(?gmt\s*[+-]\s*\d{1,2}\)?)?",
        r"\b\d{1,2}h\d{2}\b",
        r"\d(?:[.,]?\d){4,}",
        r"\(\s*\)|\[\s*\]",  # what held a date: "(28/11/2026)"
    )
]
_WORD = re.compile(r"\w+")


def _parse(html: str) -> tuple[str, str]:
    parser = _Visible()
    parser.feed(html)
    parser.close()
    return _clean("".join(parser.title)), _clean("".join(parser.chunks))


def _clean(text: str) -> str:
    # whitespace collapsed first: every pattern then sees single spaces, so none backtracks
    # over a long blank run
    text = " ".join(unicodedata.normalize("NFC", text).lower().split())
    for pattern in _VOLATILE:
        text = pattern.sub(" ", text)
    return " ".join(text.split())


def normalise(html: str) -> str:
    """A page's visible body text, stable from day to day: no script, style, noscript,
    template or comments, no title; NFC, lower case, one space between words; dates, times,
    visitor counters and long digit runs removed."""
    return _parse(html)[1]


def shingles(text: str) -> frozenset[str]:
    """Every run of SHINGLE_WORDS consecutive words of text; a shorter text is one shingle."""
    words = _WORD.findall(text)
    if len(words) <= SHINGLE_WORDS:
        return frozenset({" ".join(words)} if words else ())
    return frozenset(" ".join(words[i : i + SHINGLE_WORDS]) for i in range(len(words) - 2))


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    """Sørensen-Dice of two shingle sets: 1.0 identical, 0.0 nothing shared (two empty
    pages are identical)."""
    if not a and not b:
        return 1.0
    return 2 * len(a & b) / (len(a) + len(b))


def _cap(text: str) -> str:
    """At most TEXT_LIMIT characters, cut at a space so no word is halved."""
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT].rsplit(" ", 1)[0]


# --- Baselines -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """A portal home page's fingerprint: the URL, when it was taken (ISO 8601, as the caller
    gave it), the normalised title and the normalised text (capped at TEXT_LIMIT)."""

    url: str
    taken_at: str
    title: str
    text: str
    shingles: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            datetime.fromisoformat(self.taken_at)
        except (TypeError, ValueError):
            raise BaselineError(f"taken_at '{self.taken_at}' is not an ISO 8601 time") from None
        object.__setattr__(self, "text", _cap(self.text))
        object.__setattr__(self, "shingles", shingles(self.text))

    def to_json(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "url": self.url,
            "taken_at": self.taken_at,
            "title": self.title,
            "text": self.text,
        }

    @classmethod
    def take(cls, url: str, html: str, taken_at: str) -> Baseline:
        """The fingerprint of html, the page at url as fetched at taken_at (ISO 8601)."""
        title, text = _parse(html)
        return cls(url=url, taken_at=taken_at, title=title, text=text)

    @classmethod
    def from_json(cls, doc: Mapping[str, object]) -> Baseline:
        """The Baseline to_json() wrote; BaselineError names a missing or mistyped key."""
        if not isinstance(doc, Mapping):
            raise BaselineError(f"expected an object, got {type(doc).__name__}")
        if doc.get("format") != FORMAT:
            raise BaselineError(
                f"format {doc.get('format')!r} is not {FORMAT}; take a new baseline"
            )
        values: dict[str, str] = {}
        for key in ("url", "taken_at", "title", "text"):
            value = doc.get(key)
            if not isinstance(value, str):
                raise BaselineError(f"{key}: expected a string, got {type(value).__name__}")
            values[key] = value
        return cls(**values)


def drift(baseline: Baseline, html: str) -> float:
    """1 - similarity of html's text to the baseline's: 0.0 unchanged, 1.0 nothing shared."""
    return 1 - similarity(baseline.shingles, shingles(_cap(normalise(html))))


# --- Judging ---------------------------------------------------------------------------------

# Phrases defacers sign with; matched on normalised (lower-case) text, leetspeak included.
MARKERS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("hacked by", r"h[a4@]ck[e3]d\s+by\b"),
        ("defaced by", r"d[e3]f[a4@]c[e3]d\s+by\b"),
        ("owned by", r"\bp?[o0]wn[e3]d\s+by\b"),
        ("h4ck3d", r"\bh4ck3d\b"),
        ("greetz", r"\bgreetz\b"),
        ("was here", r"\bwas\s+here\b"),
        ("cyber army", r"\bcyb[e3]r\s+[a4]rmy\b"),
        ("team ... hacker", r"\bteam\s+(?:\w+\s+){0,3}h[a4]ck[e3]rs?\b|\bh[a4]ck[e3]rs?\s+team\b"),
        ("đã bị hack", r"đã\s+bị\s+hack"),
        ("bị tấn công bởi", r"bị\s+tấn\s+công\s+bởi"),
    )
)


def compare(baseline: Baseline, html: str, threshold: float = DEFAULT_THRESHOLD) -> list[Finding]:
    """Findings for html against the baseline of the same page.

    defacement.marker (critical): a defacer's phrase (MARKERS) in the page's text or title
    that the baseline's text and title did not have.
    defacement.drift (critical): drift above threshold (0 < threshold < 1); the evidence is the
    figure and the largest removed (-) and added (+) runs of words.
    """
    if not 0 < threshold < 1:
        raise ValueError(f"drift threshold {threshold} is not between 0 and 1")
    title, text = _parse(html)
    text = _cap(text)
    findings = []
    before = f"{baseline.title}\n{baseline.text}"
    new = [hit for hit in _markers(title, text) if not hit[3].search(before)]
    if new:
        names = ", ".join(f"'{name}'" for name, _, _, _ in new)
        _, where, context, _ = new[0]
        findings.append(
            DEFACEMENT.MARKER.finding(
                message=f"{baseline.url} shows what defacers write ({names}), absent from the "
                f"baseline of {baseline.taken_at}: look at the page now and take it offline "
                "if it is defaced.",
                evidence=excerpt(f"{where}: {context}", EVIDENCE_LIMIT),
                subject=baseline.url,
            )
        )
    moved = 1 - similarity(baseline.shingles, shingles(text))
    if moved > threshold:
        findings.append(
            DEFACEMENT.DRIFT.finding(
                message=f"{baseline.url}: {moved:.0%} of the home page's text differs from the "
                f"baseline of {baseline.taken_at} (threshold {threshold:.0%}). Look at the page; "
                "if the change is a legitimate redesign, take a new baseline.",
                evidence=_diff(baseline.text, text, moved),
                subject=baseline.url,
            )
        )
    return findings


def _markers(title: str, text: str) -> list[tuple[str, str, str, re.Pattern[str]]]:
    """(marker, 'title' or 'text', the words around it, its pattern) for each marker found;
    markers in the title first."""
    found = []
    for name, pattern in MARKERS:
        for where, source in (("title", title), ("text", text)):
            hit = pattern.search(source)
            if hit:
                before, after = source[: hit.start()].split()[-8:], source[hit.end() :].split()[:8]
                context = " ".join([*before, hit[0], *after])
                found.append((name, where, context, pattern))
                break
    return sorted(found, key=lambda f: f[1] != "title")


def _diff(old: str, new: str, moved: float) -> str:
    """'drift 0.97' then the three largest changed runs in page order, '- removed words' and
    '+ added words', each cut to a line. Linear: a word is unchanged when a 3-word run
    covering it is in the other text too; the changed runs are the rest."""
    a, b = old.split(), new.split()
    runs = [(start, "-", words) for start, words in _uncovered(a, b)]
    runs += [(start, "+", words) for start, words in _uncovered(b, a)]
    largest = sorted(runs, key=lambda run: len(run[2]), reverse=True)[:3]
    lines = [f"drift {moved:.2f}"]
    for _, sign, words in sorted(largest, key=lambda run: (run[0], run[1] != "-")):
        lines.append(excerpt(f"{sign} " + " ".join(words), 90))
    return excerpt("\n".join(lines), EVIDENCE_LIMIT, one_line=False)


def _uncovered(words: list[str], other: list[str]) -> list[tuple[int, list[str]]]:
    """(start, words) for each maximal run of words that no 3-word run shared with other
    covers; a text of 3 words or fewer is one run, shared or not."""
    n = SHINGLE_WORDS
    if len(words) <= n or len(other) <= n:
        return [] if words == other else ([(0, words)] if words else [])
    theirs = {tuple(other[i : i + n]) for i in range(len(other) - n + 1)}
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        if tuple(words[i : i + n]) in theirs:
            covered[i : i + n] = [True] * n
    runs: list[tuple[int, list[str]]] = []
    start = None
    for i, kept in enumerate([*covered, True]):
        if not kept and start is None:
            start = i
        elif kept and start is not None:
            runs.append((start, words[start:i]))
            start = None
    return runs
