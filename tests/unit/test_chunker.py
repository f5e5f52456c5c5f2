"""The chunker cuts the same bytes at the same points however they are handed to it: a file
read whole (``chunks_of``) and the same file streamed (``chunks``) must give the same blobs,
or a file that crosses the size where the archiver switches would lose its deduplication."""

from __future__ import annotations

import io
import random

import pytest

from portalops.backup.repo.chunker import Chunker
from portalops.backup.repo.repository import CHUNKER

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def data() -> bytes:
    return random.Random(17).randbytes(11 * MiB)


@pytest.mark.parametrize(
    "size", [0, 1, 256 * 1024, 256 * 1024 + 1, 3 * MiB + 5, 8 * MiB, 8 * MiB + 1, 11 * MiB]
)
def test_whole_and_streamed_cut_alike(data: bytes, size: int) -> None:
    chunker = Chunker(seed=987654321, params=CHUNKER)
    piece = data[:size]
    whole = [bytes(c) for c in chunker.chunks_of(piece)]
    streamed = [bytes(c) for c in chunker.chunks(io.BytesIO(piece))]
    assert whole == streamed
    assert b"".join(whole) == piece
    assert size < 2 * MiB or len(whole) > 1  # cut by content, not one blob
