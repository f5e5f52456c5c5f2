"""Our age implementation against pyrage (another implementation of the same format), both
ways; the real ``age`` binary is exercised by the repository integration tests. Malformed
files, as a hostile backup host could write them, must all raise AgeError (which callers turn
into a finding naming the object), never another exception."""

import contextlib
import os

import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portalops.backup.repo import age


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * 65536, 1_000_003])
def test_interoperates_with_pyrage(size: int) -> None:
    theirs = pyrage.x25519.Identity.generate()
    secret = age.parse_identity(str(theirs))
    public = age.parse_recipient(str(theirs.to_public()))
    assert age.public_key_string(secret.public_key()) == str(theirs.to_public())
    assert age.identity_string(secret) == str(theirs)
    data = os.urandom(size)
    assert pyrage.decrypt(age.encrypt(data, [public]), [theirs]) == data
    assert age.decrypt(pyrage.encrypt(data, [theirs.to_public()]), secret) == data


@pytest.mark.parametrize(
    "sizes",
    [[], [0], [10, 0, 5], [65536], [65536, 65536], [70_000, 1, 65535, 3], [100, 200_000, 7]],
    ids=str,
)
def test_a_pack_encrypted_from_its_pieces_is_their_join(sizes: list[int]) -> None:
    """A pack is encrypted from its blobs without joining them: chunks within one piece,
    across pieces and of empty pieces must all come out as the joined plaintext would."""
    theirs = pyrage.x25519.Identity.generate()
    pieces = [os.urandom(size) for size in sizes]
    joined = b"".join(pieces)
    handed = list(pieces)
    sealed = age.encrypt_buffer(handed, [age.parse_recipient(str(theirs.to_public()))])
    assert handed == []  # used up: each piece freed once encrypted
    assert len(sealed) == len(age.encrypt(joined, [age.parse_recipient(str(theirs.to_public()))]))
    assert pyrage.decrypt(bytes(sealed), [theirs]) == joined


def test_a_reused_buffer_holds_exactly_each_new_file() -> None:
    """The seal thread encrypts every pack into one buffer: larger, then smaller, then
    larger again, each result is exactly an age file of its own plaintext (no stale tail)."""
    theirs = pyrage.x25519.Identity.generate()
    recipient = [age.parse_recipient(str(theirs.to_public()))]
    buffer = bytearray(b"\xff" * 10)
    for size in (200_000, 70_000, 3, 300_000):
        plaintext = os.urandom(size)
        sealed = age.encrypt_buffer([plaintext], recipient, buffer)
        assert sealed is buffer
        assert len(sealed) == len(age.encrypt(plaintext, recipient))
        assert pyrage.decrypt(bytes(sealed), [theirs]) == plaintext


def test_several_recipients_and_the_wrong_key() -> None:
    one, two = (pyrage.x25519.Identity.generate() for _ in range(2))
    data = b"Xin chao"
    sealed = age.encrypt(data, [age.parse_recipient(str(i.to_public())) for i in (one, two)])
    for identity in (one, two):
        assert age.decrypt(sealed, age.parse_identity(str(identity))) == data
    stranger = age.parse_identity(str(pyrage.x25519.Identity.generate()))
    with pytest.raises(age.AgeError, match="no recipient"):
        age.decrypt(sealed, stranger)


def test_any_changed_byte_is_caught() -> None:
    theirs = pyrage.x25519.Identity.generate()
    secret = age.parse_identity(str(theirs))
    sealed = bytearray(age.encrypt(os.urandom(200_000), [secret.public_key()]))
    for position in (len(sealed) // 2, len(sealed) - 1, 40):
        damaged = bytearray(sealed)
        damaged[position] ^= 0x01
        with pytest.raises(age.AgeError):
            age.decrypt(bytes(damaged), secret)
    with pytest.raises(age.AgeError):
        age.decrypt(bytes(sealed[:-100]), secret)


def test_mistyped_keys_are_refused() -> None:
    public = str(pyrage.x25519.Identity.generate().to_public())
    typo = public[:-1] + ("q" if public[-1] != "q" else "p")
    with pytest.raises(age.AgeError, match="checksum"):
        age.parse_recipient(typo)
    with pytest.raises(age.AgeError):
        age.parse_identity(public)


# -- malformed input: every way it can be wrong is an AgeError ---------------------------------

_THEIRS = pyrage.x25519.Identity.generate()
_SECRET = age.parse_identity(str(_THEIRS))
_PLAIN = b"Xin chao, Vinh Phuc " * 5000  # two payload chunks
# One of ours and one of pyrage's (which adds a "grease" stanza of random type and length).
_GENUINE = (
    age.encrypt(_PLAIN, [_SECRET.public_key()]),
    pyrage.encrypt(_PLAIN, [_THEIRS.to_public()]),
)


def _header_end(sealed: bytes) -> int:
    return sealed.index(b"\n", sealed.index(b"\n---") + 1) + 1


def _decrypts_or_age_error(data: bytes) -> None:
    """The property: a changed file decrypts to the original (a change age cannot see, such
    as one in an ignored stanza) or raises AgeError; never another exception."""
    with contextlib.suppress(age.AgeError):
        assert age.decrypt(data, _SECRET) == _PLAIN


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.sampled_from(range(len(_GENUINE))),
    position=st.floats(0, 1),
    mutation=st.sampled_from(["flip", "replace", "insert", "delete", "truncate"]),
    stuff=st.binary(min_size=1, max_size=8)
    | st.text("ABCDEFabcdef0123456789+/=-> \n", min_size=1, max_size=8).map(str.encode),
    in_header=st.booleans(),
)
def test_mutated_files_raise_only_age_error(
    which: int, position: float, mutation: str, stuff: bytes, in_header: bool
) -> None:
    """Genuine files (ours and pyrage's), changed at random: flipped, replaced, inserted and
    deleted bytes and truncation, mostly in the header, where parsing happens."""
    genuine = _GENUINE[which]
    span = _header_end(genuine) if in_header else len(genuine)
    at = min(int(position * span), len(genuine) - 1)
    data = bytearray(genuine)
    if mutation == "flip":
        data[at] ^= stuff[0] or 1
    elif mutation == "replace":
        data[at : at + len(stuff)] = stuff
    elif mutation == "insert":
        data[at:at] = stuff
    elif mutation == "delete":
        del data[at : at + len(stuff)]
    else:
        del data[at:]
    _decrypts_or_age_error(bytes(data))


def _with_header(sealed: bytes, old: bytes, new: bytes) -> bytes:
    head = _header_end(sealed)
    assert old in sealed[:head]
    return sealed[:head].replace(old, new, 1) + sealed[head:]


def test_malformed_headers_name_what_is_wrong() -> None:
    sealed = _GENUINE[0]
    head = sealed[: _header_end(sealed)]
    mac = head.rsplit(b" ", 1)[1].strip()
    share = head.split(b"\n")[1].split(b" ")[2]
    body = head.split(b"\n")[2]
    cases = {
        "invalid base64 in the header MAC line": _with_header(sealed, mac, b"!" + mac[1:]),
        "the header MAC holds 30 bytes": _with_header(sealed, mac, mac[:40]),
        "non-canonical base64 in the header MAC line": _with_header(sealed, mac, mac + b"="),
        "invalid base64 in the X25519 stanza's share": _with_header(sealed, share, b"*" * 43),
        "an X25519 share holds 32 bytes, not 33": _with_header(sealed, share, b"A" * 44),
        "wraps a 16-byte file key in 32 bytes, not 33": _with_header(sealed, body, b"A" * 44),
        "stanza body line longer than 64 columns": _with_header(sealed, body, b"A" * 65),
        "malformed stanza line": _with_header(sealed, b"-> X25519", b"-- X25519"),
        "no recipient stanza": _with_header(sealed, b"-> X25519", b"-> other"),
        "truncated header": sealed[:30],
        "not an age file": b"age-encryption.org/v2\n" + sealed[22:],
    }
    for reason, data in cases.items():
        with pytest.raises(age.AgeError, match=reason):
            age.decrypt(data, _SECRET)


def test_a_file_key_of_another_length_is_refused() -> None:
    """A stanza that authenticates but wraps 17 bytes: age's file key is 16 bytes exactly."""
    ephemeral = X25519PrivateKey.generate()
    share = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    ours = _SECRET.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    wrap_key = age._hkdf(ephemeral.exchange(_SECRET.public_key()), share + ours, age.X25519_INFO)
    wrapped = ChaCha20Poly1305(wrap_key).encrypt(bytes(12), bytes(17), None)
    head = b"age-encryption.org/v1\n-> X25519 " + age._b64(share) + b"\n"
    head += age._b64(wrapped) + b"\n---"
    data = head + b" " + age._b64(bytes(32)) + b"\n" + bytes(16) + bytes(16)
    with pytest.raises(age.AgeError, match="16-byte file key"):
        age.decrypt(data, _SECRET)


@pytest.mark.parametrize("appended", [1, 15, 16, 17])
@pytest.mark.parametrize("chunks", [1, 2])
def test_bytes_appended_after_a_full_last_chunk_are_an_age_error(
    chunks: int, appended: int
) -> None:
    """A payload of whole 64 KiB chunks with bytes appended reads as one more chunk, too
    short to hold a tag (or holding nothing but one): refused as damaged before the output
    buffer is sized by it (it raised ValueError, an internal error, in restore)."""
    theirs = pyrage.x25519.Identity.generate()
    sealed = pyrage.encrypt(b"p" * (chunks * 65536), [theirs.to_public()])
    ours = age.parse_identity(str(theirs))
    with pytest.raises(age.AgeError):
        age.decrypt(sealed + b"\x00" * appended, ours)
