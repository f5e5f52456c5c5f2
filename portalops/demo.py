"""``ops demo``: a sample portal, backed up twice and drilled, with the real commands.

Everything lives under one demo directory: a commune portal's webroot (Vietnamese pages,
images), an nginx configuration, logs, keys, a local repository and the state directory. The
portal's database is a PostgreSQL database on a throwaway cluster the demo starts (socket only,
stopped at the end) when the PostgreSQL server programs are installed, else an SQLite file in
the webroot. Each step runs the real ``ops`` command as a sysadmin would type it and shows its
output.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from portalops.backup.engines.scratch import (
    PG_PORT,
    PostgresScratch,
    ScratchServerError,
    find_postgres_bin,
    throwaway_postgres,
)

# The directory holding the portalops package (a checkout or site-packages): the demo runs
# ``python -m portalops`` with it on the path, installed or not.
PACKAGE_PARENT = Path(__file__).resolve().parent.parent
PG_DATABASE = "portal_daotru"
DEMO_USER = "portal-ops-drill"  # the demo's PostgreSQL runs as the drill's user (when root)

ARTICLES = [
    (
        "Thông báo lịch tiếp công dân tháng 12",
        "Ủy ban nhân dân xã Đạo Trù thông báo lịch tiếp công dân.",
    ),
    ("Kế hoạch phòng chống thiên tai năm 2026", "Xã triển khai phương án ứng phó mưa lũ."),
    ("Hướng dẫn thủ tục hành chính trực tuyến", "Người dân nộp hồ sơ qua Cổng dịch vụ công tỉnh."),
    ("Kết quả bầu cử đại biểu Hội đồng nhân dân", "Tỷ lệ cử tri đi bầu đạt 99,8%."),
    ("Lễ hội Tây Thiên khai mạc", "Hàng nghìn du khách về dự lễ hội."),
]


@dataclass
class Step:
    title: str
    argv: list[str]
    returncode: int = 0
    output: str = ""


@dataclass
class DemoResult:
    directory: Path
    steps: list[Step] = field(default_factory=list)
    database: str = ""

    @property
    def ok(self) -> bool:
        return all(step.returncode == 0 for step in self.steps)


def build_portal(root: Path, seed: int = 2026, *, sqlite: bool = True) -> Path:
    """A commune portal: webroot, nginx config and logs, and an SQLite database if asked."""
    rng = random.Random(seed)  # noqa: S311 - sample content, not secrets
    www = root / "srv" / "portals" / "daotru.tamdao.vinhphuc.gov.vn"
    (www / "tin-tuc").mkdir(parents=True, exist_ok=True)
    (www / "images").mkdir(exist_ok=True)
    (www / "index.html").write_text(
        "<!doctype html><html lang='vi'><meta charset='utf-8'>"
        "<title>Cổng thông tin điện tử xã Đạo Trù</title>"
        "<h1>Xã Đạo Trù, huyện Tam Đảo, tỉnh Vĩnh Phúc</h1>"
        "<a href='https://dichvucong.vinhphuc.gov.vn'>Cổng dịch vụ công</a></html>\n",
        encoding="utf-8",
    )
    for i, (title, body) in enumerate(ARTICLES):
        (www / "tin-tuc" / f"bai-{i + 1}.html").write_text(
            f"<article><h2>{title}</h2><p>{body}</p></article>\n" * 20, encoding="utf-8"
        )
    for i in range(6):
        (www / "images" / f"anh-{i + 1}.jpg").write_bytes(rng.randbytes(400_000))
    if sqlite:
        db = sqlite3.connect(www / "portal.sqlite")
        with db:
            db.execute("create table if not exists articles (id integer primary key, title, body)")
            db.executemany("insert into articles (title, body) values (?, ?)", ARTICLES * 40)
        db.close()
    nginx = root / "etc" / "nginx"
    (nginx / "sites-enabled").mkdir(parents=True, exist_ok=True)
    (nginx / "nginx.conf").write_text(
        "events { worker_connections 64; }\n"
        f"http {{\n    access_log {root}/var/log/nginx/access.log;\n"
        f"    include {nginx}/sites-enabled/*.conf;\n}}\n"
    )
    (nginx / "sites-enabled" / "daotru.conf").write_text(
        "server {\n    listen 127.0.0.1:8080;\n    server_name daotru.tamdao.vinhphuc.gov.vn;\n"
        f"    root {www};\n    charset utf-8;\n}}\n"
    )
    logs = root / "var" / "log" / "nginx"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "access.log").open("w") as log:
        for i in range(20000):
            ip = f"113.160.{rng.randrange(256)}.{rng.randrange(256)}"
            page = f"/tin-tuc/bai-{rng.randrange(1, 6)}.html"
            log.write(
                f'{ip} - - [27/Nov/2026:0{i % 10}:00:00 +0700] "GET {page} HTTP/1.1" 200 '
                f"{rng.randrange(2000, 9000)}\n"
            )
    return www


def next_day(root: Path, www: Path, pg: PostgresScratch | None) -> None:
    """A day of a portal's life: a new article, a database insert, more log lines."""
    import psycopg  # noqa: PLC0415 - only the demo needs it: other commands never load it

    (www / "tin-tuc" / "bai-6.html").write_text(
        "<article><h2>Thông báo mới</h2><p>Nội dung ngày hôm sau.</p></article>\n",
        encoding="utf-8",
    )
    if pg is None:
        db = sqlite3.connect(www / "portal.sqlite")
        with db:
            db.execute("insert into articles (title, body) values (?, ?)", ("Thông báo mới", "..."))
        db.close()
    else:
        with psycopg.connect(pg.conninfo(PG_DATABASE), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO articles (title, body) VALUES (%s, %s)", ("Thông báo mới", "...")
            )
    with (root / "var" / "log" / "nginx" / "access.log").open("a") as log:
        for i in range(2000):
            log.write(
                f'113.160.1.{i % 256} - - [28/Nov/2026:08:00:00 +0700] "GET / HTTP/1.1" 200 512\n'
            )


def start_postgres(stack: ExitStack) -> PostgresScratch | None:
    """The portal's PostgreSQL, seeded; None when the server programs are not installed."""
    import psycopg  # noqa: PLC0415 - only the demo needs it: other commands never load it

    try:
        bin_dir = find_postgres_bin(None)
        pg = stack.enter_context(throwaway_postgres(bin_dir, None, DEMO_USER))
    except ScratchServerError:
        return None
    with psycopg.connect(pg.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {PG_DATABASE}")
    with psycopg.connect(pg.conninfo(PG_DATABASE), autocommit=True) as conn:
        conn.execute("CREATE TABLE articles (id serial PRIMARY KEY, title text, body text)")
        conn.execute("CREATE TABLE units (code int PRIMARY KEY, name text NOT NULL)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO articles (title, body) VALUES (%s, %s)", ARTICLES * 40)
        conn.execute("INSERT INTO units VALUES (9299, 'Xã Đạo Trù'), (9298, 'Thị trấn Tam Đảo')")
    return pg


def write_config(root: Path, pg: PostgresScratch | None = None) -> Path:
    config: dict[str, Any] = {
        "state_dir": str(root / "state"),
        "metrics": {"textfile_dir": str(root / "metrics")},
        "backup": {
            "writer_key": str(root / "keys" / "writer.key"),
            "identity": str(root / "keys" / "identity.txt"),
            "repositories": [{"name": "local", "url": str(root / "repository")}],
            "sources": [
                {
                    "name": "webroot",
                    "kind": "files",
                    "category": "code",
                    "paths": [str(root / "srv" / "portals")],
                },
                {
                    "name": "nginx",
                    "kind": "files",
                    "category": "config",
                    "paths": [str(root / "etc" / "nginx")],
                },
                {
                    "name": "logs",
                    "kind": "files",
                    "category": "logs",
                    "paths": [str(root / "var" / "log")],
                },
            ],
        },
        # scratch in the system temp dir: the drill's database server must be able to enter it
        "drill": {"rto_seconds": 600},
    }
    if pg is not None:
        config["backup"]["sources"].append(
            {
                "name": "portal-db",
                "kind": "postgres",
                "category": "database",
                "dsn": f"host={pg.socket_dir} port={PG_PORT} user=postgres",
                "databases": [PG_DATABASE],
                "bin_dir": str(pg.bin_dir),
            }
        )
        config["drill"]["smoke"] = [
            {"source": "portal-db", "sql": "select count(*) from articles", "min": 1}
        ]
    path = root / "ops.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    (root / "metrics").mkdir(exist_ok=True)
    return path


def _files(name: str, category: str, path: Path) -> dict[str, object]:
    return {"name": name, "kind": "files", "category": category, "paths": [str(path)]}


def run_demo(root: Path, show: Callable[[Step], None]) -> DemoResult:
    """Build the sample portal under ``root`` (emptied first) and run the real commands."""
    if root.exists():
        _remove_demo(root)
    root.mkdir(parents=True)
    with ExitStack() as stack:
        pg = start_postgres(stack)
        www = build_portal(root, sqlite=pg is None)
        return _run_steps(root, www, write_config(root, pg), pg, show)


def _run_steps(
    root: Path, www: Path, config: Path, pg: PostgresScratch | None, show: Callable[[Step], None]
) -> DemoResult:
    result = DemoResult(root)
    result.database = "PostgreSQL (throwaway cluster)" if pg is not None else "SQLite"
    ops = [sys.executable, "-m", "portalops", "--config", str(config)]
    keys = root / "keys"
    keygen = ["backup", "keygen", "--identity", str(keys / "identity.txt")]
    keygen += ["--writer-key", str(keys / "writer.key")]
    plan: list[tuple[str, list[str], Callable[[], None] | None]] = [
        ("Generate the repository keys", keygen, None),
        ("Create the local repository", ["backup", "init"], None),
        ("Day 1: the daily Article 11 backup", ["backup", "run"], None),
        ("Day 2: a new article, a database row, more logs; back up again",
         ["backup", "run"], lambda: next_day(root, www, pg)),
        ("The snapshots in the repository", ["backup", "list"], None),
        ("Verify every byte in the repository", ["backup", "check", "--read-data"], None),
        ("Restore drill (Art. 11.3): restore, verify, nginx -t, load the database, time it",
         ["drill"], None),
    ]  # fmt: skip
    for title, args, before in plan:
        if before is not None:
            before()
        step = Step(title, ["ops", "--config", str(config), *args])
        done = subprocess.run(
            [*ops, *args], capture_output=True, text=True, timeout=600, check=False,
            env={**os.environ, "COLUMNS": "160", "PYTHONPATH": _python_path()},
        )  # fmt: skip
        step.returncode = done.returncode
        step.output = (done.stdout + done.stderr).rstrip()
        result.steps.append(step)
        show(step)
        if done.returncode != 0:
            break
    return result


def _python_path() -> str:
    rest = os.environ.get("PYTHONPATH")
    return f"{PACKAGE_PARENT}{os.pathsep}{rest}" if rest else str(PACKAGE_PARENT)


def _remove_demo(root: Path) -> None:
    marker = root / "ops.yaml"
    if any(root.iterdir()) and not marker.exists():
        raise FileExistsError(f"{root} exists and is not a portal-ops demo directory")
    shutil.rmtree(root)
