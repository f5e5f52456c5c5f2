"""The nginx fixture serves real files and picks up extra server blocks on reload."""

from __future__ import annotations

import http.client
import subprocess

import pytest

from tests.fixtures.nginx import INDEX_HTML, NginxServer
from tests.fixtures.procs import free_port, wait_until

pytestmark = pytest.mark.integration


def _request(
    port: int, path: str, host_header: str = "localhost"
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host_header})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_serves_vietnamese_page(nginx_server: NginxServer) -> None:
    status, headers, body = _request(nginx_server.port, "/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert body.decode("utf-8") == INDEX_HTML
    assert "Ủy ban nhân dân tỉnh Quảng Nam" in body.decode("utf-8")
    assert headers["server"].startswith("nginx")


def test_missing_file_is_404_and_logged(nginx_server: NginxServer) -> None:
    status, _, _ = _request(nginx_server.port, "/khong-co.html")
    assert status == 404
    # nginx logs after the response has gone out, so the line may lag a moment behind
    wait_until(
        lambda: '"GET /khong-co.html HTTP/1.1" 404' in nginx_server.access_log.read_text(),
        timeout=5,
        what="the 404 shows up in the access log",
        log=nginx_server.access_log,
    )


def test_file_added_to_webroot_is_served(nginx_server: NginxServer) -> None:
    text = "Tin tức: lịch tiếp công dân"
    (nginx_server.webroot / "tin-tuc.txt").write_text(text, encoding="utf-8")
    status, headers, body = _request(nginx_server.port, "/tin-tuc.txt")
    assert status == 200
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert body.decode("utf-8") == text


def test_add_server_block_and_reload(nginx_server: NginxServer) -> None:
    port = free_port()
    nginx_server.add_server(
        "so-tttt",
        f"""
        server {{
            listen 127.0.0.1:{port};
            server_name stttt.quangnam.gov.vn;
            location / {{ default_type text/plain; return 200 "Sở Thông tin và Truyền thông"; }}
        }}
        """,
    )
    status, _, body = _request(port, "/", host_header="stttt.quangnam.gov.vn")
    assert status == 200
    assert body.decode("utf-8") == "Sở Thông tin và Truyền thông"
    # the default server still answers after the reload
    assert _request(nginx_server.port, "/")[0] == 200


def test_broken_server_block_is_refused_before_reload(nginx_server: NginxServer) -> None:
    with pytest.raises(pytest.fail.Exception, match="nginx -t"):
        nginx_server.add_server("broken", "server { listen 127.0.0.1:1; no_such_directive on; }")
    # the running config is untouched, and the rejected block does not block later reloads
    assert _request(nginx_server.port, "/")[0] == 200
    assert not (nginx_server.conf_d / "broken.conf").exists()
    nginx_server.reload()


def test_config_passes_nginx_t(nginx_server: NginxServer) -> None:
    done = subprocess.run(
        nginx_server.nginx_argv("-t"), capture_output=True, text=True, timeout=10, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr
