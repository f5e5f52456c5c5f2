"""The wheel a portal server installs (the ops_agent role builds it the same way): one import
name, the estate's data inside it, and ``ops`` working away from any checkout.

The wheel goes into a fresh virtual environment without its dependencies; those come from the
project's venv through PYTHONPATH, which Python puts before the fresh venv's site-packages but
which holds no ``portalops`` of its own (the project's is an editable install, found through a
``.pth`` file that PYTHONPATH entries do not read), so the code that runs is the wheel's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.fixtures.paths import PROJECT

pytestmark = pytest.mark.integration

BUILD_WHEEL = PROJECT / "playbooks" / "roles" / "ops_agent" / "files" / "build_wheel.py"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built by the role's own script, as a converge builds it."""
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, str(BUILD_WHEEL), str(PROJECT), str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=True)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps"]
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True, timeout=300)
    return env_dir


def run_installed(env_dir: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    deps = sysconfig.get_paths()["purelib"]  # the project venv's: pydantic, PyYAML, rich, ...
    return subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "PYTHONPATH": deps, "LANG": "C.UTF-8"},
    )  # fmt: skip


def test_the_wheel_installs_one_import_name_with_the_estate_inside(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"portalops"}
    for module in ("backup/repo/pack.py", "monitors/probe.py", "inventory/model.py", "cli/main.py"):
        assert f"portalops/{module}" in names
    assert "portalops/inventory/units.yaml" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(wheel) as archive:
        assert "ops = portalops.cli.main:main" in archive.read(entry_points).decode()


def test_the_installed_ops_runs_outside_a_checkout(installed: Path, tmp_path: Path) -> None:
    where = run_installed(
        installed, str(installed / "bin" / "python"), "-c",
        "import portalops.backup.repo.pack as p; print(p.__file__)", cwd=tmp_path,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(installed)), where.stdout
    # the default estate is the one packed in the wheel, found from any working directory
    domains = run_installed(installed, "ops", "--json", "inventory", "domains", cwd=tmp_path)
    assert domains.returncode == 0, domains.stderr
    units = {d["unit"] for d in json.loads(domains.stdout)}
    assert "Tỉnh Vĩnh Phúc" in units
    module = run_installed(installed, str(installed / "bin" / "python"), "-m", "portalops",
                           "--version", cwd=tmp_path)  # fmt: skip
    assert module.returncode == 0, module.stderr
    assert module.stdout.startswith("portal-ops "), module.stdout


def test_the_wheel_holds_no_top_level_name_that_could_clash() -> None:
    """What a host's Python path gains is portalops and nothing else (no bare ``backup``)."""
    probe = subprocess.run(
        [sys.executable, "-c", "import backup"], cwd="/", capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert probe.returncode != 0
    assert "No module named 'backup'" in probe.stderr
