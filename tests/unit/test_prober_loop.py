"""The prober's event loop (``exporter.run``): uvloop's when it can be imported, asyncio's own
when it cannot (uvloop is a Linux-only dependency; the toolkit must run without it)."""

import asyncio
import sys

import pytest

from portalops.monitors.exporter import loop_factory, run


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_run_uses_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop")
    assert run(_loop_module()) == "uvloop"


def test_run_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what an import of a missing module does
    assert loop_factory() is None
    assert run(_loop_module()) == "asyncio"
