"""The estate model: administrative units, their portals and the domains Art. 3 gives them."""

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
