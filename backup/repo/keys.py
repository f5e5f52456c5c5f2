"""Keys: the identity (age private key) and the writer key (id-key, chunker seed, recipients).

A backup host holds only the writer key: it can hash and encrypt new data, but not decrypt
anything already in the repository. Restores, drills and ``check --read-data`` need the
identity, which lives on the drill host or offline.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import blake3
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from portalops.backup.repo import age
from portalops.core.atomic import write_atomic
from portalops.core.errors import BadInput, OpsError
from portalops.core.timefmt import utc_now_z

WRITER_KEY_KIND = "portal-ops writer key"
# Derivation contexts (BLAKE3 derive_key): each purpose gets its own key from the id-key.
INDEX_MAC_CONTEXT = "portal-ops 2026 index mac v1"
KEY_CHECK_CONTEXT = "portal-ops 2026 key check v1"
NOTICE_MAC_CONTEXT = "portal-ops 2026 recipients notice v1"


class KeyFileError(BadInput):
    """{}: {}"""


class RecipientsUntrusted(OpsError):
    """{}"""


class RecipientsRetired(OpsError):
    """repository {}: this writer key encrypts to {}, which 'ops backup key rotate' retired
    on {} (the repository's key is now {}): install the new writer key on this host (the
    ops_agent role's ops_agent_writer_key_file); backups with the old one are refused"""


class IdentityMissing(OpsError):
    """this needs the repository identity (private key), which is not configured here: set
    backup.identity in {} to the identity file written by 'ops backup keygen' (it belongs on
    the drill host or offline, never on a backup host)"""


@dataclass(frozen=True)
class WriterKey:
    """What a backup host holds: enough to add data, nothing to read it back."""

    id_key: bytes  # 32 bytes: keys the BLAKE3 blob ids and the index MAC
    chunker_seed: int  # alters FastCDC's gear table so cut points do not leak content
    recipients: tuple[str, ...]  # age public keys the data is encrypted to
    # Why nothing may be encrypted to ``recipients`` (recovered from a repository whose
    # config names keys this host does not know); None: they come from a trusted place.
    untrusted: str | None = None

    def blob_id(self, data: bytes | memoryview) -> bytes:
        return blake3.blake3(data, key=self.id_key).digest()

    @property
    def mac_key(self) -> bytes:
        return blake3.blake3(self.id_key, derive_key_context=INDEX_MAC_CONTEXT).digest()

    @property
    def notice_key(self) -> bytes:
        return blake3.blake3(self.id_key, derive_key_context=NOTICE_MAC_CONTEXT).digest()

    @property
    def fingerprint(self) -> str:
        """Names the id-key without revealing it; stored in the repository config."""
        return blake3.blake3(self.id_key, derive_key_context=KEY_CHECK_CONTEXT).hexdigest()[:32]

    def encrypt(self, data: bytes) -> bytes:
        self._check_recipients()
        return age.encrypt(data, [age.parse_recipient(r) for r in self.recipients])

    def _check_recipients(self) -> None:
        if self.untrusted is not None:
            raise RecipientsUntrusted(self.untrusted)

    def encrypt_pack(
        self, data: bytes | list[bytes | memoryview], into: bytearray | None = None
    ) -> bytes:
        """:meth:`encrypt` for packs: the age buffer itself (a bytearray, read as bytes by
        hashing and storage), not a 16 MiB copy of it; ``data`` may be the plaintext's
        pieces (emptied as they are encrypted, see ``age.encrypt_buffer``); ``into``, a
        buffer to reuse."""
        self._check_recipients()
        recipients = [age.parse_recipient(r) for r in self.recipients]
        return cast(bytes, age.encrypt_buffer(data, recipients, into))

    def to_json(self) -> dict[str, object]:
        return {
            "kind": WRITER_KEY_KIND,
            "version": 1,
            "id_key": self.id_key.hex(),
            "chunker_seed": self.chunker_seed,
            "recipients": list(self.recipients),
        }

    @classmethod
    def from_json(cls, doc: dict[str, object], where: str) -> WriterKey:
        try:
            if doc.get("kind") != WRITER_KEY_KIND or doc.get("version") != 1:
                raise ValueError("not a portal-ops writer key (version 1)")
            id_key = bytes.fromhex(str(doc["id_key"]))
            seed = doc["chunker_seed"]
            recipients = doc["recipients"]
            if len(id_key) != 32 or not isinstance(seed, int) or not isinstance(recipients, list):
                raise ValueError("malformed id_key, chunker_seed or recipients")
            for recipient in recipients:
                age.parse_recipient(str(recipient))
        except (KeyError, ValueError) as exc:
            raise KeyFileError(where, exc) from None
        return cls(id_key, seed, tuple(str(r) for r in recipients))


@dataclass(frozen=True)
class Identity:
    """The age private key: decrypts packs, trees, snapshots and the keys object. ``also``:
    the repository identities a wrap under ``identities/`` gave this one (``ops backup key
    add``), tried after it."""

    secret: X25519PrivateKey
    also: tuple[X25519PrivateKey, ...] = ()
    local: int = 1  # how many of (secret, *also) came from this host's identity file

    @property
    def file_secrets(self) -> list[str]:
        """The identities this host's own file holds (its own first, then older ones kept
        after a rotation): what ``key add`` may wrap. Keys from wraps are not among them:
        a backup host can plant a wrap."""
        return self.secrets[: self.local]

    @property
    def public(self) -> str:
        return age.public_key_string(self.secret.public_key())

    def to_string(self) -> str:
        return age.identity_string(self.secret)

    @classmethod
    def from_string(cls, text: str) -> Identity:
        return cls(age.parse_identity(text))

    def decrypt(self, data: bytes) -> bytes:
        """Raises age.AgeError when the object is not for this identity or is damaged."""
        return age.decrypt(data, (self.secret, *self.also))

    @property
    def secrets(self) -> list[str]:
        """Every identity held, own first, as AGE-SECRET-KEY strings."""
        return [age.identity_string(s) for s in (self.secret, *self.also)]


# The keys object (FORMAT.md: ``keys/<sha256>``, JSON ``{"id_key", "chunker_seed"}`` encrypted
# to the recipients) is ~300 bytes plus ~200 per recipient. Writers can add objects under
# keys/ too, so an identity-only admin reads them oldest first by the storage's time (on S3 a
# writer cannot date an object before the genuine one, written at init), at most this many
# of at most this size (a GET and a failed unwrap each: a second or two in all), and accepts
# only the one whose id-key has the repository config's fingerprint.
MAX_KEYS_OBJECT = 64 * 1024
MAX_KEY_CANDIDATES = 256
_HEX32 = re.compile(r"[0-9a-f]{64}")


def parse_keys_object(plaintext: bytes, recipients: tuple[str, ...]) -> WriterKey:
    """The writer key a decrypted keys object holds; ValueError naming what is wrong."""
    try:
        doc = json.loads(plaintext.decode("utf-8"))
    except (ValueError, RecursionError):  # RecursionError: nesting too deep
        raise ValueError("not UTF-8 JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    id_key, seed = doc.get("id_key"), doc.get("chunker_seed")
    if not isinstance(id_key, str) or not _HEX32.fullmatch(id_key):
        raise ValueError("id_key is not 32 bytes in hex")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 1 << 63:
        raise ValueError("chunker_seed is not a 63-bit number")
    return WriterKey(bytes.fromhex(id_key), seed, recipients)


# A wrap (FORMAT.md: ``identities/<recipient>/<sha256>``) gives the holder of another age key
# the repository's identities: ``ops backup key add``. A writer can add objects there too,
# but only ever hands a reader keys of its own making, which open nothing the reader's own
# identity does not: a reader takes at most MAX_WRAPS of at most MAX_WRAP_OBJECT bytes.
WRAP_KIND = "portal-ops repository identities"
IDENTITIES = "identities/"
MAX_WRAPS = 64
MAX_WRAP_OBJECT = 16 * 1024
MAX_WRAPPED = 16  # identities in one wrap: each rotation of the repository's key adds one


def wrap_identities(identity: Identity, recipient: str) -> bytes:
    """The identities of this host's identity file, encrypted to ``recipient`` (an age
    public key); never keys that came from a wrap (a backup host can plant those)."""
    doc = {"kind": WRAP_KIND, "version": 1, "identities": identity.file_secrets}
    return age.encrypt(json.dumps(doc).encode(), [age.parse_recipient(recipient)])


def recipient_error(text: str) -> str | None:
    """Why ``text`` is not an age public key, without repeating it when it is a secret."""
    if "SECRET-KEY" in text.upper():
        return (
            "that is a secret key (AGE-SECRET-KEY-…), not shown here: give its public key "
            "(age-keygen -y FILE)"
        )
    try:
        age.parse_recipient(text)
    except ValueError as exc:
        return f"{text!r:.80} is not an age public key: {exc}"
    return None


def parse_wrap(plaintext: bytes) -> list[X25519PrivateKey]:
    """The identities a decrypted wrap holds; ValueError naming what is wrong."""
    try:
        doc = json.loads(plaintext.decode("utf-8"))
    except (ValueError, RecursionError):
        raise ValueError("not UTF-8 JSON") from None
    if not isinstance(doc, dict) or doc.get("kind") != WRAP_KIND or doc.get("version") != 1:
        raise ValueError(f"not a {WRAP_KIND} object (version 1)")
    found = doc.get("identities")
    if not isinstance(found, list) or not found or len(found) > MAX_WRAPPED:
        raise ValueError(f"identities is not a list of 1 to {MAX_WRAPPED} keys")
    try:
        return [age.parse_identity(str(text)) for text in found]
    except ValueError:
        raise ValueError("holds something other than AGE-SECRET-KEY identities") from None


# A recipients notice (FORMAT.md: ``recipients/<sha256>``), written by ``ops backup key
# rotate``: the recipients writers must encrypt to from then on. MAC'd with a key derived
# from the id-key, which every writer holds: it stops a host left on a retired writer key by
# mistake, not one that wants to go on (that takes revoking its storage credentials).
NOTICES = "recipients/"
MAX_NOTICES = 64
MAX_NOTICE_OBJECT = 16 * 1024


def encode_notice(writer: WriterKey, when: str) -> bytes:
    body = json.dumps({"version": 1, "recipients": list(writer.recipients), "time": when})
    data = body.encode()
    return data + blake3.blake3(data, key=writer.notice_key).digest()


def decode_notice(data: bytes, writer: WriterKey) -> tuple[tuple[str, ...], str]:
    """The recipients and time a notice states; ValueError unless ``writer``'s id-key made it."""
    body, mac = data[:-32], data[-32:]
    if len(data) <= 32 or not hmac.compare_digest(
        blake3.blake3(body, key=writer.notice_key).digest(), mac
    ):
        raise ValueError("not made with this repository's key (MAC mismatch)")
    try:
        doc = json.loads(body.decode("utf-8"))
        recipients, when = doc["recipients"], doc["time"]
        if doc.get("version") != 1 or not isinstance(when, str) or not recipients:
            raise ValueError("not a recipients notice (version 1)")
        for recipient in recipients:
            age.parse_recipient(str(recipient))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ValueError(f"malformed: {exc}") from None
    return tuple(str(r) for r in recipients), when[:40]


def new_writer_key(recipients: list[str]) -> WriterKey:
    # FastCDC XORs the seed into its gear table (shifted left once): keep it within 63 bits.
    seed = secrets.randbits(63) | 1
    return WriterKey(secrets.token_bytes(32), seed, tuple(recipients))


def keygen(identity_path: Path, writer_key_path: Path, *, force: bool = False) -> tuple[str, str]:
    """Write a new identity and writer key (both 0600); return (public key, fingerprint)."""
    for path in (identity_path, writer_key_path):
        if path.exists() and not force:
            raise BadInput(
                f"{path} already exists; a new key cannot read backups made with the old one. "
                "Move it away first (or pass --force if you are sure)"
            )
    identity = Identity(X25519PrivateKey.generate())
    public = identity.public
    writer = new_writer_key([public])
    write_secret_file(identity_path, _identity_text(identity, "repository identity"))
    save_writer_key(writer_key_path, writer)
    return public, writer.fingerprint


def save_writer_key(path: Path, writer: WriterKey) -> None:
    write_secret_file(path, (json.dumps(writer.to_json(), indent=2) + "\n").encode())


def create_identity(path: Path, keep: list[str] | None = None) -> str:
    """Write a new age identity to ``path`` (created 0600, never over an existing file) for
    ``ops backup key add`` or ``key rotate``; ``keep``: older identities to hold after it.
    Returns its public key."""
    identity = Identity(X25519PrivateKey.generate())
    what = "identity (rotated: older ones follow)" if keep else "identity"
    text = _identity_text(identity, what) + b"".join(f"{k}\n".encode() for k in keep or ())
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise BadInput(f"{path} already exists; name a new file for the new identity") from None
    with os.fdopen(fd, "wb") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    return identity.public


def _identity_text(identity: Identity, what: str) -> bytes:
    return (
        f"# portal-ops {what}, created {utc_now_z()}\n"
        "# Keep this offline or on the drill host only. Anyone holding it can read every backup.\n"
        f"# public key: {identity.public}\n{identity.to_string()}\n"
    ).encode()


def write_secret_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (the temp file is 0600 from its first byte)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, 0o600)


def _read_secret_file(path: Path, key: str) -> bytes:
    try:
        info = path.stat()
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                path,
                f"permissions {stat.filemode(info.st_mode)} let others read this key "
                f"({key}); run: chmod 600 {path}",
            )
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(path, f"file not found (named by {key})") from None
    except PermissionError:
        raise KeyFileError(path, f"permission denied (named by {key})") from None


def load_writer_key(path: Path) -> WriterKey:
    raw = _read_secret_file(path, "backup.writer_key")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise KeyFileError(path, "not a portal-ops writer key (not JSON)") from None
    if not isinstance(doc, dict):
        raise KeyFileError(path, "not a portal-ops writer key")
    return WriterKey.from_json(doc, str(path))


def load_identity(path: Path) -> Identity:
    raw = _read_secret_file(path, "backup.identity").decode("utf-8", "replace")
    lines = [line.strip() for line in raw.splitlines()]
    secrets_ = [line for line in lines if line.startswith("AGE-SECRET-KEY-")]
    if not secrets_:
        raise KeyFileError(path, "no AGE-SECRET-KEY line: not an age identity file")
    try:
        # age takes several identities in one file; the first is this host's own
        keys = [age.parse_identity(line) for line in secrets_]
    except ValueError:
        raise KeyFileError(path, "an AGE-SECRET-KEY line is malformed") from None
    return Identity(keys[0], tuple(keys[1:]), local=len(keys))
