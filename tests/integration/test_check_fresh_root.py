"""``scripts/check-fresh-root`` refuses a DIR its cleanup could not handle safely.

The cleanup finds its mounts in the kernel's mount table, which escapes spaces and
backslashes and lists resolved paths, and then removes DIR with ``rm -rf``. A DIR spelled
otherwise than the table spells it, a DIR that is already a mount point or a system path,
would make it unmount the host's mounts or delete through its bind mounts. Each bad DIR must
be refused with exit 2 before anything is created, mounted or downloaded. No debootstrap runs
here: every case stops at the argument checks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check-fresh-root"


def run(dir_arg: str, cache: Path, *prefix: str) -> subprocess.CompletedProcess[str]:
    """Run the check on ``dir_arg`` with a cache directory that must stay uncreated."""
    return subprocess.run(
        [*prefix, str(SCRIPT), "--demo-only", "--cache", str(cache), dir_arg],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def assert_refused(result: subprocess.CompletedProcess[str], cache: Path, words: str) -> None:
    """Exit 2, a message naming the reason, and no cache directory created (nothing done)."""
    assert result.returncode == 2, result.stderr
    assert words in result.stderr, result.stderr
    assert not cache.exists()


@pytest.mark.parametrize("name", ["with space", "tab\there", "back\\slash", "new\nline"])
def test_refuses_characters_the_mount_table_escapes(tmp_path: Path, name: str) -> None:
    cache = tmp_path / "cache"
    target = tmp_path / name
    assert_refused(run(str(target), cache), cache, "refusing DIR")
    assert not target.exists()


def test_refuses_a_path_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    cache = tmp_path / "cache"
    result = run(str(tmp_path / "link" / "root"), cache)
    assert_refused(result, cache, "symlink")
    assert str(real / "root") in result.stderr  # it names the path to give instead
    assert not (real / "root").exists()


@pytest.mark.parametrize("path", ["/", "/dev/shm", "/dev/shm/fresh", "/etc/fresh", "/var/lib/x"])
def test_refuses_system_paths(tmp_path: Path, path: str) -> None:
    cache = tmp_path / "cache"
    assert_refused(run(path, cache), cache, "refusing")
    if path.endswith("fresh") or path == "/var/lib/x":
        assert not Path(path).exists()


def test_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    target = tmp_path / "full"
    target.mkdir()
    (target / "keep-me").write_text("x")
    cache = tmp_path / "cache"
    assert_refused(run(str(target), cache), cache, "not an empty directory")
    assert (target / "keep-me").read_text() == "x"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root")
def test_refuses_a_mount_point(tmp_path: Path) -> None:
    """An empty mount point (a tmpfs in a private mount namespace, the host untouched)."""
    target = tmp_path / "mnt"
    target.mkdir()
    cache = tmp_path / "cache"
    result = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount -t tmpfs fresh "$1" || exit 98; "$2" --demo-only --cache "$3" "$1"; rc=$?; '
            'mountpoint -q "$1" || rc=99; exit $rc',
            "sh",
            str(target),
            str(SCRIPT),
            str(cache),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert_refused(result, cache, "mount point")
    assert target.is_dir()
