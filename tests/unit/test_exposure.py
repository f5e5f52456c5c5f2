"""Sensitive-path exposure (Art. 19): findings come from content, never from a 200 alone."""

import gzip
import hashlib
import io
import os
import time
import zipfile

import pytest

from portalops.monitors.exposure import (
    CHECKS,
    READ_LIMIT,
    ExposureInputError,
    Fetched,
    checks,
    judge,
    not_found_path,
    paths,
)
from portalops.monitors.findings import Finding, Severity, by_severity, excerpt, worst

DOMAIN = "daotru.tamdao.vinhphuc.gov.vn"
NOT_FOUND = not_found_path("9f3b2c4d5e6a7b8c")

# A commune portal's home page; one article quotes a directory listing, a SQL statement and an
# environment variable, as a training notice from the Sở TT&TT might.
HOME = """<!DOCTYPE html>
<html lang="vi"><head><meta charset="utf-8">
<title>Cổng thông tin điện tử xã Đạo Trù - huyện Tam Đảo</title>
<script>var csrf = "{token}";</script></head>
<body><div class="menu"><a href="/">Trang chủ</a><a href="/gioi-thieu">Giới thiệu</a>
<a href="/tin-tuc">Tin tức - Sự kiện</a><a href="/van-ban">Văn bản</a></div>
<div class="date">Thứ Bảy, ngày 28/11/2026</div>
<article><h1>Index of /uploads/ - hướng dẫn tắt liệt kê thư mục</h1>
<p>Khi trình duyệt hiện "Parent Directory", máy chủ đang bật autoindex.</p>
<pre>CREATE TABLE hoso (id int);
APP_KEY=base64:... và DB_PASSWORD= không được để trong thư mục web</pre></article>
<div class="counter">Lượt truy cập: 1.234.567</div>
<footer>UBND xã Đạo Trù, huyện Tam Đảo, tỉnh Vĩnh Phúc. Đường dẫn: {path}</footer>
</body></html>"""


def home(path: str, status: int = 200) -> Fetched:
    """What a soft-404 portal answers for path: its home page, a fresh CSRF token in it and the
    path echoed in the footer."""
    token = hashlib.sha256(path.encode()).hexdigest()
    body = HOME.format(path=path, token=token).encode()
    return Fetched(path, status, (("Content-Type", "text/html; charset=utf-8"),), body)


NGINX_404 = b"""<html>
<head><title>404 Not Found</title></head>
<body>
<center><h1>404 Not Found</h1></center>
<hr><center>nginx</center>
</body>
</html>
"""

GIT_CONFIG = b"""[core]
\trepositoryformatversion = 0
\tfilemode = true
\tbare = false
\tlogallrefupdates = true
[remote "origin"]
\turl = https://deploy:glpat-x7Kq2Lr9vZ3mN8pW@gitlab.vnpt-cms.vn/portal/daotru.git
\tfetch = +refs/heads/*:refs/remotes/origin/*
[branch "master"]
\tremote = origin
\tmerge = refs/heads/master
"""

DOTENV = b"""APP_NAME="Cong TTDT xa Dao Tru"
APP_ENV=production
APP_KEY=base64:q3Jx0mYz5yP6h1vKk8r2T9c0n4bW7eLd2sF5gH8jK1M=
APP_DEBUG=false

# database
DB_CONNECTION=mysql
DB_HOST=10.0.3.21
DB_DATABASE=portal_daotru
DB_USERNAME=portal
DB_PASSWORD=Vp@2026!secret
MAIL_PASSWORD=
"""

MYSQLDUMP = b"""-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)
--
-- Host: localhost    Database: portal_daotru
-- ------------------------------------------------------
-- Server version\t8.0.36-0ubuntu0.22.04.1

/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!50503 SET NAMES utf8mb4 */;

--
-- Table structure for table `tin_tuc`
--

DROP TABLE IF EXISTS `tin_tuc`;
CREATE TABLE `tin_tuc` (
  `id` int NOT NULL AUTO_INCREMENT,
  `tieu_de` varchar(500) NOT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

LOCK TABLES `users` WRITE;
INSERT INTO `users` VALUES (1,'admin','$2y$10$abcdefghijklmnopqrstuv');
"""

NGINX_AUTOINDEX = b"""<html>
<head><title>Index of /uploads/</title></head>
<body>
<h1>Index of /uploads/</h1><hr><pre><a href="../">../</a>
<a href="2024/">2024/</a>                                   12-Mar-2024 08:15                   -
<a href="danh-sach-ho-ngheo-2024.xlsx">danh-sach-ho-ngheo-2024.xlsx</a>  05-Jan-2024 09:02  48213
<a href="cccd-scan.zip">cccd-scan.zip</a>                   06-Jan-2024 10:40             5242880
</pre><hr></body>
</html>
"""

APACHE_AUTOINDEX = b"""<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">
<html>
 <head>
  <title>Index of /backup</title>
 </head>
 <body>
<h1>Index of /backup</h1>
  <table>
   <tr><th><a href="?C=N;O=D">Name</a></th><th><a href="?C=M;O=A">Last modified</a></th></tr>
   <tr><td><a href="/">Parent Directory</a></td><td>&nbsp;</td></tr>
   <tr><td><a href="portal-2024-03-01.sql.gz">portal-2024-03-01.sql.gz</a></td></tr>
</table>
</body></html>
"""

PHPINFO = b"""<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
 "DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml"><head>
<style type="text/css">body {background-color: #fff; color: #222;}</style>
<title>PHP 7.4.33 - phpinfo()</title><meta name="ROBOTS" content="NOINDEX,NOFOLLOW" /></head>
<body><div class="center">
<table><tr class="h"><td>
<a href="http://www.php.net/"><img border="0" src="data:image/png;base64,iVBORw0KGgo=" />
</a><h1 class="p">PHP Version 7.4.33</h1>
</td></tr></table>
<table>
<tr><td class="e">System </td>
<td class="v">Linux web01 5.15.0-91-generic #101-Ubuntu SMP x86_64 </td></tr>
<tr><td class="e">Build Date </td><td class="v">Nov  6 2022 13:09:14 </td></tr>
"""

APACHE_STATUS = b"""<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">
<html><head><title>Apache Status</title></head><body>
<h1>Apache Server Status for daotru.tamdao.vinhphuc.gov.vn (via 10.0.3.15)</h1>
<dl><dt>Server Version: Apache/2.4.57 (Debian) OpenSSL/3.0.11</dt>
<dt>Server MPM: prefork</dt>
</dl><hr /><dl>
<dt>Current Time: Saturday, 28-Nov-2026 23:05:12 +07</dt>
<dt>Server uptime:  3 days 4 hours 2 minutes 11 seconds</dt>
<dt>Total accesses: 1234567 - Total Traffic: 12.3 GB</dt>
</dl>
"""

# stub_status ends its lines with a space.
NGINX_STATUS = (
    b"Active connections: 291 \nserver accepts handled requests\n"
    b" 16630948 16630948 31070465 \nReading: 6 Writing: 179 Waiting: 106 \n"
)


def zip_head() -> bytes:
    """The first bytes of a site backup made with 'zip -r www.zip www'."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("www/index.php", "<?php require 'config.php';")
        archive.writestr("www/config.php", "<?php $db_password = 'Vp@2026!secret';")
    return buffer.getvalue()[:64]


def ok(path: str, body: bytes, *headers: tuple[str, str]) -> Fetched:
    return Fetched(path, 200, headers, body)


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, findings
    return findings[0]


# --- What to fetch ---------------------------------------------------------------------------


def test_paths_cover_the_table_then_the_portals_own_archive_names() -> None:
    listed = paths(DOMAIN)
    assert listed[:5] == ["/.git/config", "/.git/HEAD", "/.env", "/.svn/entries", "/.svn/wc.db"]
    assert listed[-4:] == [
        "/daotru.zip",
        "/daotru.tar.gz",
        "/daotru.sql",
        "/daotru.tamdao.vinhphuc.gov.vn.zip",
    ]
    assert len(listed) == len(set(listed)) == len(CHECKS) + 4
    assert [c.path for c in checks(DOMAIN)] == listed
    assert {c.code for c in checks(DOMAIN)} == {
        "exposure.git", "exposure.env", "exposure.svn", "exposure.backup_file",
        "exposure.phpinfo", "exposure.server_status", "exposure.directory_listing",
    }  # fmt: skip
    assert {"/uploads/", "/backup/", "/phpinfo.php", "/nginx_status", "/db.sql"} <= set(listed)


def test_www_is_not_an_archive_name() -> None:
    assert paths("WWW.vinhphuc.gov.vn.")[-4:-1] == [
        "/vinhphuc.zip",
        "/vinhphuc.tar.gz",
        "/vinhphuc.sql",
    ]


@pytest.mark.parametrize("bad", ["localhost", "xã-đạotrù.vn", "a..b.vn", "-x.gov.vn", ""])
def test_bad_domains_are_refused(bad: str) -> None:
    with pytest.raises(ExposureInputError, match="not a domain name"):
        paths(bad)


def test_not_found_path_wants_fresh_hex() -> None:
    assert not_found_path("00ff00ff") == "/portalops-404-00ff00ff"
    with pytest.raises(ExposureInputError, match="hex"):
        not_found_path("../etc")


# --- Each exposure, recognised by content ----------------------------------------------------


def test_git_config_is_critical_and_the_remote_token_is_masked() -> None:
    found = only(judge([ok("/.git/config", GIT_CONFIG)], Fetched(NOT_FOUND, 404, (), NGINX_404)))
    assert (found.code, found.severity, found.subject) == (
        "exposure.git",
        "critical",
        "/.git/config",
    )
    assert found.message.startswith("/.git/config is served")
    assert found.evidence == (
        '[core] repositoryformatversion = 0 [remote "origin"] '
        'url = https://***@gitlab.vnpt-cms.vn/portal/daotru.git [branch "master"]'
    )
    assert "glpat" not in found.evidence


def test_git_head_branch_or_detached() -> None:
    branch = only(judge([ok("/.git/HEAD", b"ref: refs/heads/master\n")], None))
    assert (branch.code, branch.evidence) == ("exposure.git", "ref: refs/heads/master")
    detached = only(judge([ok("/.git/HEAD", b"3f786850e387550fdab836ed7e6dc881de23001b\n")], None))
    assert detached.evidence == "3f786850e387550fdab836ed7e6dc881de23001b"


def test_dotenv_names_its_keys_and_masks_every_value() -> None:
    found = only(judge([ok("/.env", DOTENV)], None))
    assert (found.code, found.severity) == ("exposure.env", Severity.CRITICAL)
    assert found.evidence.startswith("10 variables: APP_NAME=***, APP_ENV=***, APP_KEY=***")
    assert "DB_PASSWORD=***" in found.evidence
    assert found.evidence.endswith("MAIL_PASSWORD=")  # empty: nothing to hide
    assert len(found.evidence) <= 200
    for secret in ("Vp@2026", "q3Jx0", "10.0.3.21", "production"):
        assert secret not in found.evidence


def test_subversion_entries_and_wc_db() -> None:
    fetched = [
        ok("/.svn/entries", b"12\n"),
        ok("/.svn/wc.db", b"SQLite format 3\x00\x10\x00\x01\x01\x00@  " + bytes(80)),
    ]
    found = judge(fetched, None)
    assert [(f.code, f.subject) for f in found] == [
        ("exposure.svn", "/.svn/entries"),
        ("exposure.svn", "/.svn/wc.db"),
    ]
    old = b"10\n\ndir\n1534\nsvn://svn.vinhphuc.local/portal/trunk\n"
    assert only(judge([ok("/.svn/entries", old)], None)).evidence == (
        "format 10, revision 1534, svn://svn.vinhphuc.local/portal/trunk"
    )


def test_zip_backup_by_magic_bytes_with_the_size_the_server_gave() -> None:
    response = Fetched("/www.zip", 206, (("Content-Range", "bytes 0-63/734003200"),), zip_head())
    found = only(judge([response], None))
    assert (found.code, found.severity) == ("exposure.backup_file", "critical")
    assert found.evidence == "zip archive, first entry 'www/index.php'"
    assert found.message.endswith("Size: 700.0 MiB.")


def test_gzip_under_the_portals_own_name() -> None:
    body = gzip.compress(b"x" * 1000, mtime=0)
    # gzip.compress writes no name; 'tar czf' through gzip(1) does (FNAME).
    named = body[:3] + b"\x08" + body[4:10] + b"daotru.tar\x00" + body[10:]
    found = only(judge([ok("/daotru.tar.gz", named, ("Content-Length", "2048"))], None))
    assert found.evidence == "gzip data of 'daotru.tar'"
    assert found.message.endswith("Size: 2.0 KiB.")
    assert only(judge([ok("/backup.tar.gz", body)], None)).evidence == "gzip data"


def test_mysqldump_by_its_header_and_tables() -> None:
    found = only(judge([ok("/db.sql", MYSQLDUMP)], None))
    assert found.evidence == (
        "-- MySQL dump 10.13 Distrib 8.0.36, for Linux (x86_64); tables tin_tuc, users"
    )
    bare = b"CREATE TABLE hoso (id integer);\nINSERT INTO hoso VALUES (1);\n"
    assert only(judge([ok("/dump.sql", bare)], None)).evidence == "SQL statements; tables hoso"


def test_phpinfo_page() -> None:
    found = only(judge([ok("/info.php", PHPINFO)], None))
    assert (found.code, found.severity) == ("exposure.phpinfo", "critical")
    assert (
        found.evidence
        == "PHP Version 7.4.33; System Linux web01 5.15.0-91-generic #101-Ubuntu SMP x86_64"
    )


def test_status_pages_are_warnings() -> None:
    found = judge([ok("/nginx_status", NGINX_STATUS), ok("/server-status", APACHE_STATUS)], None)
    assert [(f.subject, f.severity) for f in found] == [
        ("/server-status", "warning"),
        ("/nginx_status", "warning"),
    ]  # in the order of paths(), not of arrival
    assert found[0].evidence == (
        "Apache Server Status for daotru.tamdao.vinhphuc.gov.vn (via 10.0.3.15); "
        "Server Version: Apache/2.4.57 (Debian) OpenSSL/3.0.11; "
        "Server uptime: 3 days 4 hours 2 minutes 11 seconds"
    )
    assert found[1].evidence == (
        "Active connections: 291; accepts handled requests 16630948 16630948 31070465; "
        "Reading: 6 Writing: 179 Waiting: 106"
    )


def test_directory_listings_nginx_and_apache() -> None:
    found = judge([ok("/uploads/", NGINX_AUTOINDEX), ok("/backup/", APACHE_AUTOINDEX)], None)
    assert [(f.code, f.severity, f.subject) for f in found] == [
        ("exposure.directory_listing", "warning", "/uploads/"),
        ("exposure.directory_listing", "warning", "/backup/"),
    ]
    assert found[0].evidence == (
        "Index of /uploads/: 3 entries (2024/, danh-sach-ho-ngheo-2024.xlsx, cccd-scan.zip)"
    )
    assert found[1].evidence == "Index of /backup: 1 entries (portal-2024-03-01.sql.gz)"
    assert "autoindex off" in found[0].message


IIS_LISTING = """<html><head><title>daotru.tamdao.vinhphuc.gov.vn - /files/</title></head>
<body><H1>daotru.tamdao.vinhphuc.gov.vn - /files/</H1><hr>
<pre><A HREF="/">[To Parent Directory]</A><br><br>
 3/1/2024  9:12 AM        12288 <A HREF="/files/quyet-dinh-12.doc">quyet-dinh-12.doc</A><br>
</pre><hr></body></html>"""


def test_iis_directory_listing_is_still_found() -> None:
    (found,) = judge([ok("/files/", IIS_LISTING.encode())], None)
    assert found.evidence == "listing of /files/: 1 entries (/files/quyet-dinh-12.doc)"


# Bodies built to make a backtracking matcher quadratic (each took 1.4 to 7.8 s against one
# path before the matchers were made linear; 37 paths made a probe cost nearly a minute).
CRAFTED = {
    "iis title of dashes": ("<title>" + " - /" * READ_LIMIT)[: READ_LIMIT - 8] + "</title>",
    "iis open title": ("<title>" + " - /x" * READ_LIMIT)[:READ_LIMIT],
    "php version tags": ("PHP Version</" * READ_LIMIT)[:READ_LIMIT],
    "stub_status blank run": "Active connections: 1" + "\n" * (READ_LIMIT - 40) + "x",
    "sql blank lines": "-- x\n" + "\n" * (READ_LIMIT - 10) + "x",
    "phpinfo titles": ("<title>" + "phpinfo() " * READ_LIMIT)[:READ_LIMIT],
}


@pytest.mark.parametrize("body", CRAFTED.values(), ids=CRAFTED.keys())
def test_crafted_bodies_on_every_path_are_judged_in_linear_time(body: str) -> None:
    started = time.process_time()
    assert judge([ok(path, body.encode()) for path in paths(DOMAIN)], None) == []
    assert time.process_time() - started < 1.0  # about 0.01 to 0.2 s here


# --- What is not a finding -------------------------------------------------------------------


def test_soft_404_portal_gives_nothing_with_or_without_the_baseline() -> None:
    everything = [home(path) for path in paths(DOMAIN)]
    assert judge(everything, home(NOT_FOUND)) == []
    # The article quoting "Index of /uploads/", CREATE TABLE and APP_KEY= fools no matcher.
    assert judge(everything, None) == []


def test_a_soft_404_portal_still_shows_what_it_really_exposes() -> None:
    fetched = [home(path) for path in paths(DOMAIN) if path != "/.env"] + [ok("/.env", DOTENV)]
    assert [f.code for f in judge(fetched, home(NOT_FOUND))] == ["exposure.env"]


def catch_all(node: str, clock: str, request: str) -> bytes:
    """A server that answers every path with its webroot's listing, stamped per response."""
    listing = NGINX_AUTOINDEX.replace(b"/uploads/", b"/")
    return listing + f"<!-- {node} {clock} request {request} -->".encode()


def test_a_response_identical_to_the_nonexistent_paths_is_not_a_finding() -> None:
    # /uploads/ looks listed, but so does /portalops-404-...: one page for every path, not an
    # exposure of /uploads/. Clock and request id differ (volatile); so does the node's name.
    uploads = ok("/uploads/", catch_all("node-alpha", "23:05:12", "5f3a9c0d1e2b4a6f8c7d"))
    nothing = ok(NOT_FOUND, catch_all("node-gamma", "23:05:13", "0b1c2d3e4f5a6b7c8d9e"))
    assert judge([uploads], nothing) == []
    assert only(judge([uploads], None)).code == "exposure.directory_listing"


def test_a_real_file_the_size_of_the_404_page_is_still_found() -> None:
    config = GIT_CONFIG[: len(NGINX_404)]  # same length, nothing else in common
    assert len(config) == len(NGINX_404)
    found = judge([ok("/.git/config", config)], ok(NOT_FOUND, NGINX_404))
    assert [f.code for f in found] == ["exposure.git"]


@pytest.mark.parametrize("status", [301, 403, 404, 500])
def test_no_finding_without_a_2xx(status: int) -> None:
    assert judge([Fetched("/.env", status, (), DOTENV)], None) == []


def test_matchers_are_binary_safe_and_read_64_kib_only() -> None:
    noise = os.urandom(3 * READ_LIMIT)
    assert judge([ok(p, noise) for p in paths(DOMAIN)], None) == []
    late = b" " * READ_LIMIT + GIT_CONFIG  # starts past what is read
    assert len(ok("/.git/config", late).body) == READ_LIMIT
    assert judge([ok("/.git/config", late)], None) == []


def test_html_page_quoting_a_git_config_is_not_one() -> None:
    page = b"<html><body><pre>" + GIT_CONFIG + b"</pre></body></html>"
    assert judge([ok("/.git/config", page)], None) == []


def test_unknown_path_and_relative_path_are_errors() -> None:
    with pytest.raises(ExposureInputError, match="'/admin' is not a path that paths"):
        judge([ok("/admin", b"")], None)
    with pytest.raises(ExposureInputError, match="does not start with '/'"):
        Fetched(".env", 200, (), b"")


# --- Shared findings helpers -----------------------------------------------------------------


def test_findings_sort_critical_first_and_report_the_worst() -> None:
    found = judge([ok("/uploads/", NGINX_AUTOINDEX), ok("/.env", DOTENV)], None)
    assert [f.severity for f in by_severity(reversed(found))] == ["critical", "warning"]
    assert worst(found) is Severity.CRITICAL
    assert worst([]) is None
    assert found[0].to_json() == {
        "code": "exposure.env",
        "severity": "critical",
        "message": found[0].message,
        "evidence": found[0].evidence,
        "subject": "/.env",
    }
    assert excerpt("a\x00b\n\n  c" + "đ" * 300, 10) == "a?b cđđđđ…"
    assert excerpt("- removed\n+ added  words", 100, one_line=False) == "- removed\n+ added words"
    with pytest.raises(ValueError, match="'urgent' is not a valid Severity"):
        Finding("exposure.env", "urgent", "x")  # type: ignore[arg-type]
