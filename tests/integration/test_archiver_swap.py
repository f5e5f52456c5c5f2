"""The archiver reads the file it listed, or nothing: a swap between lstat and open is a
vanished file, never another file's content under this name.

A backed-up directory others can write to (an uploads directory, a log directory) lets them
replace a file after the walk has listed it. The walk lstats a directory's entries first and
reads them afterwards (on its own thread, or on the reader threads); the test's archiver swaps
a file right after its lstat, before anything can open it, so the race is reproduced without
sleeping, on both paths.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from portalops.backup.archive.archiver import READERS, Archiver
from portalops.backup.repo.chunker import Chunker
from portalops.backup.repo.writer import BlobWriter
from tests.fixtures.backup_env import BackupEnv, repository

pytestmark = pytest.mark.integration

SECRET = b"root:$y$j9T$not-a-real-hash:19000:0:99999:7:::\n"


def swap_to_symlink(victim: Path, secret: Path) -> None:
    victim.unlink()
    victim.symlink_to(secret)


def swap_to_other_file(victim: Path, secret: Path) -> None:
    other = victim.with_name("other.tmp")
    other.write_bytes(SECRET)
    other.replace(victim)  # same name, another inode


def swap_to_fifo(victim: Path, secret: Path) -> None:
    victim.unlink()
    os.mkfifo(victim)


class SwappingArchiver(Archiver):
    """Swaps ``victim`` the moment its lstat returns: listed, not yet opened."""

    victim: bytes = b""
    swap: Callable[[], None] = staticmethod(lambda: None)

    def _lstat(self, path: bytes, *, listed: bool = False) -> os.stat_result | None:
        st = super()._lstat(path, listed=listed)
        if path == self.victim:
            self.swap()
        return st


@pytest.mark.parametrize("readers", [0, READERS], ids=["walk-reads", "reader-threads"])
@pytest.mark.parametrize("swap", [swap_to_symlink, swap_to_other_file, swap_to_fifo])
def test_a_file_swapped_after_listing_is_vanished_not_read(
    local_backup_env: BackupEnv,
    tmp_path: Path,
    swap: Callable[[Path, Path], None],
    readers: int,
) -> None:
    secret = tmp_path / "shadow"
    secret.write_bytes(SECRET)
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "a.txt").write_bytes(b"first, read before the swap\n")
    (uploads / "b.txt").write_bytes(b"second, swapped before it is read\n")
    # read in the same batch as b.txt, after it: one file's trouble is not its batch's
    (uploads / "c.txt").write_bytes(b"third, read after the swap\n")

    with repository(local_backup_env) as repo:
        repo.load_index()
        writer = BlobWriter(repo)
        chunker = Chunker(repo.writer.chunker_seed, repo.config.chunker)
        archiver = SwappingArchiver(writer, chunker, None, readers=readers)
        archiver.victim = os.fsencode(uploads / "b.txt")
        archiver.swap = lambda: swap(uploads / "b.txt", secret)
        try:
            archiver.archive([uploads])
            assert not writer.known(repo.writer.blob_id(SECRET))
            assert writer.known(repo.writer.blob_id(b"first, read before the swap\n"))
            assert writer.known(repo.writer.blob_id(b"third, read after the swap\n"))
        finally:
            writer.abort()
    assert archiver.stats.vanished == [str(uploads / "b.txt")]
    assert archiver.stats.files == 2
