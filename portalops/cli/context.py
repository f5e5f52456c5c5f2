"""The loaded inputs of one CLI invocation: config and estate, each read once, on first use,
and the Environment (streams, terminal flags, clock) every command prints and reads time through."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from portalops.cli.environment import Environment
from portalops.inventory.model import Estate, load_estate
from portalops.settings import Settings, load_settings

# Where the project's own files live (the checkout, or the installed tree's data).
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = Path("config/ops.yaml")
DEFAULT_UNITS = Path("inventory/units.yaml")


def _resolve_default(relative: Path) -> Path | None:
    """The working directory's copy, else the project's own, else None."""
    for base in (Path.cwd(), PROJECT_ROOT):
        candidate = base / relative
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
        return _resolve_default(DEFAULT_UNITS) or DEFAULT_UNITS

    @cached_property
    def settings(self) -> Settings:
        # An explicit --config that does not exist is an error; no file at the default
        # location means every section takes its safe default.
        return load_settings(self.config_path)

    @cached_property
    def estate(self) -> Estate:
        return load_estate(self.units_path)
