"""The estate model: domains derived per Art. 3, and every validation error with FILE:LINE."""

import textwrap
import unicodedata
from pathlib import Path

import pytest

from portalops.core.errors import SourceError
from portalops.inventory.model import Estate, UnitKind, load_estate

DECISION_EXAMPLE = """\
province:
  name: Tỉnh Vĩnh Phúc
  zone: vinhphuc.gov.vn
  english: english
levels: 3
departments:
  - name: Sở Thông tin và Truyền thông
    slug: sotttt
districts:
  - name: Huyện Vĩnh Tường
  - name: Huyện Tam Đảo
    communes:
      - name: Xã Đạo Trù
      - name: Thị trấn Hợp Châu
"""


def write(tmp_path: Path, text: str, name: str = "units.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> Estate:
    return load_estate(write(tmp_path, text))


def problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(SourceError) as info:
        load_estate(path)
    return [p.replace(str(path), "F") for p in info.value.problems]


def test_decision_examples(tmp_path: Path) -> None:
    estate = load(tmp_path, DECISION_EXAMPLE)
    domains = {p.unit: p.domains for p in estate.portals}
    assert domains["Tỉnh Vĩnh Phúc"] == ("www.vinhphuc.gov.vn", "english.vinhphuc.gov.vn")
    assert domains["Sở Thông tin và Truyền thông"] == ("sotttt.vinhphuc.gov.vn",)
    assert domains["Huyện Vĩnh Tường"] == ("vinhtuong.vinhphuc.gov.vn",)
    assert domains["Xã Đạo Trù"] == ("daotru.tamdao.vinhphuc.gov.vn",)
    assert domains["Thị trấn Hợp Châu"] == ("hopchau.tamdao.vinhphuc.gov.vn",)
    assert estate.counts() == {"province": 1, "department": 1, "district": 2, "commune": 2}
    commune = estate.by_domain("daotru.tamdao.vinhphuc.gov.vn")
    assert commune is not None
    assert commune.parent == "Huyện Tam Đảo"
    assert commune.kind is UnitKind.COMMUNE
    assert commune.line == 13


def test_decomposed_file_is_read_as_nfc(tmp_path: Path) -> None:
    estate = load(tmp_path, unicodedata.normalize("NFD", DECISION_EXAMPLE))
    names = [p.unit for p in estate.portals]
    assert "Xã Đạo Trù" in names
    assert all(unicodedata.is_normalized("NFC", n) for n in names)


def test_slug_overrides_the_derived_label(tmp_path: Path) -> None:
    text = DECISION_EXAMPLE.replace(
        "  - name: Huyện Tam Đảo\n", "  - name: Huyện Tam Đảo\n    slug: td\n"
    )
    estate = load(tmp_path, text)
    assert estate.by_domain("daotru.td.vinhphuc.gov.vn") is not None


def test_two_levels_with_legacy_redirects(tmp_path: Path) -> None:
    estate = load(
        tmp_path,
        """\
        province: {name: Tỉnh Phú Thọ, zone: phutho.gov.vn, english: null}
        levels: 2
        communes:
          - name: Xã Đạo Trù
        legacy:
          - {from: daotru.tamdao.vinhphuc.gov.vn, to: daotru.phutho.gov.vn}
          - {from: www.vinhphuc.gov.vn, to: www.phutho.gov.vn}
        """,
    )
    province = estate.by_domain("www.phutho.gov.vn")
    assert province is not None
    assert province.domains == ("www.phutho.gov.vn",)
    assert province.legacy == ("www.vinhphuc.gov.vn",)
    commune = estate.by_domain("daotru.tamdao.vinhphuc.gov.vn")
    assert commune is not None
    assert commune.domain == "daotru.phutho.gov.vn"
    assert commune.parent == "Tỉnh Phú Thọ"
    assert estate.redirects == {
        "daotru.tamdao.vinhphuc.gov.vn": "daotru.phutho.gov.vn",
        "www.vinhphuc.gov.vn": "www.phutho.gov.vn",
    }


def test_collision_names_both_units_with_both_lines(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        province: {name: Tỉnh Vĩnh Phúc, zone: vinhphuc.gov.vn}
        districts:
          - name: Huyện Tam Đảo
            communes:
              - name: Xã Đạo Trù
              - name: Phường Đạo Trù
        """,
    )
    assert found == [
        "F:6: districts[0].communes[1]: 'Phường Đạo Trù' and 'Xã Đạo Trù' (F:5) both derive "
        "daotru.tamdao.vinhphuc.gov.vn; give one of them a 'slug'"
    ]


def test_department_slug_colliding_with_a_district(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        province: {name: Tỉnh Vĩnh Phúc, zone: vinhphuc.gov.vn}
        departments:
          - {name: Sở Tài chính, slug: tamdao}
        districts:
          - name: Huyện Tam Đảo
        """,
    )
    assert len(found) == 1
    assert found[0].startswith("F:5: districts[0]: 'Huyện Tam Đảo' and 'Sở Tài chính' (F:3)")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            """\
            province: {name: Tỉnh Vĩnh Phúc, zone: vinhphuc.gov.vn}
            departments:
              - name: Sở Nội vụ
            """,
            ["F:3: departments[0].slug: required key is missing"],
        ),
        (
            """\
            province: {name: Tỉnh Vĩnh Phúc, zone: vinhphuc.gov.vn}
            departments:
              - {name: Sở Nội vụ, slug: Sở-NV}
            """,
            [
                "F:3: departments[0].slug: slug 'Sở-NV' is not a valid DNS label "
                "(lower-case letters a-z, digits and inner hyphens only)"
            ],
        ),
        (
            """\
            province: {name: Tỉnh Vĩnh Phúc, zone: vinhphuc.gov.vn}
            districts:
              - name: Huyện Tam Đảo
                communes:
                  - name: "???"
            """,
            [
                "F:5: districts[0].communes[0].name: '???' leaves no letters or digits "
                "for a domain label"
            ],
        ),
        (
            f"""\
            province: {{name: Tỉnh Vĩnh Phúc, zone: vinhphuc.gov.vn}}
            districts:
              - name: Huyện {"Dài" * 30}
            """,
            [
                "F:3: districts[0].name: label '"
                + "dai" * 30
                + "' derived from 'Huyện "
                + "Dài" * 30
                + "' is 90 characters; a DNS label holds at most 63"
            ],
        ),
        (
            f"""\
            province: {{name: Tỉnh X, zone: {"a" * 60}.{"b" * 60}.{"c" * 60}.{"d" * 60}.gov.vn}}
            districts:
              - name: Huyện {"E" * 10}
            """,
            ["is 261 characters; a domain holds at most 253"],
        ),
        (
            """\
            province: {name: Tỉnh Phú Thọ, zone: phutho.gov.vn}
            levels: 2
            districts:
              - name: Huyện Tam Đảo
            """,
            [
                "F:3: districts: districts are abolished under 'levels: 2' (province / "
                "commune); list communes at the top level, or set 'levels: 3'"
            ],
        ),
        (
            """\
            province: {name: Tỉnh Vĩnh Phúc, zone: vinhphuc.gov.vn}
            levels: 3
            communes:
              - name: Xã Đạo Trù
            """,
            [
                "F:3: communes: communes directly under the province need 'levels: 2'; "
                "under 'levels: 3' list them under their district"
            ],
        ),
        (
            """\
            province: {name: Tỉnh Vĩnh Phúc, zone: vinhphuc.gov.vn}
            levels: 4
            """,
            ["F:2: levels: expected 2 or 3, got 4"],
        ),
        (
            """\
            province: {name: Tỉnh Vĩnh Phúc, zone: vinhphuc.gov.vn}
            legacy:
              - {from: old.vinhphuc.gov.vn, to: nowhere.vinhphuc.gov.vn}
            """,
            [
                "F:3: legacy[0].to: 'nowhere.vinhphuc.gov.vn' is not a domain of any unit "
                "in this file; 'ops inventory domains' lists them"
            ],
        ),
        (
            """\
            province: {name: Tỉnh Vĩnh Phúc, zone: vinhphuc.gov.vn}
            districts:
              - name: Huyện Tam Đảo
            legacy:
              - {from: tamdao.vinhphuc.gov.vn, to: www.vinhphuc.gov.vn}
            """,
            ["F:5: legacy[0].from: 'tamdao.vinhphuc.gov.vn' is the live domain of 'Huyện Tam Đảo'"],
        ),
        (
            """\
            province: {name: Tỉnh Vĩnh Phúc, zone: vinhphuc.gov.vn}
            distrits: []
            """,
            ["F:2: distrits: unknown key; did you mean 'districts'?"],
        ),
        (
            """\
            levels: 3
            """,
            ["F:1: province: required key is missing"],
        ),
        (
            """\
            province: {name: Tỉnh Vĩnh Phúc, zone: vinhphuc.gov.vn}
            districts:
              - name: Huyện Tam Đảo
              - name: Huyện Tam Đảo
                name: again
            """,
            ["F:5: districts[1].name: duplicate key (first written on line 4)"],
        ),
        (
            """\
            province: {name: Tỉnh Vĩnh Phúc, zone: vinhphuc.gov.vn
            districts: []
            """,
            ["YAML syntax error"],
        ),
        (
            """\
            province: {name: Tỉnh Vĩnh Phúc, zone: vinhphuc.gov.vn}
            districts:
              name: Huyện Tam Đảo
            """,
            ["F:2: districts: expected a list, got a mapping"],
        ),
    ],
)
def test_validation_errors(tmp_path: Path, text: str, expected: list[str]) -> None:
    found = problems(tmp_path, text)
    if len(expected) == 1 and not expected[0].startswith("F:"):
        assert any(expected[0] in p for p in found)
        assert all(p.startswith("F:") for p in found)
    else:
        assert found == expected


def test_all_problems_are_reported_together_in_line_order(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        province: {name: Tỉnh Vĩnh Phúc, zone: vinhphuc.gov.vn}
        districts:
          - name: Huyện Tam Đảo
            communes:
              - name: "!!"
          - name: "??"
        legacy:
          - {from: a.vinhphuc.gov.vn, to: b.vinhphuc.gov.vn}
        """,
    )
    assert [p.split(":")[1] for p in found] == ["5", "6", "8"]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "units.yaml"
    path.write_bytes(b"province:\n  name: T\xecnh\n")
    with pytest.raises(SourceError, match=r"units.yaml:2: not UTF-8"):
        load_estate(path)
