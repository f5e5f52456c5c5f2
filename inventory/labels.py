"""Turn a Vietnamese administrative unit's name into a DNS label (Art. 3.3-3.4).

"Huyện Vĩnh Tường" -> "vinhtuong", "Xã Đạo Trù" -> "daotru", "Phường 1" -> "phuong1".
"""

from __future__ import annotations

import re
import unicodedata

# Administrative type words that prefix a unit's name. Longest first, so "Thị xã" wins over a
# hypothetical shorter prefix. Matched case-insensitively at the start of the NFC name.
TYPE_WORDS = ("thành phố", "thị trấn", "thị xã", "phường", "huyện", "quận", "tỉnh", "xã")

MAX_LABEL = 63
MAX_FQDN = 253
_LDH_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class LabelError(ValueError):
    """A name that cannot become a DNS label; the message says why."""


def strip_type_word(name: str) -> str:
    """Drop a leading administrative type word unless only a number would remain."""
    for word in TYPE_WORDS:
        head, tail = name[: len(word)], name[len(word) :]
        if head.lower() == word and (not tail or tail[0].isspace()):
            rest = tail.strip()
            if rest and not rest.replace(" ", "").isdigit():
                return rest
            return name
    return name


def fold_diacritics(text: str) -> str:
    """Vietnamese without diacritics. đ/Đ are letters of their own, not d plus a mark, so
    Unicode decomposition leaves them alone: map them explicitly."""
    text = text.replace("đ", "d").replace("Đ", "D")
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")


def derive_label(name: str) -> str:
    """The DNS label for a unit name; raises LabelError if none can be made."""
    nfc = unicodedata.normalize("NFC", name).strip()
    base = strip_type_word(nfc)
    folded = fold_diacritics(base).lower()
    # Spaces and punctuation go; anything that is neither ASCII letter nor digit is left in
    # place for the check below to name, rather than silently dropped.
    label = "".join(ch for ch in folded if not (ch.isspace() or _is_punctuation(ch)))
    if not label:
        raise LabelError(f"'{nfc}' leaves no letters or digits for a domain label")
    bad = sorted({ch for ch in label if not (ch.isascii() and ch.isalnum())})
    if bad:
        shown = ", ".join(f"'{ch}' (U+{ord(ch):04X})" for ch in bad)
        raise LabelError(
            f"'{nfc}' has characters with no unaccented Latin form: {shown}; give a 'slug'"
        )
    check_label(label, what=f"label '{label}' derived from '{nfc}'")
    return label


def _is_punctuation(ch: str) -> bool:
    # P* = punctuation, S* = symbols (e.g. '+', '&'); both have no place in a label.
    return unicodedata.category(ch)[0] in "PS"


def is_valid_label(label: str) -> bool:
    """LDH rule (RFC 1035/1123): a-z, 0-9, inner hyphens, 1-63 characters."""
    return bool(_LDH_LABEL.match(label))


def check_label(label: str, what: str) -> None:
    if len(label) > MAX_LABEL:
        raise LabelError(f"{what} is {len(label)} characters; a DNS label holds at most 63")
    if not is_valid_label(label):
        raise LabelError(
            f"{what} is not a valid DNS label "
            "(lower-case letters a-z, digits and inner hyphens only)"
        )


def check_fqdn(fqdn: str, what: str) -> None:
    """Every label valid and the whole name within 253 characters."""
    if len(fqdn) > MAX_FQDN:
        raise LabelError(f"{what} '{fqdn}' is {len(fqdn)} characters; a domain holds at most 253")
    for label in fqdn.split("."):
        check_label(label, what=f"{what} '{fqdn}': label '{label}'")
