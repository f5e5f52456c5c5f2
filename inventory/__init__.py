"""The estate model: administrative units, their portals and the domains Art. 3 gives them."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portalops.inventory.labels import LabelError, derive_label, is_valid_label
    from portalops.inventory.model import Estate, Portal, UnitKind, load_estate

__all__ = [
    "Estate",
    "LabelError",
    "Portal",
    "UnitKind",
    "derive_label",
    "is_valid_label",
    "load_estate",
]

# Where each name is defined: imported on first use (PEP 562), so that a light module of this
# package (targets' constants, for the CLI's parser) does not build the estate's models.
_HOMES = {
    "LabelError": "labels",
    "derive_label": "labels",
    "is_valid_label": "labels",
    "Estate": "model",
    "Portal": "model",
    "UnitKind": "model",
    "load_estate": "model",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
