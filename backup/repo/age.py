"""The age file format (age-encryption.org/v1), X25519 recipients, on ``cryptography``.

Why not pyrage alone: measured on these machines, pyrage encrypts ~700 MB/s and holds the GIL
throughout, while ChaCha20-Poly1305 from ``cryptography`` runs at ~4 GB/s and releases it, so
sealing packs overlaps with reading and compressing. The format is the standard one: any
object decrypts with ``age -d -i identity.txt`` (tested against the real ``age`` binary and
pyrage in both directions).

Spec: https://age-encryption.org/v1 (header with one X25519 stanza per recipient, an HMAC
over the header, then a STREAM of 64 KiB ChaCha20-Poly1305 chunks).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterator
from functools import lru_cache
from typing import cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

INTRO = b"age-encryption.org/v1\n"
CHUNK = 64 * 1024
TAG = 16
FILE_KEY_SIZE = 16
MAC_SIZE = 32  # HMAC-SHA-256
COLUMNS = 64  # a stanza body line, in base64 characters
X25519_INFO = b"age-encryption.org/v1/X25519"


# This tool writes one stanza per recipient, and a repository has one or two; a header
# with many more is a writer making every reader try each against every identity it holds.
MAX_STANZAS = 16


class AgeError(ValueError):
    """Not an age file for these keys, or damaged."""


# -- keys (bech32, BIP 173) -----------------------------------------------------------------

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _polymod(values: list[int]) -> int:
    generator = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= generator[i] if (top >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert(data: bytes | list[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    acc = bits = 0
    out: list[int] = []
    maxv = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad and bits:
        out.append((acc << (to_bits - bits)) & maxv)
    elif not pad and (bits >= from_bits or (acc << (to_bits - bits)) & maxv):
        raise AgeError("invalid bech32 padding")
    return out


def bech32_encode(hrp: str, data: bytes) -> str:
    values = _convert(data, 8, 5, pad=True)
    polymod = _polymod([*_hrp_expand(hrp), *values, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[v] for v in values + checksum)


def bech32_decode(text: str, hrp: str) -> bytes:
    lowered = text.strip().lower()
    sep = lowered.rfind("1")
    if lowered[:sep] != hrp or sep < 1 or len(lowered) - sep < 7:
        raise AgeError(f"not a '{hrp}' key")
    try:
        values = [_CHARSET.index(c) for c in lowered[sep + 1 :]]
    except ValueError:
        raise AgeError("invalid bech32 character") from None
    if _polymod(_hrp_expand(hrp) + values) != 1:
        raise AgeError("bech32 checksum mismatch: the key is mistyped or damaged")
    return bytes(_convert(values[:-6], 5, 8, pad=False))


def public_key_string(public: X25519PublicKey) -> str:
    return bech32_encode("age", public.public_bytes_raw())


@lru_cache(maxsize=64)
def parse_recipient(text: str) -> X25519PublicKey:
    """The recipient's public key. Cached: every object a backup writes is encrypted to the
    same few recipients, and decoding bech32 in Python cost a quarter to a third of encrypting
    a small object (a failed parse raises and is not cached)."""
    raw = bech32_decode(text, "age")
    if len(raw) != 32:
        raise AgeError("an age X25519 recipient holds 32 bytes")
    return X25519PublicKey.from_public_bytes(raw)


def parse_identity(text: str) -> X25519PrivateKey:
    raw = bech32_decode(text, "age-secret-key-")
    if len(raw) != 32:
        raise AgeError("an age X25519 identity holds 32 bytes")
    return X25519PrivateKey.from_private_bytes(raw)


def identity_string(secret: X25519PrivateKey) -> str:
    raw = secret.private_bytes_raw()
    return bech32_encode("age-secret-key-", raw).upper()


# -- the format -----------------------------------------------------------------------------


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _unb64(text: bytes, what: str) -> bytes:
    """Unpadded, canonical base64 (age's header encoding) of ``what``; AgeError otherwise."""
    try:
        decoded = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except ValueError:  # binascii.Error
        raise AgeError(f"invalid base64 in the {what}") from None
    if _b64(decoded) != text:
        raise AgeError(f"non-canonical base64 in the {what}")
    return decoded


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _raw(public: X25519PublicKey) -> bytes:
    # The raw-bytes shortcuts, not public_bytes(Encoding.Raw, ...): importing
    # cryptography's serialization module (and the SSH and bcrypt code under it) cost every
    # backup command ~0.02 s of start-up.
    return public.public_bytes_raw()


def encrypt(data: bytes | memoryview, recipients: list[X25519PublicKey]) -> bytes:
    """``data`` as an age file to ``recipients``."""
    return bytes(encrypt_buffer(data, recipients))


def encrypt_buffer(
    data: bytes | memoryview | list[bytes] | list[bytes | memoryview],
    recipients: list[X25519PublicKey],
    into: bytearray | None = None,
) -> bytearray:
    """:func:`encrypt` into one preallocated buffer, each chunk encrypted in place: a 16 MiB
    pack costs its ciphertext once, not 64 KiB pieces plus their join. ``data`` may be a
    list of pieces to encrypt as if joined; the list is emptied as it is read, so each
    piece is freed once encrypted (a pack's blobs, never joined into one plaintext). A
    bytearray: callers that need ``bytes`` use :func:`encrypt`.

    ``into``: a buffer to reuse (resized to fit, and returned): a new 16 MiB bytearray is
    zeroed and faulted in while the GIL is held, a pause of every other thread for each
    pack sealed."""
    file_key = os.urandom(16)
    header = [INTRO]
    for recipient in recipients:
        ephemeral = X25519PrivateKey.generate()
        share = _raw(ephemeral.public_key())
        shared = ephemeral.exchange(recipient)
        wrap_key = _hkdf(shared, share + _raw(recipient), X25519_INFO)
        body = ChaCha20Poly1305(wrap_key).encrypt(bytes(12), file_key, None)
        header.append(b"-> X25519 " + _b64(share) + b"\n" + _b64(body) + b"\n")
    header.append(b"---")
    head = b"".join(header)
    mac = hmac.new(_hkdf(file_key, b"", b"header"), head, hashlib.sha256).digest()
    nonce = os.urandom(16)
    payload = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    prefix = b"".join([head, b" ", _b64(mac), b"\n", nonce])
    parts: list[bytes] | list[bytes | memoryview] = data if isinstance(data, list) else [data]
    size = sum(len(part) for part in parts)
    count = max(1, -(-size // CHUNK))
    length = len(prefix) + size + count * TAG
    if into is None:
        out = bytearray(length)
    else:
        out = into
        if len(out) > length:
            del out[length:]
        elif len(out) < length:
            out.extend(bytes(length - len(out)))
    out[: len(prefix)] = prefix
    target = memoryview(out)
    at = len(prefix)
    for i, piece in enumerate(_chunks(parts, size)):
        last = i == count - 1
        chunk_nonce = i.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
        payload.encrypt_into(chunk_nonce, piece, None, target[at : at + len(piece) + TAG])
        at += len(piece) + TAG
    return out


def _chunks(parts: list[bytes] | list[bytes | memoryview], size: int) -> Iterator[memoryview]:
    """The payload's 64 KiB chunks of ``parts`` joined (one empty chunk for no data): a view
    into a piece where a chunk lies within one, else copied into a staging buffer. Pieces
    are dropped from ``parts`` as they are used up."""
    if size == 0:
        parts.clear()
        yield memoryview(b"")
        return
    staging = memoryview(bytearray(CHUNK))
    pending = list(reversed(parts))  # popped one by one: a used piece has no reference left
    parts.clear()
    view = memoryview(b"")
    pos = 0  # read position in view
    done = 0
    while done < size:
        want = min(CHUNK, size - done)
        if len(view) - pos >= want:
            yield view[pos : pos + want]
            pos += want
        else:
            filled = 0
            while filled < want:
                if pos == len(view):
                    view, pos = memoryview(pending.pop()), 0
                    continue
                take = min(want - filled, len(view) - pos)
                staging[filled : filled + take] = view[pos : pos + take]
                filled += take
                pos += take
            yield staging[:want]
        done += want
        if pos == len(view):
            view, pos = memoryview(b""), 0  # this piece is used up: free it


def decrypt(data: bytes, identity: X25519PrivateKey | tuple[X25519PrivateKey, ...]) -> bytes:
    """The plaintext of an age file encrypted to ``identity`` (or to any of several); AgeError
    if it is not one, or if any byte was changed."""
    file_key, body_start = _unwrap(data, identity if isinstance(identity, tuple) else (identity,))
    if len(data) < body_start + 16:
        raise AgeError("truncated before the payload")
    nonce = data[body_start : body_start + 16]
    payload = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    view = memoryview(data)[body_start + 16 :]
    sealed = CHUNK + TAG
    count = max(1, -(-len(view) // sealed))
    last_size = len(view) - (count - 1) * sealed
    if last_size < TAG:  # checked before the buffer is sized by it: chunks would not fit
        raise AgeError(f"payload chunk {count - 1} fails authentication (damaged or truncated)")
    if last_size == TAG and count > 1:
        raise AgeError("empty final chunk")
    # Decrypted in place into one buffer: a 16 MiB pack costs 16 MiB once, not chunks + a join.
    out = bytearray(len(view) - count * TAG)
    target = memoryview(out)
    for i in range(count):
        last = i == count - 1
        piece = view[i * sealed : (i + 1) * sealed]
        if len(piece) < TAG:
            raise AgeError(f"payload chunk {i} fails authentication (damaged or truncated)")
        try:
            payload.decrypt_into(
                i.to_bytes(11, "big") + (b"\x01" if last else b"\x00"),
                piece,
                None,
                target[i * CHUNK : i * CHUNK + len(piece) - TAG],
            )
        except InvalidTag:
            raise AgeError(
                f"payload chunk {i} fails authentication (damaged or truncated)"
            ) from None
        if last and len(piece) == TAG and count > 1:
            raise AgeError("empty final chunk")
    # A bytearray, read as bytes by every caller: copying 16 MiB to make it bytes would double
    # a pack's memory for nothing.
    return cast(bytes, out)


def _unwrap(data: bytes, identities: tuple[X25519PrivateKey, ...]) -> tuple[bytes, int]:
    """The file key and where the payload starts. Every way a header can be malformed raises
    AgeError naming it: objects come from backup hosts, which may be hostile."""
    if not data.startswith(INTRO):
        raise AgeError("not an age file")
    end = data.find(b"\n---", len(INTRO) - 1)
    line_end = data.find(b"\n", end + 4)
    if end < 0 or line_end < 0:
        raise AgeError("truncated header")
    head = data[: end + 4]
    mac_line = data[end + 4 : line_end]
    if not mac_line.startswith(b" "):
        raise AgeError("malformed header MAC line")
    header_mac = _unb64(mac_line[1:], "header MAC line")
    if len(header_mac) != MAC_SIZE:
        raise AgeError(f"the header MAC holds {len(header_mac)} bytes, not {MAC_SIZE}")
    file_key = None
    stanzas = _stanzas(data[len(INTRO) : end + 1])
    if len(stanzas) > MAX_STANZAS:  # each one tried with every identity held: bounded work
        raise AgeError(f"{len(stanzas)} recipient stanzas, more than the {MAX_STANZAS} accepted")
    for args, body in stanzas:
        for identity in identities:
            if file_key is None and args[0] == b"X25519":
                file_key = _x25519_unwrap(args, body, identity)
    if file_key is None:
        raise AgeError("no recipient stanza matches this identity")
    mac = hmac.new(_hkdf(file_key, b"", b"header"), head, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, header_mac):
        raise AgeError("header MAC mismatch (damaged header)")
    return file_key, line_end + 1


def _stanzas(text: bytes) -> list[tuple[list[bytes], bytes]]:
    """Each stanza's arguments (after ``->``) and body: full 64-column lines of base64 then
    a shorter one. ``text`` ends with the newline before ``---``."""
    lines = text.split(b"\n")[:-1]
    if not lines:
        raise AgeError("the header holds no recipient stanza")
    stanzas = []
    i = 0
    while i < len(lines):
        args = lines[i].split(b" ")
        if args[0] != b"->" or len(args) < 2 or not all(args[1:]):
            raise AgeError("malformed stanza line")
        i += 1
        body = b""
        while True:
            if i == len(lines):
                raise AgeError("stanza body does not end with a short line")
            line = lines[i]
            i += 1
            if len(line) > COLUMNS:
                raise AgeError("stanza body line longer than 64 columns")
            body += line
            if len(line) < COLUMNS:
                break
        stanzas.append((args[1:], body))
    return stanzas


def _x25519_unwrap(args: list[bytes], body: bytes, identity: X25519PrivateKey) -> bytes | None:
    """The file key if this X25519 stanza is for ``identity``, else None."""
    if len(args) != 2:
        raise AgeError("an X25519 stanza has one argument")
    share = _unb64(args[1], "X25519 stanza's share")
    sealed = _unb64(body, "X25519 stanza's body")
    if len(share) != 32:
        raise AgeError(f"an X25519 share holds 32 bytes, not {len(share)}")
    if len(sealed) != FILE_KEY_SIZE + TAG:
        raise AgeError(
            f"an X25519 stanza wraps a {FILE_KEY_SIZE}-byte file key in {FILE_KEY_SIZE + TAG} "
            f"bytes, not {len(sealed)}"
        )
    try:
        shared = identity.exchange(X25519PublicKey.from_public_bytes(share))
    except ValueError:  # a low-order point: the shared secret is all zeros
        raise AgeError("an X25519 share is a low-order point") from None
    wrap_key = _hkdf(shared, share + _raw(identity.public_key()), X25519_INFO)
    try:
        return ChaCha20Poly1305(wrap_key).decrypt(bytes(12), sealed, None)
    except InvalidTag:
        return None  # a stanza for another recipient
