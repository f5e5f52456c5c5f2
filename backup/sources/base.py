"""What every source kind shares: its name rules and its Art. 11.2 category.

A kind module (``files``, ``postgres``, ...) defines its config model with these; the registry
in ``portalops.backup.sources`` lists the kinds.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class Category(StrEnum):
    """Art. 11.2: what must be backed up every day."""

    CONFIG = "config"
    LOGS = "logs"
    CODE = "code"
    DATABASE = "database"
