"""``ops backup key add | list | remove | rotate``: who can read a repository, and a new key.

Every object is encrypted to the repository's recipient (the public half of the identity
``ops backup keygen`` wrote). Giving a second person, or a sealed copy in the safe, the right
to read does not re-encrypt anything: ``key add`` writes a *wrap*, the repository's identities
encrypted to the new age public key, under ``identities/<that key>/`` (FORMAT.md). Whoever
holds the matching private key sets it as ``backup.identity`` and reads everything, old and
new, with no re-upload. ``key remove`` deletes the wraps for a key: from then on that key
alone opens nothing. What it cannot undo: a holder who read the wrap has learnt the
repository's identity, which keeps opening everything written to it (docs/backup.md, "Keys:
who holds what"). ``key rotate`` makes a new identity and writer key for what is written
from then on (the id-key and chunker seed stay: blobs still deduplicate, nothing is
re-uploaded), wraps the old identities for the new one, and posts a recipients notice that
makes writers on the old key stop.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from portalops.backup.repo.keys import (
    IDENTITIES,
    MAX_NOTICE_OBJECT,
    MAX_NOTICES,
    NOTICES,
    Identity,
    WriterKey,
    create_identity,
    decode_notice,
    encode_notice,
    load_identity,
    load_writer_key,
    recipient_error,
    save_writer_key,
    wrap_identities,
)
from portalops.backup.repo.repository import Repository
from portalops.backup.repo.storage import ObjectInfo
from portalops.core.errors import BadInput
from portalops.core.timefmt import utc_now_z

RECIPIENT_CHARS = frozenset("023456789acdefghjklmnpqrstuvwxyz")  # bech32, as age writes it


@dataclass
class KeyHolder:
    """One age public key that can read the repository, and how."""

    recipient: str
    how: str  # "recipient": the repository's own; "wrap": through identities/
    objects: list[str] = field(default_factory=list)
    added: datetime | None = None  # the storage's time of its oldest wrap

    def to_json(self) -> dict[str, Any]:
        return {
            "recipient": self.recipient,
            "how": self.how,
            "objects": self.objects,
            "added": self.added,
        }


def checked_recipient(text: str) -> str:
    """An age X25519 public key (``age1…``), exactly as typed; BadInput otherwise (a secret
    key given by mistake is never repeated back)."""
    recipient = text.strip()
    error = recipient_error(recipient)
    if error is not None:
        raise BadInput(f"--recipient: {error}")
    if not set(recipient.removeprefix("age1")) <= RECIPIENT_CHARS:
        raise BadInput(f"--recipient {text!r:.80}: write the key in lower case, as age does")
    return recipient


def add_recipient(repo: Repository, recipient: str, config_file: str) -> tuple[KeyHolder, bool]:
    """Write a wrap of this host's identity file for ``recipient``. Always a new one (one
    already there cannot be checked: it is encrypted to someone else, and a backup host can
    plant junk under any name), except for this host's own key. Returns the holder and
    whether a wrap was written."""
    identity = repo.require_identity(config_file)
    if recipient == identity.public:
        return KeyHolder(recipient, "recipient"), False
    _require_repository_identity(repo, identity, "key add")
    stored = wrap_identities(identity, recipient)
    key = f"{IDENTITIES}{recipient}/{hashlib.sha256(stored).hexdigest()}"
    repo.storage.put(key, stored)
    holder = _holders(repo).get(recipient) or KeyHolder(recipient, "wrap", [key])
    return holder, True


def _require_repository_identity(repo: Repository, identity: Identity, command: str) -> None:
    """BadInput unless this host's own key is what the repository encrypts to (its config's
    recipients, or the newest rotation notice's): a host reading through a wrap would hand
    out its personal key, and leave out the repository's."""
    current = set(repo.config.recipients)
    notice = newest_notice(repo)
    if notice is not None:
        current |= set(notice[0])
    if identity.public not in current:
        raise BadInput(
            f"repository {repo.name}: this host's identity ({identity.public}) is not what the "
            f"repository encrypts to: it reads through a wrap, and '{command}' here would hand "
            "out this personal key. Run it on a host holding the repository's identity"
        )


def list_holders(repo: Repository) -> list[KeyHolder]:
    holders = list(_holders(repo).values())
    notice = newest_notice(repo)
    if notice is not None:
        recipients, when = notice
        for recipient in recipients:
            holders.append(KeyHolder(recipient, f"writers encrypt to it since {when}"))
    return holders


def newest_notice(repo: Repository) -> tuple[tuple[str, ...], str] | None:
    """The recipients (and time) of the newest recipients notice made with this repository's
    key, if ``key rotate`` ever wrote one."""
    infos = sorted(repo.storage.list(NOTICES), key=_by_time, reverse=True)
    for info in infos[:MAX_NOTICES]:
        if info.size > MAX_NOTICE_OBJECT:
            continue
        try:
            return decode_notice(
                repo.storage.get(info.key, max_size=MAX_NOTICE_OBJECT), repo.writer
            )
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class Rotated:
    recipient: str  # the new identity's public key
    identity_file: Path
    writer_key_file: Path
    resumed: bool  # both files were there from an earlier, interrupted rotation
    wraps: list[tuple[str, list[str]]]  # per repository: other keys whose wraps predate it


def rotate(
    repos: list[Repository], identity_file: Path, writer_key_file: Path, config_file: str
) -> Rotated:
    """A new identity and a new writer key (same id-key and chunker seed, so blobs still
    deduplicate; the new recipient only), a wrap of the identities held for the new one in
    each repository (it reads everything written before), then a recipients notice there
    (writers on the old key are refused from then on). Re-running it with the same two
    files finishes an interrupted rotation."""
    for repo in repos:
        _require_repository_identity(repo, repo.require_identity(config_file), "key rotate")
    first = repos[0].writer
    if any((r.writer.id_key, r.writer.chunker_seed) != (first.id_key, first.chunker_seed)
           for r in repos):  # fmt: skip
        raise BadInput(
            "these repositories were made with different writer keys: rotate them one "
            "writer key at a time (--repository)"
        )
    resumed = identity_file.exists() and writer_key_file.exists()
    if resumed:
        identity = load_identity(identity_file)
        writer = load_writer_key(writer_key_file)
        if writer.recipients != (identity.public,) or writer.id_key != first.id_key:
            raise BadInput(
                f"{identity_file} and {writer_key_file} exist but are not a rotation of these "
                "repositories; name new files"
            )
    else:
        for path in (identity_file, writer_key_file):
            if path.exists():
                raise BadInput(f"{path} already exists; name a new file")
        # The new file keeps the identities of the old one after its own: they open what
        # was written before, and 'key add' run with it wraps them too.
        held = repos[0].require_identity(config_file).file_secrets
        public = create_identity(identity_file, keep=held)
        writer = WriterKey(first.id_key, first.chunker_seed, (public,))
        save_writer_key(writer_key_file, writer)
    recipient = writer.recipients[0]
    others = []
    for repo in repos:
        # The wrap first: the new key reads everything before any writer switches to it.
        add_recipient(repo, recipient, config_file)
        notice = encode_notice(writer, utc_now_z())
        repo.storage.put(f"{NOTICES}{hashlib.sha256(notice).hexdigest()}", notice)
        wrapped = [h.recipient for h in _holders(repo).values()
                   if h.objects and h.recipient != recipient]  # fmt: skip
        others.append((repo.name, wrapped))
    return Rotated(recipient, identity_file, writer_key_file, resumed, others)


def _by_time(info: ObjectInfo) -> tuple[bool, float, str]:
    stamp = info.modified.timestamp() if info.modified else 0.0
    return (info.modified is None, stamp, info.key)


def remove_recipient(repo: Repository, recipient: str, config_file: str) -> KeyHolder | None:
    """Delete every wrap for ``recipient``; None if it has none here. This host's own key
    cannot be removed (it is what the data is encrypted to)."""
    identity = repo.require_identity(config_file)
    if recipient == identity.public:
        raise BadInput(
            f"{recipient} is this host's own identity: the data is encrypted to it; it "
            "cannot be removed, only rotated ('ops backup key rotate')"
        )
    holder = _holders(repo).get(recipient)
    if holder is None or not holder.objects:
        return None
    for key in holder.objects:
        repo.storage.delete(key)
    return holder


def _holders(repo: Repository) -> dict[str, KeyHolder]:
    """The repository's recipients, then every key with a wrap, oldest wrap first. Names
    under identities/ are only claims (a writer can add objects there): listed as found."""
    holders = {r: KeyHolder(r, "recipient") for r in repo.config.recipients}
    infos = sorted(repo.storage.list(IDENTITIES), key=_by_time)
    for info in infos:
        recipient = info.key[len(IDENTITIES) :].split("/", 1)[0]
        holder = holders.setdefault(recipient, KeyHolder(recipient, "wrap", added=info.modified))
        holder.objects.append(info.key)  # a config-named key too: remove takes them all
    return holders
