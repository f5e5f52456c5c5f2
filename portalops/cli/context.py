"""The loaded inputs of one CLI invocation: config and estate, each read once, on first use,
and the Environment (streams, terminal flags, clock) every command prints and reads time through."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from portalops import inventory
from portalops.cli.environment import Environment
from portalops.inventory.model import Estate, load_estate
from portalops.settings import Settings, load_settings

# The checkout (config/, playbooks/, ansible.cfg beside the package); installed from a wheel,
# site-packages, where those are absent.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = Path("config/ops.yaml")
DEFAULT_UNITS = Path("inventory/units.yaml")
# The estate shipped with the package: inventory/units.yaml in a checkout, and in a wheel too
# (portalops/inventory/units.yaml, package data).
PACKAGED_UNITS = Path(inventory.__file__).parent / "units.yaml"


def _resolve_default(relative: Path, *fallbacks: Path) -> Path | None:
    """The working directory's copy, else the checkout's, else the first fallback that exists."""
    for candidate in (Path.cwd() / relative, PROJECT_ROOT / relative, *fallbacks):
        if candidate.is_file():
            return candidate
    return None


@dataclass
class Context:
    args: argparse.Namespace
    env: Environment = field(default_factory=Environment.from_process)

    @property
    def config_path(self) -> Path | None:
        given: Path | None = self.args.config
        return given if given is not None else _resolve_default(DEFAULT_CONFIG)

    @property
    def units_path(self) -> Path:
        given: Path | None = self.args.units
        if given is not None:
            return given
        # A missing default is reported by the loader with the path it looked at.
        return _resolve_default(DEFAULT_UNITS, PACKAGED_UNITS) or DEFAULT_UNITS

    @cached_property
    def settings(self) -> Settings:
        # An explicit --config that does not exist is an error; no file at the default
        # location means every section takes its safe default.
        return load_settings(self.config_path)

    @cached_property
    def estate(self) -> Estate:
        return load_estate(self.units_path)
