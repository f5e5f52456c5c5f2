"""The loaded inputs of one CLI invocation: config and estate, each read once, on first use,
and the Environment (streams, terminal flags, clock) every command prints and reads time through.

The config is looked up as ``--config``, then ``$PORTAL_OPS_CONFIG``, then the system-wide
``/etc/portal-ops/ops.yaml`` (what the agent role installs), then ``config/ops.yaml`` in the
working directory or the checkout; with none of them, every section takes its safe default.
A file named explicitly (flag or variable) that is not there is an error, never a silent
fallback to another config.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from portalops.cli.environment import Environment
from portalops.core.errors import BadInput

if TYPE_CHECKING:
    # Imported where first used: the models cost a command that needs neither (``--help``,
    # ``completion``) a good part of its start-up.
    from portalops.backup.config import Backup
    from portalops.core.metrics_config import Metrics
    from portalops.core.validate import Strict
    from portalops.core.yamlsrc import YamlSource
    from portalops.inventory.model import Estate
    from portalops.oncall.config import Oncall
    from portalops.settings import Settings

log = logging.getLogger(__name__)

#: The top-level keys of ops.yaml (``Settings``'s fields, in order; a unit test holds them
#: together), and ``state_dir``'s default: what a command that reads one section checks of
#: the rest of the file without importing the other sections' models.
TOP_LEVEL_KEYS = ("state_dir", "metrics", "backup", "monitor", "drill", "oncall")
DEFAULT_STATE_DIR = Path("/var/lib/portal-ops")

# The checkout (config/, playbooks/, ansible.cfg beside the package); installed from a wheel,
# site-packages, where those are absent.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = Path("config/ops.yaml")
CONFIG_VARIABLE = "PORTAL_OPS_CONFIG"
DEFAULT_UNITS = Path("inventory/units.yaml")
# The estate shipped with the package: inventory/units.yaml in a checkout, and in a wheel too
# (portalops/inventory/units.yaml, package data).
# Located without importing portalops.inventory (whose __init__ builds the estate's models).
PACKAGED_UNITS = Path(__file__).parents[1] / "inventory" / "units.yaml"


def _resolve_default(relative: Path, *fallbacks: Path) -> Path | None:
    """The working directory's copy, else the checkout's, else the first fallback that exists."""
    for candidate in (Path.cwd() / relative, PROJECT_ROOT / relative, *fallbacks):
        if candidate.is_file():
            return candidate
    return None


def _exists(path: Path, named_by: str) -> bool:
    """Whether ``path`` is a file; a location we may not even look into is an error rather
    than "no config there" (a user who is not root, on a host configured for root)."""
    try:
        return path.is_file()
    except PermissionError:
        raise BadInput(
            f"{path}: permission denied ({named_by}); run as the user the config is for, "
            "or pass --config FILE"
        ) from None


def find_config(given: Path | None, env: Environment) -> tuple[Path | None, str]:
    """The config file to read and what chose it: --config, then $PORTAL_OPS_CONFIG, then
    the system-wide file, then config/ops.yaml here or in the checkout; (None, why) when
    there is none and the defaults apply."""
    named = env.environ.get(CONFIG_VARIABLE, "")
    for path, by in ((given, "--config"), (Path(named) if named else None, f"${CONFIG_VARIABLE}")):
        if path is None:
            continue
        if not _exists(path, by):
            raise BadInput(f"{path}: no such config file (named by {by})")
        return path, by
    system = env.system_config
    if system is not None and _exists(system, "the system-wide config"):
        return system, "the system-wide config"
    found = _resolve_default(DEFAULT_CONFIG)
    if found is not None:
        return found, f"default {DEFAULT_CONFIG}"
    looked = ", ".join(str(p) for p in (system, DEFAULT_CONFIG) if p is not None)
    return None, f"no --config, no ${CONFIG_VARIABLE}, no {looked}: every section at its default"


@dataclass
class Context:
    args: argparse.Namespace
    env: Environment = field(default_factory=Environment.from_process)
    # The whole command line's parser, for the commands that describe it (man page,
    # completion); None when a test builds a Context by hand.
    parser: argparse.ArgumentParser | None = None

    @cached_property
    def config_choice(self) -> tuple[Path | None, str]:
        """The config file (None: the built-in defaults) and what chose it."""
        path, why = find_config(self.args.config, self.env)
        log.info("config: %s (%s)", path if path is not None else "built-in defaults", why)
        return path, why

    @property
    def config_path(self) -> Path | None:
        return self.config_choice[0]

    @property
    def units_path(self) -> Path:
        given: Path | None = self.args.units
        if given is not None:
            return given
        # A missing default is reported by the loader with the path it looked at.
        return _resolve_default(DEFAULT_UNITS, PACKAGED_UNITS) or DEFAULT_UNITS

    @cached_property
    def settings(self) -> Settings:
        # An explicit config that does not exist is an error (config_path); no file at the
        # default locations means every section takes its safe default.
        from portalops.settings import load_settings

        return load_settings(self.config_path)

    @cached_property
    def _config_source(self) -> YamlSource | None:
        from portalops.core.yamlsrc import load_yaml

        path = self.config_path
        return None if path is None else load_yaml(path)

    def _one_section(self, name: str, model: type[Strict]) -> Strict:
        """ops.yaml validated as ``Settings`` is, but with only section ``name`` (and
        ``state_dir``) read: every other section passes unread, its models not even imported
        (most of the start-up of a short command is defining and building pydantic models).
        What is read is exactly as strict: the same models, locations and messages, and an
        unknown top-level key is still an error ("did you mean"). A command that reads several
        sections, or the checks across them (``drill.smoke``), uses :attr:`settings`."""
        from pydantic import create_model

        from portalops.core.validate import Strict, parse_model

        fields: dict[str, Any] = {key: (Any, None) for key in TOP_LEVEL_KEYS}
        fields["state_dir"] = (Path, DEFAULT_STATE_DIR)
        fields[name] = (model, model())
        partial = create_model("Settings", __base__=Strict, **fields)
        source = self._config_source
        return partial() if source is None else parse_model(partial, source)

    def _section(self, name: str, model: type[Strict]) -> Any:
        """Section ``name`` of ops.yaml: from :attr:`settings` when the whole file was read
        already, else validated alone (with ``state_dir`` and the top-level keys)."""
        if "settings" in self.__dict__:
            return getattr(self.settings, name)
        section = self._one_section(name, model)
        self.__dict__.setdefault("state_dir", section.state_dir)  # type: ignore[attr-defined]
        return getattr(section, name)

    @cached_property
    def backup_settings(self) -> Backup:
        """The ``backup`` section (with ``state_dir`` and the top-level keys checked)."""
        from portalops.backup.config import Backup

        return cast(Backup, self._section("backup", Backup))

    @cached_property
    def metrics_settings(self) -> Metrics:
        """The ``metrics`` section (with ``state_dir`` and the top-level keys checked)."""
        from portalops.core.metrics_config import Metrics

        return cast(Metrics, self._section("metrics", Metrics))

    @cached_property
    def oncall_settings(self) -> Oncall:
        """The ``oncall`` section (with ``state_dir`` and the top-level keys checked)."""
        from portalops.oncall.config import Oncall

        return cast(Oncall, self._section("oncall", Oncall))

    @cached_property
    def state_dir(self) -> Path:
        """``state_dir``, from whichever part of the config was read first."""
        return self.settings.state_dir

    @cached_property
    def estate(self) -> Estate:
        from portalops.inventory.model import load_estate

        return load_estate(self.units_path)
