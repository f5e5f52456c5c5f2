"""Sensitive files and pages a portal must not serve (Art. 19: protection against attacks).

Pure and stdlib-only: the prober fetches every path in paths(domain), without following
redirects, plus one path that cannot exist (not_found_path), and hands over what it saw;
judge() decides. A path is a finding only when its CONTENT proves it: a git config that parses
as one, a zip that starts with a zip's magic bytes. A status code alone never is, so a
"soft-404" server answering 200 with its home page for every path gives no findings; and a
response (near-)identical to the one for the nonexistent path is never a finding, whatever
a matcher says.

Only the first 64 KiB of each body are read (the prober may stop there, or send
Range: bytes=0-65535 and get a 206).

The bodies are the attacker's, so every pattern here is linear in them: no lookahead over the
body, no quantifier that can retry a long run (``^\\s*`` across blank lines, ``[^>]+`` past
the next tag, ``\\s*\\n\\s*`` over a blank run) and no pattern that is tried again at every
start of such a run; where a page is small by nature (nginx's stub_status) a longer body is
not looked at.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from portalops.core.units import size as byte_size
from portalops.monitors.catalogue import EXPOSURE, Code
from portalops.monitors.findings import Finding, Severity, excerpt

READ_LIMIT = 64 * 1024
EVIDENCE_LIMIT = 200
Matcher = Callable[[bytes], str | None]  # evidence when the body proves the exposure


class ExposureInputError(ValueError):
    """What the prober handed over cannot be judged (a bad domain, a path that paths() does
    not give); the message says which."""


@dataclass(frozen=True)
class PathCheck:
    """One path to fetch and how to recognise it: a matcher reads the body (at most
    READ_LIMIT bytes) and returns a short evidence string when the content proves it; the
    finding it becomes is the catalogue's ``entry``."""

    entry: Code
    path: str
    matcher: Matcher
    message: str  # "{path}" is replaced by the path

    @property
    def code(self) -> str:
        return self.entry.code

    @property
    def severity(self) -> Severity:
        return self.entry.severity


@dataclass(frozen=True)
class Fetched:
    """One response as the prober saw it: the path asked for (no redirects followed), the
    status, the headers in order and the body after any Content-Encoding was undone."""

    path: str
    status: int
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ExposureInputError(f"path '{self.path}' does not start with '/'")
        object.__setattr__(self, "headers", tuple(self.headers))
        object.__setattr__(self, "body", bytes(self.body[:READ_LIMIT]))


# --- Matchers --------------------------------------------------------------------------------


def _text(body: bytes) -> str:
    return body[:READ_LIMIT].decode("utf-8", "replace")


def _meaningful(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()[:400] if line.strip()]


_HTML = re.compile(r"<(?:!doctype|html|head|body|div|script|p|table)\b", re.IGNORECASE)
_GIT_LINE = re.compile(r"\[[^\]\n]+\]|[A-Za-z][\w.-]*\s*(?:=.*)?|[#;].*")
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def _git_config(body: bytes) -> str | None:
    lines = _meaningful(_text(body))
    if not lines or not all(_GIT_LINE.fullmatch(line) for line in lines):
        return None
    lowered = [line.lower().replace(" ", "") for line in lines]
    if "[core]" not in lowered:
        return None
    core = lowered.index("[core]")
    if not any(line.startswith("repositoryformatversion=") for line in lowered[core:]):
        return None
    shown = []
    for line in lines:
        key = line.split("=", 1)[0].strip().lower()
        if line.startswith("["):
            shown.append(line)
        elif key in ("repositoryformatversion", "url"):
            shown.append(_USERINFO.sub("***@", line))  # a token in a remote URL
    return " ".join(shown)


_GIT_HEAD = re.compile(r"ref: refs/[\w./-]+|[0-9a-f]{40}|[0-9a-f]{64}")


def _git_head(body: bytes) -> str | None:
    text = _text(body).strip()
    return text if _GIT_HEAD.fullmatch(text) else None


_ENV_LINE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*)")


def _dotenv(body: bytes) -> str | None:
    # Mostly KEY=VALUE lines, the first one among them: no HTML page starts like that.
    lines = [line for line in _meaningful(_text(body)) if not line.startswith("#")]
    pairs = [m.groups() for m in map(_ENV_LINE.fullmatch, lines) if m]
    if len(pairs) < 2 or not _ENV_LINE.fullmatch(lines[0]) or len(pairs) * 2 < len(lines):
        return None
    # Values never leave this function: the key names are proof enough.
    shown = [f"{key}={'***' if value.strip() else ''}" for key, value in pairs]
    return f"{len(pairs)} variables: " + ", ".join(shown)


def _svn_entries(body: bytes) -> str | None:
    text = _text(body)
    # 1.7+ leaves only the format number ("12"); 1.4-1.6 a line format whose third line is
    # "dir" and fifth the repository URL; before 1.4 XML.
    if re.fullmatch(r"\s*12\s*", text):
        return "format 12 (Subversion 1.7 or later; the working copy is in .svn/wc.db)"
    old = re.match(r"(\d{1,2})\n\ndir\n(\d+)\n(\S+)", text)
    if old:
        return f"format {old[1]}, revision {old[2]}, {_USERINFO.sub('***@', old[3])}"
    if "<wc-entries" in text and 'xmlns="svn:"' in text:
        return "XML entries (Subversion before 1.4)"
    return None


def _svn_wc_db(body: bytes) -> str | None:
    if body.startswith(b"SQLite format 3\0"):
        return "SQLite database (the working copy's wc.db)"
    return None


def _archive(body: bytes) -> str | None:
    if body.startswith(b"PK\x03\x04") and len(body) >= 30:
        size = int.from_bytes(body[26:28], "little")
        return f"zip archive, first entry '{body[30 : 30 + size].decode('utf-8', 'replace')}'"
    if body.startswith(b"\x1f\x8b\x08") and len(body) >= 10:
        flags, start = body[3], 10
        if flags & 0x04:  # FEXTRA: a length-prefixed field before the name
            start += 2 + int.from_bytes(body[10:12], "little")
        original = body[start:].split(b"\0", 1)[0] if flags & 0x08 else b""  # FNAME
        return "gzip data" + (f" of '{original.decode('latin-1')}'" if original else "")
    if body[257:262] == b"ustar":
        first = body[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        return f"tar archive, first entry '{first}'"
    magics = (
        (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
        (b"Rar!\x1a\x07", "RAR archive"),
        (b"\xfd7zXZ\0", "xz data"),
        (b"\x28\xb5\x2f\xfd", "zstd data"),
    )
    for magic, what in magics:
        if body.startswith(magic):
            return what
    if body.startswith(b"BZh") and body[4:10] == b"1AY&SY":
        return "bzip2 data"
    return _sql_dump(body)


_DUMP_HEADER = re.compile(
    r"^-- (?:MySQL dump|MariaDB dump|PostgreSQL database dump|phpMyAdmin SQL Dump|Adminer).*$",
    re.MULTILINE,
)
_STATEMENT = re.compile(
    r"^[ \t]*(?:CREATE TABLE(?: IF NOT EXISTS)?|INSERT INTO|COPY)[ \t]+([`\"\[]?[\w.]+)",
    re.MULTILINE | re.IGNORECASE,
)


def _sql_dump(body: bytes) -> str | None:
    text = _text(body)
    if text.lstrip().startswith("<") or _HTML.search(text[:4096]):
        return None  # an HTML page quoting SQL is not a dump
    header = _DUMP_HEADER.search(text)
    tables = list(dict.fromkeys(m[1].strip('`"[]') for m in _STATEMENT.finditer(text)))
    if not header and not tables:
        return None
    listed = f"tables {', '.join(tables[:8])}" if tables else "no statement in the first 64 KiB"
    return f"{header[0] if header else 'SQL statements'}; {listed}"


# [^<>]{1,64}: a tag name, bounded so that a "PHP Version</" without its ">" costs little
_PHP_VERSION = re.compile(
    r"PHP Version[ \t\n]{0,8}(?:</[^<>]{1,64}>[ \t\n]{0,8}<[^<>]{1,64}>[ \t\n]{0,8})?"
    r"(\d+\.\d+\.\d+[\w.+-]{0,32})"
)
_PHP_SYSTEM = re.compile(r'<td class="e">\s*System\s*</td>\s*<td class="v">([^<]*)<')


def _phpinfo(body: bytes) -> str | None:
    text = _text(body)
    version = _PHP_VERSION.search(text)
    system = _PHP_SYSTEM.search(text)
    titled = any("phpinfo()" in t.lower() for t in _TITLE.findall(text))
    if not version or not (titled or system):
        return None
    return f"PHP Version {version[1]}" + (f"; System {system[1].strip()}" if system else "")


_APACHE_H1 = re.compile(r"<h1>(Apache Server Status for [^<]*)</h1>")
_APACHE_FACT = re.compile(r"<dt>((?:Server Version|Server uptime|Total accesses):[^<]*)</dt>")
_NGINX_STATUS = re.compile(
    r"(Active connections: \d+) server accepts handled requests "
    r"(\d+ \d+ \d+) (Reading: \d+ Writing: \d+ Waiting: \d+)"
)
NGINX_STATUS_LIMIT = 512  # stub_status is about 100 bytes


def _server_status(body: bytes) -> str | None:
    text = _text(body)
    apache = _APACHE_H1.search(text)
    facts = _APACHE_FACT.findall(text)
    if apache and facts:
        return "; ".join([apache[1], *facts[:2]])
    # whitespace collapsed (linear) before matching, and only a small page: stub_status's
    nginx = (
        _NGINX_STATUS.fullmatch(" ".join(text.split()))
        if len(text) <= NGINX_STATUS_LIMIT and text.count("\n") >= 2
        else None
    )
    if nginx:
        return f"{nginx[1]}; accepts handled requests {nginx[2]}; {nginx[3]}"
    return None


# nginx autoindex, Apache mod_autoindex and lighttpd title the page "Index of /dir/" and repeat
# it in a heading; IIS titles it "host - /dir/" and links "[To Parent Directory]".
_INDEX_TITLE = re.compile(r"<title>\s*(Index of /[^<]*|Directory listing for /[^<]*)</title>")
_INDEX_HEADING = re.compile(r"<h[12]>\s*(?:Index of|Directory listing for) /")
# [^<]* stops at the next "<", so finding every title is one pass over the body
_TITLE = re.compile(r"<title>([^<]*)</title>", re.IGNORECASE)
_ENTRY = re.compile(r'<a href="([^"?#]+)"', re.IGNORECASE)


def _directory_listing(body: bytes) -> str | None:
    text = _text(body)
    title = _INDEX_TITLE.search(text)
    if title and (_INDEX_HEADING.search(text) or "Parent Directory" in text):
        where = title[1].strip()
    elif iis := _iis_listing(text):
        where = f"listing of {iis}"
    else:
        return None
    entries = [e for e in _ENTRY.findall(text) if e not in ("../", "/") and "://" not in e]
    entries = [e for e in entries if not where.endswith(e)]  # IIS links the parent by path
    shown = ", ".join(entries[:6]) + (", …" if len(entries) > 6 else "")
    return f"{where}: {len(entries)} entries" + (f" ({shown})" if shown else "")


def _iis_listing(text: str) -> str | None:
    """The directory of an IIS listing: a title "host - /dir/" with "[To Parent Directory]"
    after it. Plain string search per title (the last " - /" in it), no lookahead."""
    parent = text.rfind("[To Parent Directory]")
    for title in _TITLE.finditer(text):
        if title.end() > parent:
            return None
        cut = title[1].rfind(" - /")
        if cut >= 0:
            return title[1][cut + 3 :].strip()
    return None


# --- The table -------------------------------------------------------------------------------

_GIT = (
    "{path} is served: anyone can rebuild the portal's source code and history, with any "
    "password ever committed. Deny dot-directories in the web server (nginx: location ~ "
    "/\\.(?!well-known/) { deny all; }) and move the repository out of the webroot."
)
_ENV = (
    "{path} is served: it holds the application's settings and secrets (database password, "
    "keys). Deny dot-files in the web server, then change every secret it holds."
)
_SVN = (
    "{path} is served: anyone can download the portal's source code from the Subversion "
    "working copy. Deny dot-directories in the web server and remove .svn from the webroot."
)
_BACKUP = (
    "{path} is served and is a backup or dump: it gives away source code or the database. "
    "Remove it from the webroot (backups belong in the Art. 11 repository) and check the "
    "access log for who fetched it."
)
_PHPINFO = (
    "{path} runs phpinfo(): it shows PHP's version, modules, paths and environment to anyone. "
    "Delete the file."
)
_STATUS = (
    "{path} shows the web server's live status (connections, client addresses, URLs being "
    "served) to anyone. Allow it from 127.0.0.1 and the monitoring host only."
)
_LISTING = (
    "{path} lists its files: anyone can browse and download everything in it. Turn directory "
    "listing off (nginx: autoindex off; Apache: Options -Indexes)."
)

BACKUP_NAMES = (
    "backup.zip", "backup.tar.gz", "backup.rar", "www.zip", "www.tar.gz", "web.zip", "site.zip",
    "html.zip", "public_html.zip", "source.zip", "site.sql", "db.sql", "database.sql",
    "dump.sql", "backup.sql", "data.sql",
)  # fmt: skip
LISTED_DIRECTORIES = (
    "/uploads/", "/upload/", "/images/", "/files/", "/backup/", "/data/", "/documents/",
    "/wp-content/uploads/",
)  # fmt: skip


def _backup(path: str) -> PathCheck:
    return PathCheck(EXPOSURE.BACKUP_FILE, path, _archive, _BACKUP)


CHECKS: tuple[PathCheck, ...] = (
    PathCheck(EXPOSURE.GIT, "/.git/config", _git_config, _GIT),
    PathCheck(EXPOSURE.GIT, "/.git/HEAD", _git_head, _GIT),
    PathCheck(EXPOSURE.ENV, "/.env", _dotenv, _ENV),
    PathCheck(EXPOSURE.SVN, "/.svn/entries", _svn_entries, _SVN),
    PathCheck(EXPOSURE.SVN, "/.svn/wc.db", _svn_wc_db, _SVN),
    *(_backup(f"/{name}") for name in BACKUP_NAMES),
    PathCheck(EXPOSURE.PHPINFO, "/phpinfo.php", _phpinfo, _PHPINFO),
    PathCheck(EXPOSURE.PHPINFO, "/info.php", _phpinfo, _PHPINFO),
    PathCheck(EXPOSURE.SERVER_STATUS, "/server-status", _server_status, _STATUS),
    PathCheck(EXPOSURE.SERVER_STATUS, "/nginx_status", _server_status, _STATUS),
    *(
        PathCheck(EXPOSURE.DIRECTORY_LISTING, d, _directory_listing, _LISTING)
        for d in LISTED_DIRECTORIES
    ),
)

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def checks(domain: str) -> tuple[PathCheck, ...]:
    """CHECKS, then the archives named after the portal: for daotru.tamdao.vinhphuc.gov.vn
    /daotru.zip, /daotru.tar.gz, /daotru.sql and /daotru.tamdao.vinhphuc.gov.vn.zip ('www' is
    skipped: www.vinhphuc.gov.vn gives /vinhphuc.zip)."""
    host = domain.strip().lower().rstrip(".")
    labels = host.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ExposureInputError(f"'{domain}' is not a domain name (use Punycode for IDNs)")
    label = labels[1] if labels[0] == "www" and len(labels) > 2 else labels[0]
    own = (f"/{label}.zip", f"/{label}.tar.gz", f"/{label}.sql", f"/{host}.zip")
    known = {check.path for check in CHECKS}
    return CHECKS + tuple(_backup(path) for path in dict.fromkeys(own) if path not in known)


def paths(domain: str) -> list[str]:
    """Every path the prober must fetch for domain, in order, each once."""
    return list(dict.fromkeys(check.path for check in checks(domain)))


def not_found_path(nonce: str) -> str:
    """The path to fetch as the soft-404 baseline; nonce: fresh random hex, e.g. from
    secrets.token_hex(8), so that no cache or real page can answer it."""
    if not re.fullmatch(r"[0-9a-f]{8,64}", nonce):
        raise ExposureInputError(f"nonce '{nonce}' is not 8 to 64 lower-case hex digits")
    return f"/portalops-404-{nonce}"


_ARCHIVE_NAME = re.compile(r"/[a-z0-9][a-z0-9.-]*\.(?:zip|tar\.gz|sql)")


def judge(fetched: Sequence[Fetched], not_found: Fetched | None) -> list[Finding]:
    """Findings for what the prober fetched, in the order of paths().

    fetched: responses for paths from paths(domain); the archives named after a portal are
    recognised by their name, any other path is an error.
    not_found: the response for not_found_path(); a response (near-)identical to it is the
    server's answer to everything, never a finding. None when it could not be fetched: then
    only the matchers judge, and they are strict enough to stand alone.
    """
    table = {check.path: check for check in CHECKS}
    for response in fetched:
        if response.path not in table and _ARCHIVE_NAME.fullmatch(response.path):
            table[response.path] = _backup(response.path)
        elif response.path not in table:
            raise ExposureInputError(f"'{response.path}' is not a path that paths() gives")
    order = list(table)
    findings: dict[str, Finding] = {}
    for response in sorted(fetched, key=lambda f: order.index(f.path)):
        check = table[response.path]
        if not 200 <= response.status < 300:
            continue  # 3xx, 4xx and 5xx serve nothing worth reporting
        evidence = check.matcher(response.body)
        if evidence is None or (not_found and _same_page(response, not_found)):
            continue
        findings[check.path] = check.entry.finding(
            message=check.message.replace("{path}", check.path) + _size(response),
            evidence=excerpt(evidence, EVIDENCE_LIMIT),
            subject=check.path,
        )
    return list(findings.values())


def _size(response: Fetched) -> str:
    """' Size: 3.2 MiB.' from Content-Range's total or else Content-Length, when sent."""
    headers = {name.lower(): value for name, value in response.headers}
    total = headers.get("content-range", "").rpartition("/")[2] or headers.get("content-length")
    if not total or not total.strip().isdigit():
        return ""
    if int(total) < 1024:
        return f" Size: {total.strip()} bytes."
    return f" Size: {byte_size(int(total), largest='GiB')}."


# --- Soft-404 guard --------------------------------------------------------------------------

_VOLATILE = re.compile(r"[0-9a-f]{16,}|[A-Za-z0-9+/_-]{32,}={0,2}|\d+")
_WORD = re.compile(r"\w+")


def _skeleton(response: Fetched, *paths: str) -> str:
    """The body as text without what changes between two answers from the same template: the
    path echoed back, numbers, nonces and CSRF tokens; lower-cased, whitespace collapsed."""
    text = _text(response.body).lower()
    for path in (p.lower() for p in paths if len(p) > 1):  # with and without the slash
        text = text.replace(path, " ").replace(path[1:], " ")
    return " ".join(_VOLATILE.sub("0", text).split())


def _same_page(candidate: Fetched, not_found: Fetched) -> bool:
    """Near-identical: the same skeleton, or skeletons within 5 % in length sharing 80 % of
    their words. Length alone would not do: a 300-byte git config and a 300-byte 404 page
    have nothing else in common."""
    a = _skeleton(candidate, candidate.path, not_found.path)
    b = _skeleton(not_found, candidate.path, not_found.path)
    if a == b:
        return True
    if abs(len(a) - len(b)) > 0.05 * max(len(a), len(b)):
        return False
    words_a, words_b = set(_WORD.findall(a)), set(_WORD.findall(b))
    union = words_a | words_b
    return bool(union) and len(words_a & words_b) / len(union) >= 0.8
