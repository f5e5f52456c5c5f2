"""Build the portal-ops wheel on the Ansible controller: ``build_wheel.py SOURCE OUT_DIR``.

The ops_agent role installs portal-ops on each host from this wheel. The build runs on a copy
of the source tree (an in-tree build would leave ``build/`` behind, and setuptools packs stale
files it finds there) with ``SOURCE_DATE_EPOCH`` fixed, so the same sources give the same bytes
and a second converge copies nothing. Prints the wheel's path on stdout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# What a wheel never holds: version control, virtualenvs, caches, the tests' npm tree.
IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
    "node_modules", "tests", "demo", "bench", "docs", "playbooks",
)  # fmt: skip
# 1980-01-01, the earliest time a zip entry can carry.
EPOCH = "315532800"


def build(source: Path, out: Path) -> Path:
    """Build the wheel of ``source`` into ``out`` and return its path."""
    tree = out / "src"
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(source, tree, ignore=IGNORE)
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out),
         str(tree)],
        env=env, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    shutil.rmtree(tree, ignore_errors=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).splitlines()[-20:])
        raise SystemExit(f"build_wheel: pip wheel {source} failed:\n{tail}")
    wheels = sorted(out.glob("portal_ops-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"build_wheel: expected one portal_ops wheel in {out}, found {wheels}")
    return wheels[0]


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: build_wheel.py SOURCE_DIR OUT_DIR", file=sys.stderr)
        return 2
    print(build(Path(argv[1]).resolve(), Path(argv[2]).resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
