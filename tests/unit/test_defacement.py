"""Defacement watch (Art. 19): normalised text, baselines, markers and drift."""

import json
import time

import pytest

from portalops.monitors.defacement import (
    FORMAT,
    TEXT_LIMIT,
    Baseline,
    BaselineError,
    compare,
    drift,
    normalise,
    shingles,
    similarity,
)

URL = "https://daotru.tamdao.vinhphuc.gov.vn/"
TAKEN = "2026-11-28T06:00:00+07:00"

# A commune portal's news, newest first; a day brings a few new ones and pushes old ones off.
HEADLINES = [
    "UBND xã Đạo Trù tổ chức Hội nghị tổng kết công tác cải cách hành chính năm 2026",
    "Xã Đạo Trù ra quân tổng vệ sinh môi trường hưởng ứng phong trào Ngày Chủ nhật xanh",
    "Hội Nông dân xã tập huấn kỹ thuật trồng chè an toàn theo tiêu chuẩn VietGAP",
    "Thông báo lịch tiếp công dân của Chủ tịch UBND xã tháng 12 năm 2026",
    "Đoàn kiểm tra của huyện Tam Đảo làm việc về công tác xây dựng nông thôn mới nâng cao",
    "Triển khai cấp căn cước và định danh điện tử cho người dân trên địa bàn xã",
    "Ngày hội Đại đoàn kết toàn dân tộc tại thôn Đồng Giếng diễn ra sôi nổi",
    "Xã Đạo Trù chủ động phòng chống cháy rừng trong mùa hanh khô",
    "Hướng dẫn nộp hồ sơ trực tuyến trên Cổng dịch vụ công quốc gia",
    "Kết quả kỳ họp thứ mười Hội đồng nhân dân xã khóa XXI nhiệm kỳ 2021 - 2026",
    "Tăng cường công tác phòng chống dịch bệnh trên đàn gia súc gia cầm",
    "Trao quà cho các gia đình chính sách và hộ nghèo nhân dịp cuối năm",
    "Ban Chỉ huy quân sự xã tổ chức huấn luyện dân quân tự vệ năm 2026",
    "Tuyên truyền phòng chống lừa đảo qua mạng cho người cao tuổi",
    "Khánh thành nhà văn hóa thôn Tân Tiến bằng nguồn xã hội hóa",
    "Trường Tiểu học Đạo Trù đạt chuẩn quốc gia mức độ hai",
    "Xã triển khai kế hoạch chuyển đổi số giai đoạn 2026 - 2030",
    "Hội Liên hiệp Phụ nữ xã ra mắt mô hình phân loại rác thải tại nguồn",
    "Công khai danh sách hộ được hỗ trợ xóa nhà tạm nhà dột nát",
    "Lễ giao nhận quân năm 2026 diễn ra trang trọng và an toàn",
]
NEXT_DAY = [
    "Chủ tịch UBND huyện Tam Đảo thăm và làm việc tại xã Đạo Trù",
    "Xã Đạo Trù tổ chức diễn tập phòng thủ dân sự ứng phó thiên tai",
    "Thông báo tuyển dụng công chức cấp xã năm 2027",
    "Hội thi tìm hiểu pháp luật về đất đai dành cho cán bộ thôn",
]
NEW_WEEK = [
    "Đại hội Chi bộ thôn Đồng Bùa nhiệm kỳ 2027 - 2030 thành công tốt đẹp",
    "Xã Đạo Trù ký kết quy chế phối hợp với Đồn Công an xã về an ninh trật tự",
    "Người dân thôn Làng Mạ góp đất mở rộng đường giao thông nông thôn",
    "Nghiệm thu mô hình trồng cây dược liệu dưới tán rừng",
    "Kiểm tra an toàn thực phẩm tại các cơ sở kinh doanh dịp cuối năm",
    "Hướng dẫn đăng ký khai sinh trực tuyến liên thông ba thủ tục",
]


def portal_page(headlines: list[str], *, date: str, counter: str, online: str) -> str:
    items = "\n".join(
        f'<li><a href="/tin-tuc/{n}">{h}</a> <span class="date">({date})</span></li>'
        for n, h in enumerate(headlines, start=9100)
    )
    return f"""<!DOCTYPE html>
<html lang="vi"><head><meta charset="utf-8">
<title>Cổng thông tin điện tử xã Đạo Trù - huyện Tam Đảo - tỉnh Vĩnh Phúc</title>
<style>body {{ font-family: Arial; }} .menu li {{ display: inline; }}</style>
<script>var _portal = {{ visits: 1234567, now: "{date} 06:00" }};</script></head>
<body>
<!-- banner: cập nhật {date} -->
<div class="banner">Ủy ban nhân dân xã Đạo Trù</div>
<div class="topbar">Thứ Bảy, ngày {date} | 06:00 <span>Hotline: 0211.3896.123</span></div>
<ul class="menu"><li><a href="/">Trang chủ</a></li><li><a href="/gioi-thieu">Giới thiệu</a></li>
<li><a href="/tin-tuc">Tin tức - Sự kiện</a></li><li><a href="/van-ban">Văn bản chỉ đạo</a></li>
<li><a href="/thu-tuc">Thủ tục hành chính</a></li><li><a href="/lich">Lịch công tác</a></li>
<li><a href="/hoi-dap">Hỏi đáp</a></li><li><a href="/lien-he">Liên hệ</a></li></ul>
<div class="news"><h2>Tin tức nổi bật</h2><ul>
{items}
</ul></div>
<div class="sidebar"><h3>Liên kết</h3>
<a href="https://dichvucong.gov.vn">Cổng dịch vụ công quốc gia</a>
<a href="https://vinhphuc.gov.vn">Cổng thông tin điện tử tỉnh Vĩnh Phúc</a>
<a href="https://tamdao.vinhphuc.gov.vn">Huyện Tam Đảo</a>
<noscript>Trình duyệt của bạn không hỗ trợ JavaScript</noscript>
<div class="counter">Lượt truy cập: {counter}<br>Đang online: {online}<br>Hôm nay: 345</div></div>
<footer>Cơ quan chủ quản: Ủy ban nhân dân xã Đạo Trù, huyện Tam Đảo, tỉnh Vĩnh Phúc.
Địa chỉ: thôn Đồng Giếng, xã Đạo Trù. Điện thoại: 0211.3896.123. Email: daotru@vinhphuc.gov.vn.
Chịu trách nhiệm chính: Chủ tịch UBND xã. Ghi rõ nguồn khi phát hành lại thông tin.</footer>
</body></html>"""


TODAY = portal_page(HEADLINES, date="28/11/2026", counter="1.234.567", online="12")
TOMORROW = portal_page(
    NEXT_DAY + HEADLINES[:-4], date="29/11/2026", counter="1.236.002", online="31"
)
A_WEEK_LATER = portal_page(
    NEXT_DAY + NEW_WEEK + HEADLINES[:-10], date="05/12/2026", counter="1.251.880", online="7"
)
DEFACED = """<html><head><title>Hacked by XYZ team</title></head>
<body bgcolor="black"><center><font color="lime" size="7">Hacked by XYZ team</font>
<p>Your security is low. Patch your system!</p>
<p>Greetz: all members of Vietnamese Cyber Army - we were here</p>
<marquee>XYZ team was here</marquee></center>
<script>alert("owned")</script></body></html>"""
# What a hacked CMS often shows instead: the site's own template, the news list swapped for
# the defacers' message.
DEFACED_IN_TEMPLATE = portal_page(
    ["Website này đã bị hack bởi nhóm XYZ", "Liên hệ admin để chuộc lại dữ liệu"],
    date="29/11/2026",
    counter="1.236.002",
    online="1",
)


@pytest.fixture
def baseline() -> Baseline:
    return Baseline.take(URL, TODAY, TAKEN)


# --- Normalised text -------------------------------------------------------------------------


def test_normalise_keeps_visible_text_and_drops_what_changes() -> None:
    text = normalise(TODAY)
    assert text.startswith("ủy ban nhân dân xã đạo trù | hotline: trang chủ giới thiệu")
    for gone in ("28/11", "06:00", "1.234.567", "1234567", "lượt truy cập", "đang online",
                 "hôm nay", "345", "thứ bảy", "font-family", "_portal", "banner:", "javascript",
                 "0211", "cổng thông tin điện tử xã đạo trù - huyện"):  # fmt: skip
        assert gone not in text, gone
    assert "tin tức nổi bật ubnd xã đạo trù tổ chức hội nghị" in text
    assert "email: daotru@vinhphuc.gov.vn" in text


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<p>Thứ Bảy, ngày 28 tháng 11 năm 2026 - Tin mới</p>", "- tin mới"),
        ("<p>Cập nhật ngày 28/11/2026 lúc 23:05:12</p>", "cập nhật lúc"),
        ("<p>Posted 2026-11-28T23:05:12+07:00 and 2026-11-28</p>", "posted and"),
        ("<p>28-11-2026 | 28.11.2026 | 9h30 | 10:15 SA</p>", "| | |"),
        ("<p>Saturday, November 28, 2026 - 28 Nov 2026</p>", "-"),
        ("<p>Visitors: 1,234 Online: 5 Tổng truy cập 998877</p>", ""),
        ("<p>Số lượt truy cập: 123456 Hôm qua: 88</p>", ""),
        ("<p>Mã hồ sơ 000123456789</p>", "mã hồ sơ"),
    ],
)
def test_volatile_parts(html: str, expected: str) -> None:
    assert normalise(html) == expected


def test_normalise_is_nfc_and_lower_case() -> None:
    decomposed = "<h1>U\u0309y ban nhân dân XA\u0303 ĐẠO TRÙ</h1>"  # typed on a Mac: NFD
    assert normalise(decomposed) == "ủy ban nhân dân xã đạo trù"
    assert normalise("<p>hôm nay trời mưa</p><p>thứ hai của tháng</p>") == (
        "hôm nay trời mưa thứ hai của tháng"  # only counters and dates lose these words
    )


def test_tags_separate_words_but_inline_tags_do_not() -> None:
    assert normalise("<li>Trang chủ</li><li>Giới thiệu</li>") == "trang chủ giới thiệu"
    assert normalise("<b>Đ</b>ạo <template>x</template>Tr<span>ù</span><br>xã") == "đạo trù xã"


# --- Baselines -------------------------------------------------------------------------------


def test_baseline_round_trips_through_json(baseline: Baseline) -> None:
    doc = json.loads(json.dumps(baseline.to_json(), ensure_ascii=False))
    assert doc["format"] == FORMAT == 1
    assert doc["title"] == "cổng thông tin điện tử xã đạo trù - huyện tam đảo - tỉnh vĩnh phúc"
    assert set(doc) == {"format", "url", "taken_at", "title", "text"}
    again = Baseline.from_json(doc)
    assert again == baseline
    assert again.shingles == baseline.shingles
    assert len(baseline.shingles) == 381


def test_baseline_text_is_capped_on_a_word() -> None:
    html = "<p>" + "chuyển đổi số " * 3000 + "</p>"
    taken = Baseline.take(URL, html, TAKEN)
    assert len(taken.text) <= TEXT_LIMIT
    assert taken.text.endswith(("chuyển", "đổi", "số"))
    assert drift(taken, html) == 0.0  # the page is capped the same way when compared


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"format": 2}, "format 2 is not 1"),
        (["format", 1], "expected an object, got list"),
        ({"format": 1, "url": URL, "taken_at": TAKEN, "title": "x"}, "text: expected a string"),
        ({"format": 1, "url": URL, "taken_at": "hôm qua", "title": "", "text": ""}, "ISO 8601"),
    ],
)
def test_bad_baseline_documents(doc: object, message: str) -> None:
    with pytest.raises(BaselineError, match=message):
        Baseline.from_json(doc)  # type: ignore[arg-type]


# --- Drift -----------------------------------------------------------------------------------


def test_similarity_is_dice() -> None:
    a, b = shingles("một hai ba bốn năm"), shingles("một hai ba bốn sáu")
    assert sorted(a) == ["ba bốn năm", "hai ba bốn", "một hai ba"]
    assert similarity(a, b) == pytest.approx(2 * 2 / 6)
    assert similarity(frozenset(), frozenset()) == 1.0
    assert similarity(a, frozenset()) == 0.0


def test_same_page_next_minute_has_no_drift(baseline: Baseline) -> None:
    later = TODAY.replace("1.234.567", "1.234.601").replace("06:00", "06:01")
    assert drift(baseline, later) == 0.0
    assert compare(baseline, later) == []


def test_a_days_news_stays_under_the_threshold(baseline: Baseline) -> None:
    # Four of twenty headlines new, four old ones gone, date and counters moved on.
    assert 0.10 < drift(baseline, TOMORROW) < 0.20  # 0.146
    assert compare(baseline, TOMORROW) == []


def test_a_weeks_news_stays_under_the_default_but_not_a_strict_threshold(
    baseline: Baseline,
) -> None:
    # Ten of twenty headlines replaced: a baseline a week old on a busy commune portal.
    moved = drift(baseline, A_WEEK_LATER)
    assert 0.30 < moved < 0.45  # 0.364; Jaccard would say 0.534 and alert
    assert compare(baseline, A_WEEK_LATER) == []
    assert [f.code for f in compare(baseline, A_WEEK_LATER, threshold=0.3)] == ["defacement.drift"]


def test_defacement_page_drifts_all_the_way_and_shows_markers(baseline: Baseline) -> None:
    assert drift(baseline, DEFACED) == 1.0
    marker, moved = compare(baseline, DEFACED)
    assert (marker.code, marker.severity, marker.subject) == ("defacement.marker", "critical", URL)
    assert "'hacked by', 'greetz', 'was here', 'cyber army'" in marker.message
    assert marker.evidence == "title: hacked by xyz team"
    assert (moved.code, moved.severity) == ("defacement.drift", "critical")
    assert "100% of the home page's text differs" in moved.message
    assert moved.evidence.startswith("drift 1.00\n- ủy ban nhân dân xã đạo trù")
    assert "\n+ hacked by xyz team your security is low" in moved.evidence
    assert len(moved.evidence) <= 300


def test_a_page_of_one_repeated_word_is_judged_in_linear_time(baseline: Baseline) -> None:
    # "và" is common in the baseline; 20 KB of it took minutes with a sequence diff.
    page = "<html><body><p>" + "và " * 7000 + "</p></body></html>"
    started = time.process_time()
    (moved,) = compare(baseline, page)
    assert time.process_time() - started < 1.0  # about 0.05 s here
    assert moved.code == "defacement.drift"
    assert moved.evidence.startswith("drift 1.00\n- ")
    assert "\n+ và và và" in moved.evidence


def test_blank_runs_do_not_slow_the_volatile_patterns() -> None:
    # "online" then a long blank run: a \s* pattern retried over it would be quadratic
    page = "<p>" + "online " + " " * 200_000 + "x " * 10 + "</p>"
    started = time.process_time()
    assert normalise(page).startswith("online x x")
    assert time.process_time() - started < 1.0


def test_defacement_inside_the_template(baseline: Baseline) -> None:
    # Menu, sidebar and footer survive; only the news list was replaced.
    assert 0.55 < drift(baseline, DEFACED_IN_TEMPLATE) < 0.70  # 0.629
    marker, moved = compare(baseline, DEFACED_IN_TEMPLATE)
    assert marker.code == "defacement.marker"
    assert "'đã bị hack'" in marker.message
    assert "website này đã bị hack bởi nhóm xyz" in marker.evidence
    assert moved.code == "defacement.drift"


def test_markers_already_in_the_baseline_do_not_fire() -> None:
    # An English-channel page that has always said "owned by" in its footer.
    page = "<p>News of the day</p><footer>Website owned by the People's Committee</footer>"
    steady = Baseline.take(URL, page, TAKEN)
    assert compare(steady, page.replace("News of the day", "News of the week")) == []
    fresh = Baseline.take(URL, "<p>News of the day</p>", TAKEN)
    assert [f.code for f in compare(fresh, page, threshold=0.9)] == ["defacement.marker"]


def test_a_marker_in_the_title_alone_counts(baseline: Baseline) -> None:
    retitled = TODAY.replace("<title>Cổng thông tin", "<title>H4ck3d by Sh4d0w - Cổng thông tin")
    (found,) = compare(baseline, retitled)
    assert found.code == "defacement.marker"
    assert "'hacked by', 'h4ck3d'" in found.message
    assert found.evidence.startswith("title: h4ck3d by sh4d0w - cổng thông tin")


@pytest.mark.parametrize("threshold", [0, 1, -0.1, 1.5])
def test_threshold_must_be_a_fraction(baseline: Baseline, threshold: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        compare(baseline, TODAY, threshold)
