"""Our age implementation against pyrage (another implementation of the same format), both
ways; the real ``age`` binary is exercised by the repository integration tests."""

import os

import pyrage
import pytest

from backup import age


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
