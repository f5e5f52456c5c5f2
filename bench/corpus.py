#!/usr/bin/env python3
"""A deterministic corpus shaped like a portal server, and its deterministic "next day".

Used by ``bench/backup_vs_restic.py``; runnable on its own::

    python3 bench/corpus.py generate DIR [--size-gb 1.5 | --small] [--seed N]
    python3 bench/corpus.py next-day DIR [--seed N]

Layout (``--size-gb 1.5``: ~1.5 GB, ~25k files)::

    etc/nginx/sites-available/<site>.conf, etc/php/8.2/fpm/pool.d/<site>.conf     (config)
    var/www/<site>/public/{core,vendor,themes,modules}/...  PHP/JS/CSS/HTML-like code; every
        site carries its own copy of the same CMS core (a few files customised per site), as
        portal servers do, plus its own modules and theme                       (~10% of bytes)
    var/www/<site>/public/uploads/YYYY/MM/*.jpg|pdf|mp4   random bytes, 100 KB-50 MB (~56%)
    var/log/nginx/<site>.access.log, .access.log.1, .access.log.N.gz, .error.log  (~17%)
    var/backups/mysql/portal.sql   a mysqldump-style dump, extended INSERTs, Vietnamese text
                                                                                 (~17%)

Everything comes from ``random.Random`` seeded with the seed and a label, so the same size and
seed give the same bytes (and the same mtimes) on every machine. The next-day mutation never
writes into an existing inode: changed files are written to a temporary name and renamed over
the old one, so a hard-linked pristine copy of day 1 (which the benchmark keeps to re-run on
fresh repositories) stays intact.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

GENERATOR_VERSION = 1
DEFAULT_SIZE_GB = 1.5
SMALL_SIZE_GB = 0.15
DEFAULT_SEED = 20250601
GB = 1_000_000_000
MB = 1_000_000

# Day 1 is 2025-06-01 02:00 +07:00 (the nightly backup window); day 2 is one day later.
DAY1 = 1748718000
DAY = 86400
TZ_OFFSET = 7 * 3600

# Share of the corpus bytes per kind.
SHARE_CODE = 0.10
SHARE_LOGS = 0.17
SHARE_SQL = 0.17
SHARE_MEDIA = 1.0 - SHARE_CODE - SHARE_LOGS - SHARE_SQL
# Code files per byte of corpus: ~25k files for 1.5 GB.
CODE_FILES_PER_GB = 16_800
CORE_SHARE = 0.70  # of code files: the CMS core every site carries a copy of
SITES = (
    "www.vinhphuc.gov.vn",
    "english.vinhphuc.gov.vn",
    "sotttt.vinhphuc.gov.vn",
    "sogddt.vinhphuc.gov.vn",
    "vinhyen.vinhphuc.gov.vn",
    "tamdao.vinhphuc.gov.vn",
)
SITE_WEIGHTS = (0.34, 0.10, 0.16, 0.14, 0.14, 0.12)  # traffic and uploads
ROTATED_LOGS = 7  # access.log.2.gz .. access.log.8.gz
GZ_SHARE_OF_LOGS = 0.08  # on-disk share of the rotated .gz files among log bytes
WRITE_CHUNK = 8 << 20


def rng_for(seed: int, label: str) -> random.Random:
    """An independent, reproducible stream per purpose (str seeds hash with SHA-512)."""
    return random.Random(f"portalops-bench:{seed}:{label}")  # noqa: S311 - test data


# --------------------------------------------------------------------------- text material

_VI_TEXT = (
    "ủy ban nhân dân tỉnh huyện xã phường thị trấn thành phố sở ban ngành thông tin truyền "
    "báo cáo kế hoạch triển khai thực hiện công tác chuyển đổi số cải cách hành chính dịch vụ "
    "công trực tuyến mức độ người dân doanh nghiệp hồ sơ thủ tục giải quyết tiếp nhận kết quả "
    "văn bản quyết định chỉ thị nghị quyết hướng dẫn quy định theo điều khoản năm tháng ngày "
    "về việc của các và cho trong những được đã sẽ đang tại với từ đến này đó một hai ba nhiều "
    "phát triển kinh tế xã hội giáo dục đào tạo y tế văn hóa thể thao du lịch nông nghiệp môi "
    "trường tài nguyên giao thông vận tải xây dựng khoa học công nghệ an ninh quốc phòng trật "
    "tự an toàn hội nghị tổng kết sơ kết phong trào thi đua khen thưởng cán bộ công chức viên "
    "chức lao động việc làm bảo hiểm chính sách đất đai quy hoạch đầu tư dự án ngân sách thuế "
    "phí lệ phí tuyên truyền phổ biến pháp luật kiểm tra thanh tra giám sát đánh giá chất lượng "
    "hiệu quả nâng cao tăng cường đẩy mạnh đồng bộ hiện đại minh bạch trách nhiệm lãnh đạo chủ "
    "tịch phó giám đốc trưởng phòng đồng chí nhân dịp kỷ niệm chào mừng đại hội đảng bộ nhiệm "
    "kỳ mới đoàn công tác làm việc thăm hỏi tặng quà gia đình chính sách hộ nghèo khó khăn vùng "
    "sâu vùng xa miền núi dân tộc thiểu số học sinh sinh viên trường tiểu học trung học cơ sở "
    "phổ thông bệnh viện trạm tuổi cao sức khỏe phòng chống dịch bệnh thiên tai bão lũ mưa lớn "
    "sản xuất vụ lúa cây trồng vật nuôi chăn nuôi thủy sản làng nghề sản phẩm ocop thương mại "
    "điện tử hạ tầng mạng dữ liệu số hóa nền tảng ứng dụng cổng thông tin điện tử trang thành "
    "viên tin tức sự kiện thông cáo báo chí lịch công tác tuần tiếp công dân khiếu nại tố cáo "
    "phản ánh kiến nghị trả lời hỏi đáp tra cứu tình trạng biểu mẫu tải về liên hệ địa chỉ "
    "điện thoại thư ghi chú tổng hợp số liệu thống kê tăng giảm so với cùng kỳ đạt vượt chỉ tiêu"
)
VI_SYLLABLES = tuple(_VI_TEXT.split())

_CODE_TEXT = (
    "get set user post article render cache config portal menu news category init load query "
    "db request response template view field value id list item page module block search lang "
    "admin auth token session upload file image media date format url route handler event data "
    "node widget banner slider gallery document notice schedule comment rating vote poll form "
    "submit validate sanitize escape filter sort limit offset count total meta seo title slug "
    "content summary author status publish draft archive feed rss sitemap breadcrumb footer "
    "header sidebar layout theme asset style script permission role group log audit backup"
)
CODE_WORDS = tuple(_CODE_TEXT.split())

HTTP_PATHS_BASE = (
    "/",
    "/tin-tuc",
    "/thong-bao",
    "/van-ban",
    "/lich-cong-tac",
    "/hoi-dap",
    "/dich-vu-cong",
    "/gioi-thieu",
    "/lien-he",
    "/tim-kiem",
    "/sitemap.xml",
    "/rss",
    "/en",
)
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{v} like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-A{v}5F) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
    "coccocbot-web/1.0 (+http://help.coccoc.com/searchengine)",
    "Zalo/{v} (Android 13)",
)


class TextPools:
    """Pools of lines and sentences, built once per seed, from which files are cut."""

    def __init__(self, seed: int) -> None:
        rng = rng_for(seed, "pools")
        weights = [1.0 / (rank + 1) ** 0.9 for rank in range(len(VI_SYLLABLES))]
        cum = list(_accumulate(weights))
        picks = rng.choices(VI_SYLLABLES, cum_weights=cum, k=60_000 * 16)
        sentences: list[str] = []
        at = 0
        for _ in range(60_000):
            n = rng.randint(6, 26)
            words = picks[at : at + n]
            at += n
            if at + 26 > len(picks):
                at = 0
            sentence = " ".join(words)
            sentences.append(sentence[:1].upper() + sentence[1:] + ".")
        self.sentences = sentences
        self.idents = [
            rng.choice(CODE_WORDS) + rng.choice(CODE_WORDS).capitalize() for _ in range(3000)
        ]
        self.classes = [
            rng.choice(CODE_WORDS).capitalize() + rng.choice(CODE_WORDS).capitalize()
            for _ in range(800)
        ]
        self.lines: dict[str, list[bytes]] = {
            lang: [line.encode() for line in self._code_lines(rng, lang, 25_000)]
            for lang in ("php", "js", "css", "html")
        }

    def text(self, rng: random.Random, n_sentences: int) -> str:
        return " ".join(rng.choices(self.sentences, k=n_sentences))

    def _code_lines(self, rng: random.Random, lang: str, n: int) -> Iterator[str]:
        ids, cls = self.idents, self.classes
        for _ in range(n):
            a, b, c = rng.choice(ids), rng.choice(ids), rng.choice(ids)
            k = rng.choice(cls)
            ind = "    " * rng.choice((0, 1, 1, 2, 2, 2, 3))
            r = rng.randrange(12)
            if lang == "php":
                yield (
                    ind
                    + (
                        f"${a} = $this->{b}->{c}('{rng.choice(CODE_WORDS)}', ${b});",
                        f"if (!empty(${a}['{b}']) && ${c} !== null) {{",
                        "}",
                        f"return ${a};",
                        f"public function {a}(array ${b}, ?{k} ${c} = null): array",
                        f"foreach (${a} as ${b} => ${c}) {{",
                        f"${a}[] = {k}::{b}(${c}, {rng.randrange(1000)});",
                        f"// {rng.choice(self.sentences)}",
                        f" * @param {k} ${a} {rng.choice(self.sentences)}",
                        f"throw new \\RuntimeException(sprintf('{a}: %s', ${b}));",
                        f"$sql = 'SELECT * FROM {b} WHERE {c}_id = ? LIMIT {rng.randrange(100)}';",  # noqa: S608
                        "",
                    )[r]
                )
            elif lang == "js":
                yield (
                    ind
                    + (
                        f"const {a} = document.querySelector('.{b}-{c}');",
                        f"function {a}({b}, {c}) {{",
                        "});",
                        f"return {a}.map(({b}) => {b}.{c});",
                        f"if ({a} && {a}.{b} > {rng.randrange(100)}) {{",
                        f"$('#{a}').on('click', function (e) {{",
                        f"fetch('/api/{b}/' + {c}).then((r) => r.json()).then({a});",
                        f"// {rng.choice(self.sentences)}",
                        f"{a}.{b} = {{ {c}: {rng.randrange(10000)}, label: '{rng.choice(ids)}' }};",
                        "}",
                        f"export default {k};",
                        "",
                    )[r]
                )
            elif lang == "css":
                yield (
                    f".{a}-{b} .{c} {{",
                    f"  margin: {rng.randrange(40)}px {rng.randrange(40)}px;",
                    f"  color: #{rng.randrange(1 << 24):06x};",
                    "}",
                    f"  font: {rng.randrange(10, 32)}px/{rng.randrange(12, 40)}px Roboto, sans;",
                    f"@media (max-width: {rng.choice((480, 768, 992, 1200))}px) {{",
                    f"  background: url(../images/{a}.png) no-repeat;",
                    f"#{a} > li.{b}:hover {{",
                    f"  padding: {rng.randrange(30)}px;",
                    "  display: flex;",
                    f"/* {rng.choice(self.sentences)} */",
                    "",
                )[r]
            else:
                yield (
                    ind
                    + (
                        f'<div class="{a} {b}">',
                        "</div>",
                        f'<a href="/{b}/{c}.html" title="{rng.choice(self.sentences)}">',
                        f"<p>{rng.choice(self.sentences)}</p>",
                        f"{{% if {a}.{b} %}}",
                        "{% endif %}",
                        f'<li class="{c}"><span>{{{{ {a}.{b}|e }}}}</span></li>',
                        f'<img src="/uploads/{b}.jpg" alt="{rng.choice(self.sentences)}">',
                        f"<h2>{rng.choice(self.sentences)}</h2>",
                        f"{{% for {a} in {b} %}}",
                        "{% endfor %}",
                        "",
                    )[r]
                )


def _accumulate(values: Sequence[float]) -> Iterator[float]:
    total = 0.0
    for v in values:
        total += v
        yield total


def code_bytes(pools: TextPools, rng: random.Random, lang: str, relpath: str, size: int) -> bytes:
    """A code file of about ``size`` bytes: a unique header, then runs of pool lines."""
    lines = pools.lines[lang]
    header = {
        "php": f"<?php\n/**\n * {relpath}\n * @package Portal\\{rng.choice(pools.classes)}\n"
        f" * @version {rng.randrange(1, 6)}.{rng.randrange(20)}.{rng.randrange(50)}\n */\n\n",
        "js": f"/*! {relpath} v{rng.randrange(1, 6)}.{rng.randrange(20)} */\n'use strict';\n\n",
        "css": f"/* {relpath} */\n",
        "html": f"{{# {relpath} #}}\n",
    }[lang].encode()
    parts = [header]
    total = len(header)
    while total < size:
        start = rng.randrange(len(lines))
        run = lines[start : start + rng.randint(3, 40)]
        parts.extend(run)
        total += sum(map(len, run)) + len(run)
    return b"\n".join(parts) + b"\n"


def code_size(rng: random.Random) -> int:
    return int(min(250_000, max(120, rng.lognormvariate(math.log(2600), 1.1))))


# --------------------------------------------------------------------------- logs

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class LogMaker:
    """nginx "combined" access-log lines with varied clients, paths and times."""

    FMT = '%s - - [%s] "%s %s HTTP/%s" %s %d "%s" "%s"\n'

    def __init__(self, seed: int, site: str, pools: TextPools) -> None:
        rng = rng_for(seed, f"logs-setup:{site}")
        self.site = site
        self.ips = [
            f"{rng.choice((14, 27, 42, 113, 115, 116, 117, 118, 123, 171, 183, 203, 222))}."
            f"{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            for _ in range(4000)
        ]
        ip_weights = [1.0 / (i + 1) ** 0.7 for i in range(len(self.ips))]
        self.ip_cum = list(_accumulate(ip_weights))
        paths: list[str] = []
        for _ in range(6000):
            base = rng.choice(HTTP_PATHS_BASE)
            kind = rng.randrange(5)
            if kind == 0:
                paths.append(base)
            elif kind == 1:
                slug = "-".join(rng.choices(pools.idents, k=rng.randint(3, 9))).lower()
                paths.append(
                    f"/tin-tuc/{rng.randrange(2019, 2026)}/{slug}-{rng.randrange(10**6)}.html"
                )
            elif kind == 2:
                paths.append(
                    f"/uploads/{rng.randrange(2019, 2026)}/{rng.randrange(1, 13):02d}/"
                    f"{rng.choice(pools.idents).lower()}-{rng.randrange(10**5)}.jpg"
                )
            elif kind == 3:
                paths.append(
                    f"/themes/portal/{rng.choice(('css', 'js'))}/"
                    f"{rng.choice(pools.idents).lower()}.min.{rng.choice(('css', 'js'))}"
                    f"?v={rng.randrange(10**4)}"
                )
            else:
                paths.append(
                    f"/tim-kiem?q={rng.choice(pools.idents).lower()}&page={rng.randrange(1, 40)}"
                )
        self.paths = paths
        self.path_cum = list(_accumulate([1.0 / (i + 1) ** 0.8 for i in range(len(paths))]))
        self.agents = [ua.format(v=rng.randrange(90, 131)) for ua in USER_AGENTS for _ in range(6)]
        self.referers = ["-"] * 10 + [
            "https://www.google.com/",
            "https://www.google.com.vn/",
            "https://coccoc.com/search",
            f"https://{site}/",
            f"https://{site}/tin-tuc",
            "https://dichvucong.vinhphuc.gov.vn/",
            "https://www.facebook.com/",
        ]

    def lines(self, rng: random.Random, start: int, seconds: int, nbytes: int) -> bytes:
        """About ``nbytes`` of log lines spread over ``[start, start + seconds)``."""
        n = max(1, nbytes // 205)
        ips = rng.choices(self.ips, cum_weights=self.ip_cum, k=n)
        paths = rng.choices(self.paths, cum_weights=self.path_cum, k=n)
        methods = rng.choices(("GET", "POST", "HEAD"), weights=(90, 8, 2), k=n)
        protos = rng.choices(("1.1", "2.0"), weights=(60, 40), k=n)
        statuses = rng.choices(
            ("200", "304", "301", "302", "404", "403", "499", "500", "502"),
            weights=(70, 12, 5, 3, 6, 1, 1, 1, 1),
            k=n,
        )
        sizes = rng.choices(range(150, 120_000, 37), k=n)
        refs = rng.choices(self.referers, k=n)
        agents = rng.choices(self.agents, k=n)
        stamps: list[str] = []
        per = n / max(1, seconds)
        done = 0.0
        for s in range(seconds):
            done += per
            count = int(done) - len(stamps)
            if count:
                stamps.extend([_clf_time(start + s)] * count)
        stamps.extend([_clf_time(start + seconds - 1)] * (n - len(stamps)))
        fmt = self.FMT
        return "".join(
            map(
                fmt.__mod__,
                zip(
                    ips, stamps, methods, paths, protos, statuses, sizes, refs, agents, strict=True
                ),
            )
        ).encode()

    def error_lines(self, rng: random.Random, start: int, count: int) -> bytes:
        out = []
        for i in range(count):
            t = time.gmtime(start + i * 97 + TZ_OFFSET)
            out.append(
                f"{time.strftime('%Y/%m/%d %H:%M:%S', t)} [error] {rng.randrange(900, 1000)}#0: "
                f'*{rng.randrange(10**7)} open() "/var/www/{self.site}/public'
                f'{rng.choice(self.paths).split("?")[0]}" failed (2: No such file or directory), '
                f"client: {rng.choice(self.ips)}, server: {self.site}\n"
            )
        return "".join(out).encode()


_HMS = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d} +0700" for s in range(DAY)]
_DATE_PREFIX: dict[int, str] = {}


def _clf_time(ts: int) -> str:
    """``01/Jun/2025:02:00:00 +0700`` (cheap: logs need one per second of traffic)."""
    local = ts + TZ_OFFSET
    day, second = divmod(local, DAY)
    prefix = _DATE_PREFIX.get(day)
    if prefix is None:
        t = time.gmtime(day * DAY)
        prefix = _DATE_PREFIX[day] = f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
    return prefix + _HMS[second]


# --------------------------------------------------------------------------- SQL dump

SQL_TABLES = ("articles", "comments", "users", "audit_log")
SQL_SHARES = {"articles": 0.55, "comments": 0.15, "users": 0.05, "audit_log": 0.25}
SQL_STATEMENT_BYTES = 1 << 20  # mysqldump --net-buffer-length default
SQL_CREATE = {
    "articles": "  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `category_id` int(11) NOT NULL,\n"
    "  `title` varchar(500) NOT NULL,\n  `slug` varchar(500) NOT NULL,\n  `summary` text,\n"
    "  `body` mediumtext,\n  `author` varchar(200) DEFAULT NULL,\n"
    "  `published_at` datetime NOT NULL,\n  `views` int(11) NOT NULL DEFAULT 0,\n"
    "  `status` tinyint(4) NOT NULL DEFAULT 1,\n  PRIMARY KEY (`id`),\n"
    "  KEY `idx_category` (`category_id`,`published_at`)",
    "comments": "  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `article_id` int(11) NOT NULL,\n"
    "  `name` varchar(200) NOT NULL,\n  `email` varchar(200) DEFAULT NULL,\n"
    "  `content` text NOT NULL,\n  `created_at` datetime NOT NULL,\n"
    "  `status` tinyint(4) NOT NULL DEFAULT 0,\n  PRIMARY KEY (`id`)",
    "users": "  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `username` varchar(64) NOT NULL,\n"
    "  `full_name` varchar(200) NOT NULL,\n  `email` varchar(200) NOT NULL,\n"
    "  `password_hash` varchar(255) NOT NULL,\n  `phone` varchar(20) DEFAULT NULL,\n"
    "  `created_at` datetime NOT NULL,\n  PRIMARY KEY (`id`),\n"
    "  UNIQUE KEY `username` (`username`)",
    "audit_log": "  `id` bigint(20) NOT NULL AUTO_INCREMENT,\n  `user_id` int(11) NOT NULL,\n"
    "  `action` varchar(32) NOT NULL,\n  `object` varchar(200) NOT NULL,\n"
    "  `ip` varchar(45) NOT NULL,\n  `created_at` datetime NOT NULL,\n  `detail` text,\n"
    "  PRIMARY KEY (`id`),\n  KEY `idx_created` (`created_at`)",
}
FAMILY = ("Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Vũ", "Đặng", "Bùi", "Đỗ", "Hồ", "Ngô", "Dương")
MIDDLE = ("Văn", "Thị", "Đức", "Minh", "Thu", "Hồng", "Quang", "Ngọc", "Thanh", "Hữu")
GIVEN = (
    "An",
    "Bình",
    "Cường",
    "Dũng",
    "Hà",
    "Hải",
    "Hằng",
    "Hùng",
    "Lan",
    "Linh",
    "Mai",
    "Nam",
    "Phương",
    "Quân",
    "Sơn",
    "Tâm",
    "Thảo",
    "Trang",
    "Tuấn",
    "Việt",
    "Yến",
)
AUDIT_ACTIONS = ("login", "logout", "update", "create", "publish", "delete", "view")
AUDIT_OBJECTS = ("article", "page", "menu", "user", "banner", "document")
_SLUG_MAP = str.maketrans(
    "àáảãạăằắẳẵặâầấẩẫậèéẻẽẹêềếểễệìíỉĩịòóỏõọôồốổỗộơờớởỡợùúủũụưừứửữựỳýỷỹỵđ ",
    "aaaaaaaaaaaaaaaaaeeeeeeeeeeeiiiiiooooooooooooooooouuuuuuuuuuuyyyyyd-",
)


_SQL_HMS = [f" {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(DAY)]
_SQL_DATE: dict[int, str] = {}


def _sql_datetime(ts: int) -> str:
    day, second = divmod(ts + TZ_OFFSET, DAY)
    date = _SQL_DATE.get(day)
    if date is None:
        date = _SQL_DATE[day] = time.strftime("%Y-%m-%d", time.gmtime(day * DAY))
    return date + _SQL_HMS[second]


def _rand(rng: random.Random, lo: int, hi: int) -> int:
    """``rng.randrange(lo, hi)``, several times cheaper (slightly biased, which is fine here)."""
    return lo + int(rng.random() * (hi - lo))


class SqlMaker:
    def __init__(self, seed: int, pools: TextPools) -> None:
        self.seed = seed
        self.pools = pools

    @staticmethod
    def _name(rng: random.Random) -> str:
        r = rng.random
        return (
            f"{FAMILY[int(r() * len(FAMILY))]} {MIDDLE[int(r() * len(MIDDLE))]} "
            f"{GIVEN[int(r() * len(GIVEN))]}"
        )

    def row(self, rng: random.Random, table: str, row_id: int, when: int) -> str:
        p = self.pools
        sentences = p.sentences
        r = rng.random
        if table == "articles":
            title = rng.choice(sentences)[:-1]
            slug = title.lower().translate(_SLUG_MAP)[:120]
            body = "".join(
                f"<p>{p.text(rng, 2 + int(r() * 5))}</p>" for _ in range(3 + int(r() * 12))
            )
            return (
                f"({row_id},{_rand(rng, 1, 40)},'{title}','{slug}-{row_id}',"
                f"'{p.text(rng, 1 + int(r() * 3))}','{body}','{self._name(rng)}',"
                f"'{_sql_datetime(when)}',{_rand(rng, 20, 90_000)},{int(r() < 0.75)})"
            )
        if table == "comments":
            return (
                f"({row_id},{_rand(rng, 1, 60_000)},'{self._name(rng)}',"
                f"'{rng.choice(p.idents).lower()}{int(r() * 1000)}@gmail.com',"
                f"'{p.text(rng, 1 + int(r() * 5))}','{_sql_datetime(when)}',{int(r() * 3)})"
            )
        if table == "users":
            name = self._name(rng)
            user = name.lower().translate(_SLUG_MAP).replace("-", ".")
            pw = rng.randbytes(24).hex()
            return (
                f"({row_id},'{user}{row_id}','{name}','{user}{row_id}@vinhphuc.gov.vn',"
                f"'$2y$10${pw}','09{int(r() * 10**8):08d}','{_sql_datetime(when)}')"
            )
        action = AUDIT_ACTIONS[int(r() * len(AUDIT_ACTIONS))]
        obj = AUDIT_OBJECTS[int(r() * len(AUDIT_OBJECTS))]
        detail = (
            f'{{\\"before\\":\\"{rng.choice(sentences)}\\",\\"after\\":\\"{rng.choice(sentences)}\\",'
            f'\\"ua\\":\\"Mozilla/5.0\\"}}'
        )
        return (
            f"({row_id},{_rand(rng, 1, 3000)},'{action}','{obj}:{_rand(rng, 1, 60_000)}',"
            f"'{_rand(rng, 1, 255)}.{int(r() * 256)}.{int(r() * 256)}.{_rand(rng, 1, 255)}',"
            f"'{_sql_datetime(when)}','{detail}')"
        )

    def rows(
        self, rng: random.Random, table: str, first_id: int, nbytes: int, start: int, end: int
    ) -> Iterator[list[str]]:
        """Batches of rows (one INSERT statement each) totalling about ``nbytes``."""
        done = 0
        row_id = first_id
        span = max(1, end - start)
        while done < nbytes:
            batch: list[str] = []
            size = 0
            while size < SQL_STATEMENT_BYTES and done + size < nbytes:
                when = start + int(span * min(1.0, (done + size) / max(1, nbytes)))
                r = self.row(rng, table, row_id, when + int(rng.random() * 3600))
                row_id += 1
                batch.append(r)
                size += len(r.encode()) + 1
            done += size
            yield batch

    @staticmethod
    def header(when: int) -> str:
        return (
            "-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB, for debian-linux-gnu (x86_64)\n--\n"
            "-- Host: localhost    Database: portal\n"
            "-- ------------------------------------------------------\n"
            "-- Server version\t10.11.6-MariaDB-0+deb12u1\n"
            f"-- Dump started {_sql_datetime(when)}\n\n"
            "/*!40101 SET NAMES utf8mb4 */;\n/*!40103 SET TIME_ZONE='+00:00' */;\n"
            "/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;\n\n"
        )

    @staticmethod
    def table_head(table: str) -> str:
        return (
            f"--\n-- Table structure for table `{table}`\n--\n\n"
            f"DROP TABLE IF EXISTS `{table}`;\nCREATE TABLE `{table}` (\n{SQL_CREATE[table]}\n"
            ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;\n\n"
            f"--\n-- Dumping data for table `{table}`\n--\n\n"
            f"LOCK TABLES `{table}` WRITE;\n/*!40000 ALTER TABLE `{table}` DISABLE KEYS */;\n"
        )

    @staticmethod
    def table_tail(table: str) -> str:
        return f"/*!40000 ALTER TABLE `{table}` ENABLE KEYS */;\nUNLOCK TABLES;\n\n"

    @staticmethod
    def footer(when: int) -> str:
        return f"-- Dump completed on {_sql_datetime(when)}\n"

    @staticmethod
    def insert(table: str, batch: list[str]) -> str:
        return f"INSERT INTO `{table}` VALUES " + ",".join(batch) + ";\n"  # noqa: S608


# --------------------------------------------------------------------------- generation


@dataclass
class CorpusStats:
    root: str
    size_gb: float
    seed: int
    generator_version: int = GENERATOR_VERSION
    files: int = 0
    bytes: int = 0
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, kind: str, nbytes: int) -> None:
        entry = self.by_kind.setdefault(kind, {"files": 0, "bytes": 0})
        entry["files"] += 1
        entry["bytes"] += nbytes
        self.files += 1
        self.bytes += nbytes


def _write(path: Path, data: bytes | Iterable[bytes], mtime: int) -> int:
    """Write a new file (never into an existing inode) and set its mtime."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".bench-tmp")
    total = 0
    with open(tmp, "wb") as f:
        for piece in [data] if isinstance(data, bytes) else data:
            f.write(piece)
            total += len(piece)
    os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)
    return total


def _code_tree(rng: random.Random, top: str, n_files: int) -> list[tuple[str, str]]:
    """(relative path, language) for ``n_files`` files in nested directories under ``top``."""
    langs = ("php", "php", "php", "php", "php", "js", "js", "css", "html", "html")
    ext = {"php": ".php", "js": ".js", "css": ".css", "html": ".html"}
    dirs = [top]
    out: list[tuple[str, str]] = []
    while len(out) < n_files:
        parent = rng.choice(dirs)
        if parent.count("/") < 6 and rng.random() < 0.18:
            dirs.append(f"{parent}/{rng.choice(CODE_WORDS)}{rng.choice(('', 's', '_v2', 'Lib'))}")
            continue
        lang = rng.choice(langs)
        name = rng.choice(CODE_WORDS) + rng.choice(CODE_WORDS).capitalize()
        if lang == "html" and rng.random() < 0.5:
            suffix = ".tpl"
        elif lang == "js" and rng.random() < 0.2:
            suffix = ".min.js"
        else:
            suffix = ext[lang]
        out.append((f"{parent}/{name}{len(out)}{suffix}", lang))
    return out


def generate(root: Path, size_gb: float = DEFAULT_SIZE_GB, seed: int = DEFAULT_SEED) -> CorpusStats:
    """Write the day-1 corpus under ``root`` (which must not exist or be empty)."""
    t0 = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    stats = CorpusStats(root=str(root), size_gb=size_gb, seed=seed)
    total = int(size_gb * GB)
    pools = TextPools(seed)
    _gen_config(root, seed, stats)
    _gen_code(root, seed, pools, total, stats)
    _gen_logs(root, seed, pools, int(total * SHARE_LOGS), stats)
    _gen_sql(root, seed, pools, int(total * SHARE_SQL), stats)
    _gen_media(root, seed, int(total * SHARE_MEDIA), stats)
    stats.seconds = round(time.monotonic() - t0, 2)
    return stats


def _gen_config(root: Path, seed: int, stats: CorpusStats) -> None:
    rng = rng_for(seed, "config")
    for site in SITES:
        conf = (
            f"server {{\n    listen 443 ssl http2;\n    listen [::]:443 ssl http2;\n"
            f"    server_name {site};\n    root /var/www/{site}/public;\n    index index.php;\n"
            f"    ssl_certificate /etc/letsencrypt/live/{site}/fullchain.pem;\n"
            f"    ssl_certificate_key /etc/letsencrypt/live/{site}/privkey.pem;\n"
            f"    access_log /var/log/nginx/{site}.access.log;\n"
            f"    error_log /var/log/nginx/{site}.error.log;\n"
            f"    client_max_body_size {rng.choice((20, 50, 100))}m;\n"
            "    location / { try_files $uri $uri/ /index.php?$args; }\n"
            "    location ~ \\.php$ {\n        include snippets/fastcgi-php.conf;\n"
            f"        fastcgi_pass unix:/run/php/php8.2-fpm-{site}.sock;\n    }}\n}}\n"
        ).encode()
        stats.add(
            "config",
            _write(
                root / f"etc/nginx/sites-available/{site}.conf",
                conf,
                DAY1 - rng.randrange(400 * DAY),
            ),
        )
        pool = (
            f"[{site}]\nuser = www-data\ngroup = www-data\n"
            f"listen = /run/php/php8.2-fpm-{site}.sock\npm = dynamic\n"
            f"pm.max_children = {rng.choice((10, 20, 40))}\npm.start_servers = 4\n"
        ).encode()
        stats.add(
            "config",
            _write(
                root / f"etc/php/8.2/fpm/pool.d/{site}.conf", pool, DAY1 - rng.randrange(400 * DAY)
            ),
        )


def _gen_code(root: Path, seed: int, pools: TextPools, total: int, stats: CorpusStats) -> None:
    n_code = max(60, int(CODE_FILES_PER_GB * total / GB))
    n_core = int(n_code * CORE_SHARE / len(SITES))
    n_own = max(5, (n_code - n_core * len(SITES)) // len(SITES))
    rng = rng_for(seed, "code-core")
    core_mtime = DAY1 - 90 * DAY  # the CMS release everyone installed
    core = [
        (rel, code_bytes(pools, rng, lang, rel, code_size(rng)))
        for rel, lang in _code_tree(rng, "core", n_core // 2)
        + _code_tree(rng, "vendor", n_core - n_core // 2)
    ]
    for site in SITES:
        srng = rng_for(seed, f"code-site:{site}")
        base = root / "var/www" / site / "public"
        for rel, release in core:
            data = release
            if srng.random() < 0.02:  # locally patched core file
                data = code_bytes(pools, srng, _lang_of(rel), rel, len(release))
                mtime = DAY1 - srng.randrange(60 * DAY)
            else:
                mtime = core_mtime
            stats.add("code", _write(base / rel, data, mtime))
        own = _code_tree(srng, "themes/portal", n_own // 2) + _code_tree(
            srng, "modules", n_own - n_own // 2
        )
        for rel, lang in own:
            data = code_bytes(pools, srng, lang, f"{site}/{rel}", code_size(srng))
            stats.add("code", _write(base / rel, data, DAY1 - srng.randrange(365 * DAY)))
        settings = (
            f"<?php\nreturn [\n    'site' => '{site}',\n    'db' => ['host' => 'localhost', "
            f"'name' => 'portal', 'user' => 'portal', 'password' => '{srng.randbytes(12).hex()}'],"
            f"\n    'lang' => '{'en' if site.startswith('english') else 'vi'}',\n];\n"
        ).encode()
        stats.add(
            "code",
            _write(
                root / "var/www" / site / "config/settings.php",
                settings,
                DAY1 - srng.randrange(200 * DAY),
            ),
        )


def _lang_of(rel: str) -> str:
    if rel.endswith(".php"):
        return "php"
    if rel.endswith(".js"):
        return "js"
    if rel.endswith(".css"):
        return "css"
    return "html"


def _gen_logs(root: Path, seed: int, pools: TextPools, budget: int, stats: CorpusStats) -> None:
    logdir = root / "var/log/nginx"
    plain = budget * (1 - GZ_SHARE_OF_LOGS)
    gz_raw = budget * GZ_SHARE_OF_LOGS * 10  # logs compress ~10x with gzip -6
    for site, weight in zip(SITES, SITE_WEIGHTS, strict=True):
        rng = rng_for(seed, f"logs:{site}")
        maker = LogMaker(seed, site, pools)
        daily = int(plain * weight / 1.1)  # yesterday's full day + 0.1 day of today so far
        rotated = int(gz_raw * weight / ROTATED_LOGS)
        yesterday = maker.lines(rng, DAY1 - DAY, DAY, daily)
        for age in range(ROTATED_LOGS + 1, 1, -1):  # access.log.8.gz .. access.log.2.gz
            start = DAY1 - age * DAY
            raw = _older_day(rng, yesterday, age - 1, rotated)
            data = gzip.compress(raw, compresslevel=6, mtime=start + DAY)
            stats.add("logs", _write(logdir / f"{site}.access.log.{age}.gz", data, start + DAY))
        stats.add("logs", _write(logdir / f"{site}.access.log.1", yesterday, DAY1))
        stats.add(
            "logs",
            _write(
                logdir / f"{site}.access.log",
                maker.lines(rng, DAY1, DAY // 10, daily // 10),
                DAY1 + DAY // 10,
            ),
        )
        stats.add(
            "logs",
            _write(logdir / f"{site}.error.log", maker.error_lines(rng, DAY1 - DAY, 400), DAY1),
        )


def _older_day(rng: random.Random, yesterday: bytes, days_back: int, nbytes: int) -> bytes:
    """An older day's log from yesterday's lines: blocks shuffled, dates moved back.

    Only ever stored gzip-compressed, so sharing lines with yesterday's log gives the backup
    tools nothing to deduplicate; it just saves generating and formatting them again.
    """
    blocks: list[bytes] = []
    at = 0
    while at < len(yesterday):
        end = yesterday.find(b"\n", at + 65536)
        end = len(yesterday) if end < 0 else end + 1
        blocks.append(yesterday[at:end])
        at = end
    rng.shuffle(blocks)
    raw = b"".join(blocks)
    raw = (raw * (1 + nbytes // max(1, len(raw))))[:nbytes]
    raw = raw[: raw.rfind(b"\n") + 1]
    # Yesterday spans two calendar dates; shift the older one first so they do not collide.
    for ts in (DAY1 - DAY, DAY1 - 1):
        old = _clf_time(ts)[:12].encode()
        raw = raw.replace(old, _clf_time(ts - days_back * DAY)[:12].encode())
    return raw


SQL_PATH = "var/backups/mysql/portal.sql"


def _gen_sql(root: Path, seed: int, pools: TextPools, budget: int, stats: CorpusStats) -> None:
    rng = rng_for(seed, "sql")
    maker = SqlMaker(seed, pools)
    when = DAY1 - 1800  # the dump runs at 01:30, before the backup

    def pieces() -> Iterator[bytes]:
        yield maker.header(when).encode()
        for table in SQL_TABLES:
            parts = [maker.table_head(table)]
            size = 0
            for batch in maker.rows(
                rng, table, 1, int(budget * SQL_SHARES[table]), DAY1 - 5 * 365 * DAY, DAY1 - DAY
            ):
                parts.append(maker.insert(table, batch))
                size += len(parts[-1])
                if size > WRITE_CHUNK:
                    yield "".join(parts).encode()
                    parts, size = [], 0
            parts.append(maker.table_tail(table))
            yield "".join(parts).encode()
        yield maker.footer(when + 300).encode()

    stats.add("sql", _write(root / SQL_PATH, pieces(), when + 300))


MEDIA_KINDS = (
    # (extension, magic header, min bytes, max bytes, weight by count)
    (
        "jpg",
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x01\x00H\x00H\x00\x00",
        100_000,
        1_500_000,
        70,
    ),
    ("pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", 150_000, 8_000_000, 25),
    ("mp4", b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41", 5_000_000, 50_000_000, 5),
)


def media_file(rng: random.Random, budget_left: int, cap: int) -> tuple[str, Iterator[bytes]]:
    """(extension, content in pieces): a file-type magic, then incompressible bytes."""
    ext, magic, lo, hi, _ = rng.choices(MEDIA_KINDS, weights=[k[4] for k in MEDIA_KINDS])[0]
    hi = max(lo, min(hi, cap))
    size = int(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    size = max(lo // 2, min(size, budget_left))

    def pieces() -> Iterator[bytes]:
        yield magic
        left = max(0, size - len(magic))
        while left:
            n = min(left, 4 << 20)
            yield rng.randbytes(n)
            left -= n

    return ext, pieces()


def _gen_media(root: Path, seed: int, budget: int, stats: CorpusStats) -> None:
    rng = rng_for(seed, "media")
    cap = max(1_000_000, budget // 8)  # the small corpus should not be one big video
    done = 0
    i = 0
    while done < budget:
        site = rng.choices(SITES, weights=SITE_WEIGHTS)[0]
        age = rng.randrange(1, 4 * 365)
        t = time.gmtime(DAY1 - age * DAY)
        ext, data = media_file(rng, budget - done, cap)
        name = f"{rng.choice(CODE_WORDS)}-{rng.randrange(10**6):06d}-{i}.{ext}"
        path = root / "var/www" / site / f"public/uploads/{t.tm_year}/{t.tm_mon:02d}/{name}"
        mtime = DAY1 - age * DAY + rng.randrange(DAY)
        written = _write(path, data, mtime)  # the content is drawn while it is written
        done += written
        stats.add("media", written)
        i += 1


# --------------------------------------------------------------------------- next day


@dataclass
class MutationStats:
    changed_files: list[str] = field(default_factory=list)
    added_files: list[str] = field(default_factory=list)
    deleted_files: list[str] = field(default_factory=list)
    renamed_files: list[str] = field(default_factory=list)
    bytes_written: int = 0
    sql_rows_rewritten: int = 0
    sql_rows_appended: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, int | float]:
        return {
            "changed": len(self.changed_files),
            "added": len(self.added_files),
            "deleted": len(self.deleted_files),
            "renamed": len(self.renamed_files),
            "bytes_written": self.bytes_written,
            "sql_rows_rewritten": self.sql_rows_rewritten,
            "sql_rows_appended": self.sql_rows_appended,
            "seconds": self.seconds,
        }


def list_files(root: Path) -> list[str]:
    """Relative paths of regular files under ``root``, sorted (stable across runs)."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        out.extend(os.path.normpath(os.path.join(rel, f)) for f in sorted(filenames))
    out.sort()
    return out


def next_day(root: Path, seed: int = DEFAULT_SEED, day: int = 2) -> MutationStats:
    """Turn the corpus of day ``day - 1`` under ``root`` into day ``day``, deterministically.

    Appends to every access and error log, rotates one site's logs, rewrites ~1% of code files,
    adds a few uploads, rewrites ~0.5% of the dump's rows in place (same size) and appends new
    rows, and deletes a few files. Only ever writes new inodes (see the module docstring).
    """
    t0 = time.monotonic()
    rng = rng_for(seed, f"day{day}")
    pools = TextPools(seed)
    ms = MutationStats()
    files = list_files(root)
    _next_day_logs(root, seed, pools, ms, day)
    _next_day_code(root, rng, pools, files, ms, day)
    _next_day_media(root, rng, files, ms, day)
    _next_day_sql(root, seed, pools, rng, ms, day)
    ms.seconds = round(time.monotonic() - t0, 2)
    return ms


def _next_day_logs(
    root: Path, seed: int, pools: TextPools, ms: MutationStats, day: int = 2
) -> None:
    """The rest of yesterday and the start of today land in every log; one site's logs rotate."""
    base = DAY1 + (day - 2) * DAY  # "day 1" of this mutation: yesterday's backup time
    day2 = base + DAY
    logdir = root / "var/log/nginx"
    for site, weight in zip(SITES, SITE_WEIGHTS, strict=True):
        maker = LogMaker(seed, site, pools)
        lrng = rng_for(seed, f"day{day}-logs:{site}")
        access = logdir / f"{site}.access.log"
        one = logdir / f"{site}.access.log.1"
        yesterday = one.stat().st_size
        new = maker.lines(lrng, base + DAY // 10, int(DAY * 0.9), int(yesterday * 0.9))
        if site == SITES[(day - 2) % len(SITES)]:
            # logrotate ran for this site: .N.gz shift up (the oldest goes), .1 is compressed
            # to .2.gz, the current log becomes .1 and a fresh one starts.
            oldest = f"{site}.access.log.{ROTATED_LOGS + 1}.gz"
            (logdir / oldest).unlink()
            ms.deleted_files.append(f"var/log/nginx/{oldest}")
            for age in range(ROTATED_LOGS, 1, -1):
                newer = f"{site}.access.log.{age + 1}.gz"
                os.rename(logdir / f"{site}.access.log.{age}.gz", logdir / newer)
                ms.renamed_files.append(f"var/log/nginx/{newer}")
            gz = gzip.compress(one.read_bytes(), compresslevel=6, mtime=base)
            ms.bytes_written += _write(logdir / f"{site}.access.log.2.gz", gz, base + 60)
            ms.added_files.append(f"var/log/nginx/{site}.access.log.2.gz")
            ms.bytes_written += _write(one, [access.read_bytes(), new], day2)
            ms.changed_files.append(f"var/log/nginx/{site}.access.log.1")
            fresh = maker.lines(lrng, day2, 7200, int(weight * yesterday / 12 + 1))
            ms.bytes_written += _write(access, fresh, day2 + 7200)
        else:
            ms.bytes_written += _write(access, [access.read_bytes(), new], day2)
        ms.changed_files.append(f"var/log/nginx/{site}.access.log")
        err = logdir / f"{site}.error.log"
        more = maker.error_lines(lrng, base, 150)
        ms.bytes_written += _write(err, [err.read_bytes(), more], day2)
        ms.changed_files.append(f"var/log/nginx/{site}.error.log")


def _next_day_code(
    root: Path,
    rng: random.Random,
    pools: TextPools,
    files: list[str],
    ms: MutationStats,
    day: int = 2,
) -> None:
    """~1% of the code files edited (a few lines replaced, some added), ~0.1% deleted."""
    day2 = DAY1 + (day - 1) * DAY
    code = [f for f in files if f.startswith("var/www/") and "/uploads/" not in f]
    for rel in sorted(rng.sample(code, max(3, len(code) // 100))):
        path = root / rel
        lines = path.read_bytes().split(b"\n")
        at = rng.randrange(len(lines))
        patch = code_bytes(pools, rng, _lang_of(rel), rel, rng.randint(80, 1500)).split(b"\n")
        lines[at : at + rng.randint(0, 12)] = patch[3:]
        ms.bytes_written += _write(path, b"\n".join(lines), day2 - rng.randrange(20 * 3600))
        ms.changed_files.append(rel)
    unchanged = sorted(set(code) - set(ms.changed_files))
    for rel in sorted(rng.sample(unchanged, max(3, len(code) // 1000))):
        (root / rel).unlink()
        ms.deleted_files.append(rel)


def _next_day_media(
    root: Path, rng: random.Random, files: list[str], ms: MutationStats, day: int = 2
) -> None:
    """A few new uploads (~1% of the media bytes), ~0.5% of the uploads removed."""
    day2 = DAY1 + (day - 1) * DAY
    media = [f for f in files if "/uploads/" in f]
    gone = sorted(rng.sample(media, min(len(media), max(2, len(media) // 200))))
    for rel in gone:
        (root / rel).unlink()
    ms.deleted_files.extend(gone)
    kept = set(media) - set(gone)
    new_budget = max(1_000_000, sum((root / f).stat().st_size for f in sorted(kept)) // 100)
    done = 0
    i = 0
    while done < new_budget:
        site = rng.choices(SITES, weights=SITE_WEIGHTS)[0]
        ext, data = media_file(rng, new_budget - done, max(1_000_000, new_budget // 2))
        rel = f"var/www/{site}/public/uploads/2025/06/{rng.choice(CODE_WORDS)}-day{day}-{i}.{ext}"
        done += _write(root / rel, data, day2 - rng.randrange(20 * 3600))
        ms.added_files.append(rel)
        i += 1
    ms.bytes_written += done


_ROW_SEP = re.compile(rb"VALUES \(|\),\(")


def _next_day_sql(
    root: Path, seed: int, pools: TextPools, rng: random.Random, ms: MutationStats, day: int = 2
) -> None:
    base = DAY1 + (day - 2) * DAY
    path = root / SQL_PATH
    data = bytearray(path.read_bytes())
    maker = SqlMaker(seed, pools)
    tables: list[tuple[str, int, int]] = []  # (name, start, end) of each LOCK..UNLOCK region
    for table in SQL_TABLES:
        start = data.find(f"LOCK TABLES `{table}` WRITE;".encode())
        end = data.find(b"UNLOCK TABLES;", start)
        tables.append((table, start, end))
    appended: dict[str, str] = {}
    for table, start, end in tables:
        rows = [m.end() for m in _ROW_SEP.finditer(data, start, end)]
        # ~0.5% of rows edited; recent rows (the table's tail) are edited far more often.
        n_edit = max(1, len(rows) // 200)
        recent = rows[-max(1, len(rows) // 10) :]
        for _ in range(n_edit):
            pos = rng.choice(recent) if rng.random() < 0.7 else rng.choice(rows)
            if _rewrite_row(data, pos, pools, rng):
                ms.sql_rows_rewritten += 1
        # New rows: the day's articles, comments, sign-ups and a lot of audit log.
        share = {"articles": 0.001, "comments": 0.003, "users": 0.001, "audit_log": 0.006}[table]
        n_new = max(1, int(len(rows) * share))
        last_id = int(data[rows[-1] : data.find(b",", rows[-1])])
        new_rows = [
            maker.row(rng, table, last_id + 1 + i, base + rng.randrange(DAY)) for i in range(n_new)
        ]
        ms.sql_rows_appended += n_new
        appended[table] = maker.insert(table, new_rows)
    # Header and footer carry the dump time (same length, so in place).
    for old, new in (
        (
            f"-- Dump started {_sql_datetime(base - 1800)}",
            f"-- Dump started {_sql_datetime(base + DAY - 1800)}",
        ),
        (
            f"-- Dump completed on {_sql_datetime(base - 1500)}",
            f"-- Dump completed on {_sql_datetime(base + DAY - 1500)}",
        ),
    ):
        at = data.find(old.encode())
        if at >= 0:
            data[at : at + len(old.encode())] = new.encode()
    # Splice the new INSERTs in before each table's "ENABLE KEYS" line.
    out: list[bytes] = []
    at = 0
    for table, start, _end in tables:
        enable = data.find(f"/*!40000 ALTER TABLE `{table}` ENABLE KEYS */;".encode(), start)
        out.append(bytes(data[at:enable]))
        out.append(appended[table].encode())
        at = enable
    out.append(bytes(data[at:]))
    path.unlink()
    ms.bytes_written += _write(path, out, base + DAY - 1500)
    ms.changed_files.append(SQL_PATH)


def _rewrite_row(data: bytearray, pos: int, pools: TextPools, rng: random.Random) -> bool:
    """Overwrite a span of the row's longest text field with new text of the same byte size."""
    end = data.find(b")", pos)
    quotes: list[int] = []
    at = data.find(b"'", pos, end)
    while at >= 0:
        quotes.append(at)
        at = data.find(b"'", at + 1, end)
    fields = [(quotes[i] + 1, quotes[i + 1]) for i in range(0, len(quotes) - 1, 2)]
    if not fields:
        return False
    lo, hi = max(fields, key=lambda f: f[1] - f[0])
    if hi - lo < 16:
        return False
    a = data.find(b" ", lo + rng.randrange(hi - lo), hi)
    if a < 0:
        a = lo
    b = data.rfind(b" ", a + 1, min(hi, a + 1 + rng.randint(60, 600)))
    if b <= a:
        b = hi
    n = b - a
    text = pools.text(rng, 1 + n // 60).encode()[:n].decode("utf-8", "ignore").encode()
    data[a:b] = text + b" " * (n - len(text))
    return True


# --------------------------------------------------------------------------- profile "smallfiles"
#
# A second, held-apart profile: an application server's day with ~30k small files (code,
# templates, config) in many directories, incompressible media, compressible logs and a
# PostgreSQL plain-format dump (``COPY ... FROM stdin;`` blocks) that a nightly pg_dump
# REWRITES WHOLE every day: a new file (new inode), rows in physical order, ~0.5% of them
# updated (scattered uniformly, so their lengths change and every later byte shifts) and new
# rows appended to each table. Layout::
#
#     etc/<app>/*.yml|ini|conf                                     (config)
#     var/www/<app>/{src,templates,lang,config,public}/...         (~12% of bytes, ~30k files)
#     var/www/<app>/storage/uploads/YYYY/MM/*.jpg|pdf             (~36%)
#     var/log/<app>/access.log, var/log/<app>/app.log             (~17%, plain text)
#     var/backups/postgresql/portal.sql                            (~35%)

PROFILES = ("portal", "smallfiles")
SMALLFILES_VERSION = 1
SMALLFILES_SCALE = 1.4 / 1.5  # ~1.4 GB at the default --size-gb 1.5
SMALL_FILES_PER_GB = 21_500  # ~30k files at 1.4 GB
SF_SHARE_LOGS = 0.17
SF_SHARE_SQL = 0.35
SF_APPS = ("dichvucong", "vanban", "cms", "api", "hoidap")
PG_PATH = "var/backups/postgresql/portal.sql"
PG_TABLES: dict[str, tuple[float, str]] = {  # table: (share of the dump, columns)
    "bai_viet": (
        0.45,
        "id, chuyen_muc_id, tieu_de, tom_tat, noi_dung, tac_gia, ngay_dang, luot_xem, "
        "trang_thai, cap_nhat_luc",
    ),
    "ho_so": (
        0.25,
        "id, ma_ho_so, cong_dan_id, thu_tuc, trang_thai, ghi_chu, ngay_nop, cap_nhat_luc",
    ),
    "cong_dan": (0.05, "id, ho_ten, so_dinh_danh, email, dien_thoai, dia_chi, tao_luc"),
    "nhat_ky": (0.25, "id, nguoi_dung_id, hanh_dong, doi_tuong, ip, thoi_gian, chi_tiet"),
}
PG_NEW_ROWS = {"bai_viet": 0.001, "ho_so": 0.004, "cong_dan": 0.002, "nhat_ky": 0.006}
PG_UPDATE_SHARE = 0.005


def _pg_time(ts: int) -> str:
    return _sql_datetime(ts) + "+07"


class PgMaker:
    """Rows of a pg_dump plain-format dump: tab-separated, ``\\N`` for NULL, escaped text."""

    def __init__(self, pools: TextPools) -> None:
        self.pools = pools

    def row(self, rng: random.Random, table: str, row_id: int, when: int, updated: int) -> str:
        p = self.pools
        r = rng.random
        if table == "bai_viet":
            body = "\\n".join(
                f"<p>{p.text(rng, 2 + int(r() * 5))}</p>" for _ in range(2 + int(r() * 10))
            )
            return (
                f"{row_id}\t{_rand(rng, 1, 60)}\t{rng.choice(p.sentences)[:-1]}\t"
                f"{p.text(rng, 1 + int(r() * 2))}\t{body}\t{SqlMaker._name(rng)}\t"
                f"{_pg_time(when)}\t{_rand(rng, 0, 90_000)}\t{'t' if r() < 0.8 else 'f'}\t"
                f"{_pg_time(updated)}"
            )
        if table == "ho_so":
            note = p.text(rng, 1 + int(r() * 4)) if r() < 0.7 else "\\N"
            return (
                f"{row_id}\tHS-{2020 + int(r() * 6)}-{row_id:08d}\t{_rand(rng, 1, 200_000)}\t"
                f"{rng.choice(p.sentences)[:-1]}\t"
                f"{('moi', 'dang_xu_ly', 'cho_bo_sung', 'hoan_thanh', 'tu_choi')[int(r() * 5)]}"
                f"\t{note}\t{_pg_time(when)}\t{_pg_time(updated)}"
            )
        if table == "cong_dan":
            name = SqlMaker._name(rng)
            user = name.lower().translate(_SLUG_MAP).replace("-", ".")
            return (
                f"{row_id}\t{name}\t0{int(r() * 10**11):011d}\t{user}{row_id}@gmail.com\t"
                f"09{int(r() * 10**8):08d}\t{p.text(rng, 1)[:80]}\t{_pg_time(when)}"
            )
        detail = (
            f'{{"truoc": "{rng.choice(p.sentences)}", "sau": "{rng.choice(p.sentences)}", '
            f'"ua": "Mozilla/5.0"}}'
        )
        return (
            f"{row_id}\t{_rand(rng, 1, 3000)}\t{AUDIT_ACTIONS[int(r() * len(AUDIT_ACTIONS))]}\t"
            f"{AUDIT_OBJECTS[int(r() * len(AUDIT_OBJECTS))]}:{_rand(rng, 1, 60_000)}\t"
            f"{_rand(rng, 1, 255)}.{int(r() * 256)}.{int(r() * 256)}.{_rand(rng, 1, 255)}\t"
            f"{_pg_time(when)}\t{detail}"
        )

    @staticmethod
    def header() -> str:
        return (
            "--\n-- PostgreSQL database dump\n--\n\n"
            "-- Dumped from database version 15.8 (Debian 15.8-0+deb12u1)\n"
            "-- Dumped by pg_dump version 15.8 (Debian 15.8-0+deb12u1)\n\n"
            "SET statement_timeout = 0;\nSET lock_timeout = 0;\n"
            "SET idle_in_transaction_session_timeout = 0;\nSET client_encoding = 'UTF8';\n"
            "SET standard_conforming_strings = on;\n"
            "SELECT pg_catalog.set_config('search_path', '', false);\n"
            "SET check_function_bodies = false;\nSET xmloption = content;\n"
            "SET client_min_messages = warning;\nSET row_security = off;\n\n"
            "SET default_tablespace = '';\n\nSET default_table_access_method = heap;\n\n"
        )

    @staticmethod
    def table_head(table: str) -> str:
        cols = PG_TABLES[table][1].split(", ")
        body = ",\n".join(f"    {c} {'bigint NOT NULL' if c == 'id' else 'text'}" for c in cols)
        return (
            f"--\n-- Name: {table}; Type: TABLE; Schema: public; Owner: portal\n--\n\n"
            f"CREATE TABLE public.{table} (\n{body}\n);\n\n\n"
            f"ALTER TABLE public.{table} OWNER TO portal;\n\n"
        )

    @staticmethod
    def copy_head(table: str) -> str:
        return (
            f"--\n-- Data for Name: {table}; Type: TABLE DATA; Schema: public; Owner: portal\n"
            f"--\n\nCOPY public.{table} ({PG_TABLES[table][1]}) FROM stdin;\n"
        )

    @staticmethod
    def footer() -> str:
        out = [
            f"--\n-- Name: {t} {t}_pkey; Type: CONSTRAINT; Schema: public; Owner: portal\n--\n\n"
            f"ALTER TABLE ONLY public.{t}\n    ADD CONSTRAINT {t}_pkey PRIMARY KEY (id);\n\n\n"
            for t in PG_TABLES
        ]
        return "".join(out) + "--\n-- PostgreSQL database dump complete\n--\n\n"


def generate_profile(
    root: Path, profile: str, size_gb: float = DEFAULT_SIZE_GB, seed: int = DEFAULT_SEED
) -> CorpusStats:
    """Day 1 of ``profile`` (``portal`` or ``smallfiles``) under ``root``."""
    if profile == "portal":
        return generate(root, size_gb, seed)
    if profile != "smallfiles":
        raise ValueError(f"unknown corpus profile {profile!r}")
    t0 = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    stats = CorpusStats(root=str(root), size_gb=size_gb, seed=seed)
    stats.generator_version = SMALLFILES_VERSION
    total = int(size_gb * GB * SMALLFILES_SCALE)
    pools = TextPools(seed)
    _sf_code(root, seed, pools, total, stats)
    _sf_logs(root, seed, pools, int(total * SF_SHARE_LOGS), stats)
    _sf_dump(root, seed, pools, int(total * SF_SHARE_SQL), stats)
    media = max(1_000_000, total - stats.bytes)
    _sf_media(root, seed, media, stats)
    stats.seconds = round(time.monotonic() - t0, 2)
    return stats


def next_day_profile(
    root: Path, profile: str, seed: int = DEFAULT_SEED, day: int = 2
) -> MutationStats:
    """Day ``day`` of ``profile`` from day ``day - 1`` (new inodes only, as ``next_day``)."""
    if profile == "portal":
        return next_day(root, seed, day)
    t0 = time.monotonic()
    rng = rng_for(seed, f"sf-day{day}")
    pools = TextPools(seed)
    ms = MutationStats()
    files = list_files(root)
    _sf_next_logs(root, seed, pools, ms, day)
    _sf_next_code(root, rng, pools, files, ms, day)
    _sf_next_media(root, rng, files, ms, day)
    _sf_next_dump(root, pools, rng, ms, day)
    ms.seconds = round(time.monotonic() - t0, 2)
    return ms


def _sf_config(rng: random.Random, pools: TextPools, rel: str) -> bytes:
    lines = [f"# {rel}", f"# {rng.choice(pools.sentences)}"]
    for _ in range(rng.randint(4, 60)):
        key = rng.choice(pools.idents).lower()
        val = rng.choice((str(rng.randrange(10**5)), rng.choice(pools.idents), "true", "false"))
        lines.append(f"{key}{'' if rng.random() < 0.5 else '_' + rng.choice(CODE_WORDS)}: {val}")
    return ("\n".join(lines) + "\n").encode()


def _sf_tree(rng: random.Random, app: str, n_files: int) -> list[tuple[str, str]]:
    """(relative path, kind) in many shallow-to-deep directories (~8 files a directory)."""
    tops = ("src", "src", "src", "templates", "templates", "lang", "config", "public/assets")
    dirs = [f"var/www/{app}/{t}" for t in tops]
    kinds = {
        "src": ("php", "php", "php", "js", "conf"),
        "templates": ("html", "html", "css", "js"),
        "lang": ("po",),
        "config": ("conf",),
        "public/assets": ("js", "css", "css"),
    }
    out: list[tuple[str, str]] = []
    while len(out) < n_files:
        parent = rng.choice(dirs)
        if parent.count("/") < 9 and rng.random() < 0.12:
            dirs.append(f"{parent}/{rng.choice(CODE_WORDS)}{rng.choice(('', 's', '_v2', 'Lib'))}")
            continue
        top = next(t for t in sorted(kinds, key=len, reverse=True) if f"/{app}/{t}" in parent)
        kind = rng.choice(kinds[top])
        ext = {"php": ".php", "js": ".js", "css": ".css", "html": ".twig", "conf": ".yml"}
        ext["po"] = ".po"
        name = rng.choice(CODE_WORDS) + rng.choice(CODE_WORDS).capitalize()
        out.append((f"{parent}/{name}{len(out)}{ext[kind]}", kind))
    return out


def _sf_file(pools: TextPools, rng: random.Random, rel: str, kind: str, size: int) -> bytes:
    if kind == "conf":
        return _sf_config(rng, pools, rel)
    if kind == "po":
        return "".join(
            f'msgid "{rng.choice(pools.idents)}"\nmsgstr "{rng.choice(pools.sentences)}"\n\n'
            for _ in range(max(1, size // 120))
        ).encode()
    return code_bytes(pools, rng, kind, rel, size)


def _sf_size(rng: random.Random) -> int:
    return int(min(64_000, max(60, rng.lognormvariate(math.log(2200), 1.1))))


def _sf_code(root: Path, seed: int, pools: TextPools, total: int, stats: CorpusStats) -> None:
    n = max(100, int(SMALL_FILES_PER_GB * total / GB))
    for app in SF_APPS:
        rng = rng_for(seed, f"sf-code:{app}")
        for i in range(6):
            rel = f"etc/{app}/{('app', 'db', 'cache', 'queue', 'mail', 'nginx')[i]}.yml"
            stats.add("config", _write(root / rel, _sf_config(rng, pools, rel), DAY1 - DAY * 30))
        for rel, kind in _sf_tree(rng, app, n // len(SF_APPS)):
            data = _sf_file(pools, rng, rel, kind, _sf_size(rng))
            stats.add("code", _write(root / rel, data, DAY1 - rng.randrange(500 * DAY)))


def _sf_logs(root: Path, seed: int, pools: TextPools, budget: int, stats: CorpusStats) -> None:
    """Three days of access log and application log per app, plain text (compressible)."""
    for app in SF_APPS:
        rng = rng_for(seed, f"sf-logs:{app}")
        maker = LogMaker(seed, f"{app}.vinhphuc.gov.vn", pools)
        share = budget // len(SF_APPS)
        access = maker.lines(rng, DAY1 - 3 * DAY, 3 * DAY, share * 3 // 4)
        stats.add("logs", _write(root / f"var/log/{app}/access.log", access, DAY1))
        stats.add(
            "logs",
            _write(
                root / f"var/log/{app}/app.log",
                _sf_app_log(rng, pools, DAY1 - 3 * DAY, share // 4),
                DAY1,
            ),
        )


def _sf_app_log(rng: random.Random, pools: TextPools, start: int, nbytes: int) -> bytes:
    out: list[str] = []
    done = 0
    ts = start
    while done < nbytes:
        ts += rng.randrange(1, 20)
        level = rng.choice(("INFO", "INFO", "INFO", "DEBUG", "WARNING", "ERROR"))
        line = (
            f"[{_sql_datetime(ts)}] production.{level}: {rng.choice(pools.sentences)} "
            f'{{"user_id":{rng.randrange(3000)},"ho_so":"HS-{rng.randrange(10**8):08d}"}}\n'
        )
        out.append(line)
        done += len(line)
    return "".join(out).encode()


def _sf_dump(root: Path, seed: int, pools: TextPools, budget: int, stats: CorpusStats) -> None:
    rng = rng_for(seed, "sf-dump")
    maker = PgMaker(pools)

    def pieces() -> Iterator[bytes]:
        yield maker.header().encode()
        for table in PG_TABLES:
            yield maker.table_head(table).encode()
        for table, (share, _cols) in PG_TABLES.items():
            parts = [maker.copy_head(table)]
            size, done, row_id = 0, 0, 1
            want = int(budget * share / 1.25)  # counted in characters; UTF-8 is ~1.25x
            start, span = DAY1 - 5 * 365 * DAY, 5 * 365 * DAY - DAY
            while done < want:
                when = start + int(span * done / want)
                line = maker.row(rng, table, row_id, when, when + rng.randrange(30 * DAY)) + "\n"
                parts.append(line)
                row_id += 1
                size += len(line)
                done += len(line)
                if size > WRITE_CHUNK:
                    yield "".join(parts).encode()
                    parts, size = [], 0
            parts.append("\\.\n\n\n")
            yield "".join(parts).encode()
        yield maker.footer().encode()

    stats.add("sql", _write(root / PG_PATH, pieces(), DAY1 - 1200))


def _sf_media(root: Path, seed: int, budget: int, stats: CorpusStats) -> None:
    rng = rng_for(seed, "sf-media")
    done = i = 0
    while done < budget:
        app = rng.choice(SF_APPS)
        age = rng.randrange(1, 3 * 365)
        t = time.gmtime(DAY1 - age * DAY)
        ext, data = media_file(rng, budget - done, 8_000_000)
        name = f"{rng.choice(CODE_WORDS)}-{i}.{ext}"
        rel = f"var/www/{app}/storage/uploads/{t.tm_year}/{t.tm_mon:02d}/{name}"
        written = _write(root / rel, data, DAY1 - age * DAY + rng.randrange(DAY))
        done += written
        stats.add("media", written)
        i += 1


def _sf_next_logs(root: Path, seed: int, pools: TextPools, ms: MutationStats, day: int) -> None:
    today = DAY1 + (day - 1) * DAY
    for app in SF_APPS:
        rng = rng_for(seed, f"sf-day{day}-logs:{app}")
        maker = LogMaker(seed, f"{app}.vinhphuc.gov.vn", pools)
        for name in ("access.log", "app.log"):
            path = root / f"var/log/{app}/{name}"
            old = path.read_bytes()
            n = len(old) // (day + 1)
            new = (
                maker.lines(rng, today - DAY, DAY, n)
                if name == "access.log"
                else _sf_app_log(rng, pools, today - DAY, n)
            )
            ms.bytes_written += _write(path, [old, new], today)
            ms.changed_files.append(f"var/log/{app}/{name}")


def _sf_next_code(
    root: Path,
    rng: random.Random,
    pools: TextPools,
    files: list[str],
    ms: MutationStats,
    day: int,
) -> None:
    """~0.5% of the small files edited, ~0.2% added (a deploy), ~0.05% deleted."""
    today = DAY1 + (day - 1) * DAY
    code = [f for f in files if f.startswith("var/www/") and "/storage/" not in f]
    for rel in sorted(rng.sample(code, max(3, len(code) // 200))):
        path = root / rel
        kind = rel.rsplit(".", 1)[-1]
        kind = {"twig": "html", "yml": "conf"}.get(kind, kind)
        lines = path.read_bytes().split(b"\n")
        at = rng.randrange(len(lines))
        patch = _sf_file(pools, rng, rel, kind, rng.randint(80, 1500)).split(b"\n")
        lines[at : at + rng.randint(0, 12)] = patch[3:]
        ms.bytes_written += _write(path, b"\n".join(lines), today - rng.randrange(20 * 3600))
        ms.changed_files.append(rel)
    for i, rel in enumerate(sorted(rng.sample(code, max(2, len(code) // 500)))):
        new = f"{rel.rsplit('/', 1)[0]}/day{day}new{i}.{rel.rsplit('.', 1)[-1]}"
        kind = {"twig": "html", "yml": "conf"}.get(new.rsplit(".", 1)[-1], new.rsplit(".", 1)[-1])
        data = _sf_file(pools, rng, new, kind, _sf_size(rng))
        ms.bytes_written += _write(root / new, data, today - rng.randrange(20 * 3600))
        ms.added_files.append(new)
    unchanged = sorted(set(code) - set(ms.changed_files))
    for rel in sorted(rng.sample(unchanged, max(1, len(code) // 2000))):
        (root / rel).unlink()
        ms.deleted_files.append(rel)


def _sf_next_media(
    root: Path, rng: random.Random, files: list[str], ms: MutationStats, day: int
) -> None:
    today = DAY1 + (day - 1) * DAY
    media = [f for f in files if "/storage/uploads/" in f]
    gone = sorted(rng.sample(media, min(len(media), max(1, len(media) // 500))))
    for rel in gone:
        (root / rel).unlink()
    ms.deleted_files.extend(gone)
    budget = max(500_000, sum((root / f).stat().st_size for f in media if f not in gone) // 200)
    done = i = 0
    while done < budget:
        app = rng.choice(SF_APPS)
        ext, data = media_file(rng, budget - done, max(500_000, budget // 2))
        rel = f"var/www/{app}/storage/uploads/2025/06/day{day}-{i}.{ext}"
        done += _write(root / rel, data, today - rng.randrange(20 * 3600))
        ms.added_files.append(rel)
        i += 1
    ms.bytes_written += done


def _sf_next_dump(
    root: Path, pools: TextPools, rng: random.Random, ms: MutationStats, day: int
) -> None:
    """Tonight's pg_dump: the same tables in physical order, ~0.5% of rows updated (uniformly
    scattered, new lengths), new rows appended; written whole to a new file."""
    today = DAY1 + (day - 1) * DAY
    path = root / PG_PATH
    data = path.read_bytes()
    maker = PgMaker(pools)
    out: list[bytes] = []
    at = 0
    for table in PG_TABLES:
        head = f"COPY public.{table} (".encode()
        start = data.index(b"\n", data.index(head)) + 1
        end = data.index(b"\n\\.\n", start) + 1  # just after the last row's newline
        nrows = data.count(b"\n", start, end)
        picks = sorted(
            {
                data.rfind(b"\n", start, rng.randrange(start, end)) + 1 or start
                for _ in range(max(1, int(nrows * PG_UPDATE_SHARE)))
            }
        )
        out.append(data[at:start])
        at = start
        for pick in picks:
            row_start = max(pick, start)
            if row_start < at:
                continue
            row_end = data.index(b"\n", row_start) + 1
            row_id = int(data[row_start : data.index(b"\t", row_start)])
            when = today - rng.randrange(5 * 365 * DAY)
            out.append(data[at:row_start])
            out.append(
                (maker.row(rng, table, row_id, when, today - rng.randrange(DAY)) + "\n").encode()
            )
            at = row_end
            ms.sql_rows_rewritten += 1
        out.append(data[at:end])
        at = end
        last = data.rfind(b"\n", start, end - 1) + 1
        last_id = int(data[max(last, start) : data.index(b"\t", max(last, start))])
        n_new = max(1, int(nrows * PG_NEW_ROWS[table]))
        out.append(
            "".join(
                maker.row(rng, table, last_id + 1 + i, today - rng.randrange(DAY), today) + "\n"
                for i in range(n_new)
            ).encode()
        )
        ms.sql_rows_appended += n_new
    out.append(data[at:])
    del data
    path.unlink()
    ms.bytes_written += _write(path, out, today - 1200)
    ms.changed_files.append(PG_PATH)


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="cmd", required=True)
    gen = sub.add_parser("generate", help="write the day-1 corpus into an empty directory")
    gen.add_argument("dir", type=Path)
    size = gen.add_mutually_exclusive_group()
    size.add_argument("--size-gb", type=float, default=DEFAULT_SIZE_GB)
    size.add_argument("--small", action="store_true", help=f"{SMALL_SIZE_GB} GB")
    nxt = sub.add_parser("next-day", help="apply the day-2 changes to a day-1 corpus")
    nxt.add_argument("dir", type=Path)
    nxt.add_argument("--day", type=int, default=2, help="the day to make (from day - 1)")
    for p in (gen, nxt):
        p.add_argument("--seed", type=int, default=DEFAULT_SEED)
        p.add_argument("--profile", choices=PROFILES, default="portal")
    args = parser.parse_args(argv)
    if args.cmd == "generate":
        size_gb = SMALL_SIZE_GB if args.small else args.size_gb
        stats = generate_profile(args.dir, args.profile, size_gb, args.seed)
        rate = stats.bytes / MB / max(stats.seconds, 1e-9)
        print(json.dumps(asdict(stats), indent=2))
        print(
            f"generated {stats.files} files, {stats.bytes / MB:.0f} MB in {stats.seconds:.1f} s"
            f" ({rate:.0f} MB/s)",
            file=sys.stderr,
        )
    else:
        ms = next_day_profile(args.dir, args.profile, args.seed, args.day)
        print(json.dumps(ms.summary(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
