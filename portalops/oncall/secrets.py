"""The on-call service's two secrets, each in a 0600 file created on first use.

- the **link key** signs acknowledge links (HMAC-SHA256 over incident number, the incident's
  random nonce, person and expiry), so a link in an e-mail acknowledges exactly one incident,
  for one person, until it expires; the nonce (kept in the database, never in the link)
  makes a link useless for a later incident that got the same number in a recreated
  database;
- the **webhook token** is the bearer token Alertmanager presents on ``/alertmanager``
  (``http_config.authorization.credentials_file`` in the rendered alertmanager.yml).

Neither is ever logged; a file readable by others is refused rather than used.

Channel URLs hold secrets too (passwords, bot tokens, ntfy topics, webhook paths):
:func:`remember_channels` collects every secret-bearing part of them and :func:`redact`
removes those exact strings from a log line, whatever library wrote it and at what level.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from portalops.core.errors import OpsError


class SecretFileError(OpsError):
    """the secret file {} {}"""


def load_or_create(path: Path) -> bytes:
    """The secret in ``path``; a new random one (0600) if the file does not exist."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SecretFileError(path, f"cannot be created: {exc.strerror}") from None
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretFileError(
                path, f"is readable by others (mode {stat.S_IMODE(mode):04o}); chmod 600 it"
            )
        value = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretFileError(path, f"cannot be read: {exc}") from None
    if len(value) < 16:
        raise SecretFileError(path, "holds fewer than 16 characters; delete it to regenerate")
    return value.encode("ascii")


#: ASCII digits only, at most 15 of them: ``str.isdigit`` accepts "²" and "٣", which int()
#: then refuses (or reads as another number).
_NUMBER = re.compile(r"[0-9]{1,15}")
#: a person's id as the config allows it, bounded
_PERSON = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{43}")


def parse_number(text: str) -> int | None:
    """``text`` as a non-negative int if it is one in ASCII digits; else None."""
    return int(text) if _NUMBER.fullmatch(text) else None


@dataclass(frozen=True)
class LinkSigner:
    key: bytes

    def signature(self, incident: int, nonce: str, person: str, expires: int) -> str:
        message = f"ack:{incident}:{nonce}:{person}:{expires}".encode()
        digest = hmac.new(self.key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def link(self, base_url: str, incident: int, nonce: str, person: str, expires: int) -> str:
        signature = self.signature(incident, nonce, person, expires)
        query = urlencode({"i": incident, "p": person, "e": expires, "s": signature})
        return f"{base_url.rstrip('/')}/ack?{query}"

    def verify(
        self, incident: int, nonce: str, person: str, expires: str, signature: str, now: float
    ) -> str:
        """'' if the link is good; else why it is refused (for the person holding it).
        ``nonce`` is the incident's as the database has it."""
        until = parse_number(expires)
        if until is None or not _PERSON.fullmatch(person) or not _SIGNATURE.fullmatch(signature):
            return "malformed"
        expected = self.signature(incident, nonce, person, until)
        if not hmac.compare_digest(expected, signature):
            return "bad signature"
        if until < now:
            return "expired"
        return ""


def token_matches(expected: bytes, header: str | None) -> bool:
    """Whether an ``Authorization: Bearer ...`` header carries the token (constant time).
    A header that is not ASCII (what a client may send; never a token of ours) is no match,
    not an error."""
    scheme, _, given = (header or "").partition(" ")
    try:
        presented = given.strip().encode("ascii")
    except UnicodeError:
        return False
    return scheme.lower() == "bearer" and hmac.compare_digest(presented, expected)


#: Query parameters of channel URLs that name no secret (addresses, modes, formats): their
#: values are not redacted, so log lines stay readable.
PUBLIC_QUERY_KEYS = frozenset(
    {"to", "from", "cc", "bcc", "mode", "format", "name", "smtp", "priority", "lang", "verify"}
)
#: Shorter parts are not taken for secrets (they would blank common words in every line);
#: a password is, from this length on.
MIN_SECRET, MIN_PASSWORD = 6, 4

_remembered: set[str] = set()
_pattern: list[re.Pattern[str]] = []  # the one pattern of them, replaced whole


def url_secrets(url: str) -> set[str]:
    """The parts of a channel URL that may be secret, as written and URL-decoded: the
    password; the user when there is no password (``https://TOKEN@host``); a host that is
    no host name (``tgram://BOT_TOKEN/``, ``ntfy://TOPIC``, Slack's ``T1JJ3T3L2``); a "port"
    that is no number (``tgram://123456789:AAH.../``: the bot token's second half); every
    path segment (ntfy topics, webhook tokens); every query value but
    :data:`PUBLIC_QUERY_KEYS`'.

    The netloc is split by hand, as written: ``urlsplit().hostname`` lower-cases (a
    mixed-case token would no longer match the log line) and ``.port`` refuses a
    ``host:token`` pair, so neither may decide what is secret."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL apprise could use either: the whole of it is the secret
        return {url} if len(url) >= MIN_SECRET else set()
    userinfo, at, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    found = {password} if password and len(unquote(password)) >= MIN_PASSWORD else set()
    if at and user and not password:
        found.add(user)
    if not hostport.startswith("["):  # an IPv6 literal is an address, never a token
        host, _, port = hostport.partition(":")
        if host and "." not in host and host.lower() != "localhost":
            found.add(host)
        if port and not port.isdigit():
            found.update({port, hostport})
    found.update(segment for segment in parts.path.split("/") if segment)
    for key, value in parse_qsl(parts.query, keep_blank_values=False):
        if key.lower().lstrip("+-:") not in PUBLIC_QUERY_KEYS:
            found.add(value)
    every = found | {unquote(part) for part in found}
    return {part for part in every if (password and part == password) or len(part) >= MIN_SECRET}


def remember_channels(urls: Iterable[str]) -> None:
    """Redact the secrets of these channel URLs from every log line from now on."""
    before = len(_remembered)
    for url in urls:
        _remembered.update(url_secrets(url))
    if len(_remembered) != before:
        longest_first = sorted(_remembered, key=len, reverse=True)
        _pattern[:] = [re.compile("|".join(re.escape(part) for part in longest_first))]


def redact(text: str) -> str:
    """``text`` with every remembered channel secret replaced by ``***``."""
    for pattern in list(_pattern):
        text = pattern.sub("***", text)
    return text
