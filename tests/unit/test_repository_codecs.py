"""Index and pack encodings: authentication, layout and damage detection, without storage."""

import os

import pytest
import zstandard

from backup.index import IndexFormatError, PackRecord, decode, encode
from backup.pack import (
    BlobType,
    Compression,
    PackBuilder,
    PackFormatError,
    PendingBlob,
    compress,
    decompress,
    read_header,
)


def _record() -> PackRecord:
    builder = PackBuilder()
    for i in range(5):
        data = os.urandom(1000) if i % 2 else b"Xin chao " * 200
        stored, comp = compress(data, zstandard.ZstdCompressor())
        builder.add(PendingBlob(bytes([i]) * 32, BlobType.DATA, stored, len(data), comp))
    plaintext, entries = builder.build()
    assert read_header(plaintext) == entries
    return PackRecord("packs/ab/" + "ab" * 32, len(plaintext), tuple(entries))


def test_index_round_trip_and_mac() -> None:
    key = os.urandom(32)
    record = _record()
    data = encode([record], key)
    assert list(decode(data, key)) == [record]
    with pytest.raises(IndexFormatError, match="MAC"):
        list(decode(data, os.urandom(32)))
    tampered = bytearray(data)
    tampered[5] ^= 1
    with pytest.raises(IndexFormatError, match="MAC"):
        list(decode(bytes(tampered), key))


def test_pack_layout_and_compression_choice() -> None:
    text = "Cổng thông tin điện tử tỉnh Vĩnh Phúc\n".encode() * 5000
    stored, comp = compress(text, zstandard.ZstdCompressor())
    assert comp is Compression.ZSTD
    assert len(stored) < len(text) // 10
    noise = os.urandom(1 << 20)
    stored, comp = compress(noise, zstandard.ZstdCompressor())
    assert comp is Compression.NONE
    assert stored == noise
    builder = PackBuilder()
    builder.add(PendingBlob(b"\x01" * 32, BlobType.TREE, b"{}", 2, Compression.NONE))
    plaintext, [entry] = builder.build()
    assert decompress(plaintext[entry.offset : entry.offset + entry.length], entry) == b"{}"
    with pytest.raises(PackFormatError):
        read_header(plaintext[:-1])
