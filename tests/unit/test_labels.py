"""Label derivation (Art. 3.3-3.4): the decision's examples and properties over any name."""

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portalops.inventory.labels import LabelError, check_fqdn, derive_label, is_valid_label


@pytest.mark.parametrize(
    ("name", "label"),
    [
        # The decision's own examples (Art. 3.4 b, c).
        ("Huyện Vĩnh Tường", "vinhtuong"),
        ("Xã Đạo Trù", "daotru"),
        ("Huyện Tam Đảo", "tamdao"),
        # Every type word is dropped.
        ("Tỉnh Vĩnh Phúc", "vinhphuc"),
        ("Thành phố Vĩnh Yên", "vinhyen"),
        ("Thị xã Phúc Yên", "phucyen"),
        ("Quận Ba Đình", "badinh"),
        ("Phường Liên Bảo", "lienbao"),
        ("Thị trấn Hợp Châu", "hopchau"),
        # ... unless only a number would remain.
        ("Phường 1", "phuong1"),
        ("Quận 12", "quan12"),
        # Case, punctuation and stray spaces.
        ("xã  Đại   Đình ", "daidinh"),
        ("ĐẠO TRÙ", "daotru"),
        ("Xã Ea H'leo", "eahleo"),
        ("Bà Rịa - Vũng Tàu", "bariavungtau"),
        # A name that merely starts with the letters of a type word keeps them.
        ("Xãxã", "xaxa"),
        ("Quảng Ninh", "quangninh"),
    ],
)
def test_examples(name: str, label: str) -> None:
    assert derive_label(name) == label


def test_decomposed_input_gives_the_same_label() -> None:
    nfd = unicodedata.normalize("NFD", "Xã Đạo Trù")
    assert nfd != "Xã Đạo Trù"
    assert derive_label(nfd) == "daotru"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("!!!", "no letters or digits"),
        ("Xã", None),  # only the type word: kept, becomes "xa"
        ("Huyện 北京", "no unaccented Latin form"),
        ("a" * 64, "at most 63"),
    ],
)
def test_bad_names(name: str, reason: str | None) -> None:
    if reason is None:
        assert derive_label(name) == "xa"
        return
    with pytest.raises(LabelError, match=reason):
        derive_label(name)


@given(st.text(max_size=80))
def test_any_name_gives_a_valid_label_or_a_clear_error(name: str) -> None:
    try:
        label = derive_label(name)
    except LabelError as exc:
        assert str(exc)
    else:
        assert is_valid_label(label)
        assert 1 <= len(label) <= 63


VIETNAMESE = st.text(
    alphabet=st.sampled_from(
        "aăâbcdđeêghiklmnoôơpqrstuưvxyáàảãạấầẩẫậắằẳẵặéèẻẽẹếềểễệíìỉĩịóòỏõọốồổỗộớờởỡợ"
        "úùủũụứừửữựýỳỷỹỵĐÂĂÔƠƯ 0123456789-'"
    ),
    min_size=1,
    max_size=40,
)


@given(VIETNAMESE)
def test_nfc_and_nfd_agree(name: str) -> None:
    def outcome(text: str) -> str:
        try:
            return derive_label(text)
        except LabelError as exc:
            return f"error: {exc}"

    assert outcome(unicodedata.normalize("NFC", name)) == outcome(
        unicodedata.normalize("NFD", name)
    )


@given(VIETNAMESE)
def test_vietnamese_names_always_fold_to_ascii(name: str) -> None:
    try:
        label = derive_label(name)
    except LabelError as exc:
        # Only a name with no letters or digits left may fail.
        assert "no letters or digits" in str(exc)
    else:
        assert label.isascii()
        assert is_valid_label(label)


def test_fqdn_length_limit() -> None:
    long = ".".join(["a" * 60] * 5) + ".vn"
    with pytest.raises(LabelError, match="at most 253"):
        check_fqdn(long, "domain")
    check_fqdn("daotru.tamdao.vinhphuc.gov.vn", "domain")
