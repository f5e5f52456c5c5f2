"""``ops backup key add | list | remove``: who else can read a repository.

Every object is encrypted to the repository's recipient (the public half of the identity
``ops backup keygen`` wrote). Giving a second person, or a sealed copy in the safe, the right
to read does not re-encrypt anything: ``key add`` writes a *wrap*, the repository's identities
encrypted to the new age public key, under ``identities/<that key>/`` (FORMAT.md). Whoever
holds the matching private key sets it as ``backup.identity`` and reads everything, old and
new, with no re-upload. ``key remove`` deletes the wraps for a key: from then on that key
alone opens nothing. What it cannot undo: a holder who read the wrap has learnt the
repository's identity, which keeps opening everything written to it (docs/backup.md, "Keys:
who holds what").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from portalops.backup.repo import age
from portalops.backup.repo.keys import IDENTITIES, wrap_identities
from portalops.backup.repo.repository import Repository
from portalops.core.errors import BadInput

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
    """An age X25519 public key (``age1…``), exactly as typed; BadInput otherwise."""
    recipient = text.strip()
    try:
        age.parse_recipient(recipient)
    except ValueError as exc:
        raise BadInput(f"--recipient {text!r:.80} is not an age public key: {exc}") from None
    if not set(recipient.removeprefix("age1")) <= RECIPIENT_CHARS:
        raise BadInput(f"--recipient {text!r:.80}: write the key in lower case, as age does")
    return recipient


def add_recipient(repo: Repository, recipient: str, config_file: str) -> tuple[KeyHolder, bool]:
    """Write a wrap of every identity this host holds for ``recipient``; idempotent (a key
    that can read already gets nothing new). Returns the holder and whether it was written."""
    identity = repo.require_identity(config_file)
    holder = _holders(repo).get(recipient)
    if holder is not None:
        return holder, False
    stored = wrap_identities(identity, recipient)
    key = f"{IDENTITIES}{recipient}/{hashlib.sha256(stored).hexdigest()}"
    repo.storage.put(key, stored)
    return KeyHolder(recipient, "wrap", [key]), True


def list_holders(repo: Repository) -> list[KeyHolder]:
    return list(_holders(repo).values())


def remove_recipient(repo: Repository, recipient: str, config_file: str) -> KeyHolder:
    """Delete every wrap for ``recipient``. The repository's own recipient cannot be
    removed: every object is encrypted to it."""
    repo.require_identity(config_file)
    holder = _holders(repo).get(recipient)
    if holder is None:
        raise BadInput(f"repository {repo.name}: {recipient} holds no key to it")
    if holder.how == "recipient":
        raise BadInput(
            f"repository {repo.name}: {recipient} is the repository's own recipient (every "
            "object is encrypted to it): it cannot be removed, only added to"
        )
    for key in holder.objects:
        repo.storage.delete(key)
    return holder


def _holders(repo: Repository) -> dict[str, KeyHolder]:
    """The repository's recipients, then every key with a wrap, oldest wrap first. Names
    under identities/ are only claims (a writer can add objects there): listed as found."""
    holders = {r: KeyHolder(r, "recipient") for r in repo.config.recipients}
    infos = sorted(
        repo.storage.list(IDENTITIES),
        key=lambda i: (i.modified is None, i.modified.timestamp() if i.modified else 0.0),
    )
    for info in infos:
        recipient = info.key[len(IDENTITIES) :].split("/", 1)[0]
        holder = holders.setdefault(recipient, KeyHolder(recipient, "wrap", added=info.modified))
        if holder.how == "wrap":
            holder.objects.append(info.key)
    return holders
