"""``ops demo``, the README's first command, end to end on a fresh directory."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.fixtures.cli import run_ops
from tests.fixtures.paths import OPS_PY

pytestmark = pytest.mark.integration


def test_demo_backs_up_twice_and_drills(tmp_path: Path) -> None:
    # A real process: the demo prints its steps to sys.stdout as they run, and its drill
    # restores through a forkserver pool that would outlive an in-process call.
    demo = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, str(OPS_PY), "--json", "demo", "--dir", str(demo)],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] is True
    titles = [s["title"] for s in doc["steps"]]
    assert titles[0].startswith("Generate")
    assert titles[-1].startswith("Restore drill")
    assert all(s["exit_code"] == 0 for s in doc["steps"])
    # the test machine has PostgreSQL's server programs: the portal's database is a real one
    assert doc["database"] == "PostgreSQL (throwaway cluster)"
    drill = doc["steps"][-1]["output"]
    rows = {line.split()[0]: line.split() for line in drill.splitlines()[2:] if line.strip()}
    assert set(rows) == {"webroot", "nginx", "logs", "portal-db"}
    assert all(row[-1] == "ok" for row in rows.values()), drill  # result, no reason
    assert (demo / "repository" / "config").is_file()
    # the demo's cluster and the drill's are stopped and gone
    assert subprocess.run(["pgrep", "-u", "portal-ops-drill"], check=False).returncode == 1
    assert not list(Path(tempfile.gettempdir()).glob("portal-ops-drill-*"))
    # Run again: the directory is recreated, not refused.
    again = subprocess.run(
        [sys.executable, str(OPS_PY), "demo", "--dir", str(demo)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "Demo finished" in again.stdout


def test_demo_refuses_a_directory_that_is_not_a_demo(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("do not delete")
    done = run_ops("demo", "--dir", str(precious))
    assert done.returncode == 2
    assert "not a portal-ops demo directory" in done.stderr
    assert (precious / "data.txt").read_text() == "do not delete"
