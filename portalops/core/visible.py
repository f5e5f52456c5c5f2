"""Text from outside (a portal's reason phrase, a finding's message, a log line that quotes
one) made safe for a terminal or a line-oriented log: every control character is shown as an
escape, so that a hostile portal cannot clear the operator's terminal, set its title, hide
text behind bidi overrides or forge log lines."""

from __future__ import annotations

import re

# C0 except tab, DEL, C1, and the bidi marks and overrides
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with every control character shown as an escape (ESC as ``\\x1b``, a newline
    as ``\\x0a``)."""
    return _CONTROLS.sub(_escaped, text)


def has_controls(text: str) -> bool:
    """Whether :func:`visible` would change ``text``."""
    return _CONTROLS.search(text) is not None
