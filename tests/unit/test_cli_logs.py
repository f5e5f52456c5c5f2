"""What ops writes on stderr, and when nobody reads: logs in the journal's shape (``<N>``
priorities, no timestamps) when stderr is the journal or not a terminal, a person's shape on
a terminal; INFO by default for services and under systemd; and a reader that goes away
(``ops ... | head``, a closed stderr) ends the command quietly, with no traceback."""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import pty
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from portalops.cli.environment import Environment, stream_is_journal
from portalops.cli.main import JournalFormatter, _logging_to, main, priority
from tests.fixtures.backup_env import BackupEnv
from tests.fixtures.oncall import alert, http, webhook
from tests.fixtures.paths import OPS_PY
from tests.fixtures.procs import free_port, wait_until

TIMEOUT = 60


def ops_process(
    *args: str,
    stdout: int,
    stderr: int,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """A real ``ops`` process with the given descriptors; its exit status."""
    environ = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM",)}
    done = subprocess.run(
        [sys.executable, str(OPS_PY), *args],
        stdout=stdout, stderr=stderr, env={**environ, **(env or {})}, cwd=cwd,
        timeout=TIMEOUT, check=False,
    )  # fmt: skip
    return done.returncode


def journal_stream(fd: int) -> str:
    """JOURNAL_STREAM as systemd would set it for a service whose stderr is ``fd``."""
    status = os.fstat(fd)
    return f"{status.st_dev}:{status.st_ino}"


def run_with_stderr_pipe(*args: str, journal: str | None) -> tuple[int, str, str]:
    """``ops ARGS`` with stderr a pipe (JOURNAL_STREAM naming it, or ``journal`` as given);
    the exit status, stdout and stderr."""
    read_end, write_end = os.pipe()
    env = {} if journal is None else {"JOURNAL_STREAM": journal or journal_stream(write_end)}
    with (
        os.fdopen(read_end, "rb") as reader,
        subprocess.Popen(
            [sys.executable, str(OPS_PY), *args],
            stdout=subprocess.PIPE,
            stderr=write_end,
            env={**{k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}, **env},
        ) as proc,  # fmt: skip
    ):
        os.close(write_end)
        out, _ = proc.communicate(timeout=TIMEOUT)
        err = reader.read()
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "ops.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\n", encoding="utf-8")
    return path


# -- the shape of a log line ----------------------------------------------------------------


def test_priorities_follow_sd_daemon() -> None:
    levels = [logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG]
    assert [priority(level) for level in levels] == [2, 3, 4, 6, 7]
    assert priority(logging.INFO + 5) == 6  # between two levels: the lower one's


def test_every_line_of_a_record_carries_its_priority() -> None:
    """A traceback is several journal entries: each keeps the record's priority."""
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "portalops.x", logging.ERROR, __file__, 1, "it broke", None, sys.exc_info()
        )
    lines = JournalFormatter().format(record).splitlines()
    assert lines[0] == "<3>portalops.x: it broke"
    assert len(lines) > 3
    assert all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>ValueError: boom"


def test_journal_stream_is_the_descriptor_not_just_the_variable(tmp_path: Path) -> None:
    with (tmp_path / "err").open("w") as stream:
        assert stream_is_journal(stream, {"JOURNAL_STREAM": journal_stream(stream.fileno())})
        assert not stream_is_journal(stream, {"JOURNAL_STREAM": "1:2"})
        assert not stream_is_journal(stream, {"JOURNAL_STREAM": "junk"})
        assert not stream_is_journal(stream, {})
    assert not stream_is_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})


def test_in_the_journal_info_lines_without_timestamp(config: Path) -> None:
    """stderr is the journal (JOURNAL_STREAM names the pipe): INFO is on by default."""
    code, out, err = run_with_stderr_pipe("--config", str(config), "config", "check", journal="")
    assert code == 0, err
    assert err == f"<6>portalops.cli.context: config: {config} (--config)\n"
    assert out.startswith(f"{config} (--config): OK")


def test_a_pipe_that_is_not_the_journal_gets_warnings_only(config: Path) -> None:
    """JOURNAL_STREAM inherited from a unit but stderr redirected elsewhere: not the journal."""
    code, _, err = run_with_stderr_pipe("--config", str(config), "config", "check", journal="1:2")
    assert (code, err) == (0, "")
    code, _, err = run_with_stderr_pipe("--config", str(config), "config", "check", journal=None)
    assert (code, err) == (0, "")


def test_v_in_a_pipe_is_debug_in_the_journal_shape(config: Path) -> None:
    code, _, err = run_with_stderr_pipe(
        "--config", str(config), "config", "check", "-v", journal=None
    )
    assert code == 0, err
    assert err == f"<6>portalops.cli.context: config: {config} (--config)\n"


def test_the_last_word_is_an_error_in_the_journal(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    code, out, err = run_with_stderr_pipe("--config", str(missing), "config", "check", journal="")
    assert code == 2
    assert out == ""
    assert err == f"<3>ops: {missing}: no such config file (named by --config)\n"
    # outside the journal, the same message as ever
    code, _, err = run_with_stderr_pipe("--config", str(missing), "config", "check", journal=None)
    assert (code, err) == (2, f"ops: {missing}: no such config file (named by --config)\n")


def test_on_a_terminal_a_person_reads_time_and_level(config: Path) -> None:
    """stderr a real terminal (a pty): timestamps and level names, no priority prefixes."""
    master, slave = pty.openpty()
    try:
        code = ops_process(
            "--config", str(config), "config", "check", "-v",
            stdout=subprocess.DEVNULL, stderr=slave,
        )  # fmt: skip
        os.close(slave)
        chunks = []
        for _ in range(1000):  # bounded: the pty gives EIO once drained
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    assert code == 0, text
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO portalops\.cli\.context: "
        rf"config: {re.escape(str(config))} \(--config\)\n",
        text,
    ), text


def test_backup_results_are_info_in_the_journal(
    local_backup_env: BackupEnv, tmp_path: Path
) -> None:
    """Under systemd (stderr is the journal) the outcome of each source in each repository
    is logged without -v: INFO for a snapshot, ERROR for a failure."""
    env = local_backup_env
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>Cổng thông tin</h1>\n", encoding="utf-8")
    env.add_source("site", site)
    env.sources.append(
        {"name": "broken", "kind": "command", "category": "database",
         "command": ["sh", "-c", "echo no database here >&2; exit 7"]}
    )  # fmt: skip
    env.write_config()
    out, err = io.StringIO(), io.StringIO()
    environment = Environment(stdout=out, stderr=err, stderr_is_journal=True, system_config=None)
    code = main(["--config", str(env.config), "backup", "run"], environment)
    assert code == 1, err.getvalue()
    lines = err.getvalue().splitlines()
    assert re.fullmatch(
        r"<6>portalops\.backup\.jobs\.run: backup of site into main: snapshot [0-9a-f]{8}, "
        r"1 files, \d+ bytes added in \d+\.\ds",
        next(line for line in lines if "backup of site" in line),
    ), lines
    failed = next(line for line in lines if "backup of broken" in line)
    assert failed.startswith("<3>portalops.backup.jobs.run: backup of broken into main failed: ")
    assert not any(line.startswith("<7>") for line in lines)
    # the same run on a terminal, without -v: warnings and errors only
    err = io.StringIO()
    terminal = Environment(stdout=out, stderr=err, stderr_is_tty=True, system_config=None)
    main(["--config", str(env.config), "backup", "run"], terminal)
    assert "backup of site" not in err.getvalue()
    assert "ERROR portalops.backup.jobs.run: backup of broken into main failed" in err.getvalue()


def test_a_service_logs_info_but_other_libraries_only_warnings() -> None:
    err = io.StringIO()
    environment = Environment(stdout=io.StringIO(), stderr=err)
    with _logging_to(environment, verbose=False, service=True):
        logging.getLogger("portalops.oncall.engine").info("page 1 sent")
        logging.getLogger("portalops.oncall.engine").debug("details")
        logging.getLogger("aiohttp.access").info("GET /healthz 200")
        logging.getLogger("apprise").warning("slow channel")
    assert err.getvalue() == ("<6>portalops.oncall.engine: page 1 sent\n<4>apprise: slow channel\n")
    assert logging.getLogger("portalops").level == logging.NOTSET  # undone afterwards


def test_text_a_portal_chose_cannot_forge_a_log_line_or_drive_a_terminal() -> None:
    """A reason phrase or Location quoted in a log message: a newline would start a record of
    the attacker's choosing, an escape sequence would reach the operator's terminal."""
    err = io.StringIO()
    environment = Environment(stdout=io.StringIO(), stderr=err)
    hostile = "503 Oops\n<2>portalops.oncall.engine: all clear\x1b]0;pwned\x07\u202e"
    with _logging_to(environment, verbose=False, service=True):
        logging.getLogger("portalops.monitors.probe").warning("portal said %s", hostile)
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("portalops.monitors.probe").exception("probe failed")
    lines = err.getvalue().splitlines()
    assert lines[0] == (
        "<4>portalops.monitors.probe: portal said 503 Oops\\x0a<2>portalops.oncall.engine: "
        "all clear\\x1b]0;pwned\\x07\\u202e"
    )
    assert lines[1] == "<3>portalops.monitors.probe: probe failed"
    assert lines[-1] == "<3>ValueError: boom"  # a traceback keeps its lines


def test_oncall_serve_logs_pages_and_acks_at_info_without_v(tmp_path: Path) -> None:
    """The real service, stderr a file (not a terminal): without -v it logs where it listens,
    the incident a webhook opened, the escalation step paging someone and the page's fate;
    ``ops oncall ack`` logs the acknowledgement; all at <6>, nothing at <7>."""
    port = free_port()
    config = tmp_path / "ops.yaml"
    config.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"),
        "oncall": {
            "listen": f"127.0.0.1:{port}",
            "people": [{"id": "an", "name": "Nguyễn Văn An", "channels": ["json://127.0.0.1:9/"]}],
            "rotations": {"primary": {"people": ["an"], "start": "2026-11-30"}},
            "escalation": {"steps": [{"notify": "primary", "wait": "5m"}]},
            "delivery": {"attempts": 1, "timeout": "2s"},
            "tick": "0.2s",
        },
    }, allow_unicode=True), encoding="utf-8")  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "stderr"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, str(OPS_PY), "--config", str(config), "oncall", "serve"],
            stdout=subprocess.DEVNULL, stderr=sink, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until(lambda: http(f"{url}/healthz", timeout=1)[0] == 200, timeout=30,
                   what="ops oncall serve", log=log, proc=proc)  # fmt: skip
        token = (tmp_path / "state" / "oncall" / "webhook.token").read_text().strip()
        posted = http(
            f"{url}/alertmanager",
            json.dumps(webhook(alert())).encode(),
            {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        assert posted[0] == 200, posted
        wait_until(lambda: "page 1 (page, incident 1) to an: " in log.read_text(), timeout=30,
                   what="the page's delivery logged", log=log, proc=proc)  # fmt: skip
        acked = run_with_stderr_pipe(
            "--config", str(config), "oncall", "ack", "1", "--by", "an", journal=""
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert acked[0] == 0, acked
    assert (
        "<6>portalops.oncall.commands: incident 1 acknowledged by an (ops oncall ack)\n"
        in (acked[2])
    )
    lines = log.read_text(encoding="utf-8").splitlines()
    assert lines[0] == f"<6>portalops.cli.context: config: {config} (--config)", lines
    listening = f"<6>portalops.oncall.service: on-call service listening on 127.0.0.1:{port} "
    assert lines[1].startswith(listening), lines
    for expected in (
        "<6>portalops.oncall.engine: webhook: opened [1], updated [], resolved []",
        "<6>portalops.oncall.engine: incident 1 step 1 (round 1): paging an (primary)",
        "<6>portalops.oncall.engine: page 1 (page, incident 1) to an: FAILED",
    ):
        assert any(line.startswith(expected) for line in lines), (expected, lines)
    assert lines[-1] == "<6>portalops.oncall.service: on-call service stopped", lines
    assert not [line for line in lines if line.startswith("<7>")], lines


# -- readers that go away -------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_units(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An estate whose domain list (~250 KiB of JSON) is far more than a pipe holds."""
    words = ["An", "Bình", "Hòa", "Phú", "Tân", "Thành", "Long", "Minh", "Hưng", "Lộc", "Sơn"]
    names = [" ".join(pair) for pair in itertools.permutations(words, 2)]
    doc = {
        "province": {"name": "Tỉnh Thử", "zone": "thu.gov.vn"},
        "levels": 3,
        "departments": [],
        "districts": [
            {"name": f"Huyện {d}", "communes": [{"name": f"Xã {c}"} for c in names]}
            for d in names[:12]
        ],
    }
    path = tmp_path_factory.mktemp("units") / "units.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def test_head_on_a_big_output_in_a_real_shell(big_units: Path) -> None:
    """`ops --json inventory domains | head -1` with pipefail: ops's own status is 0."""
    script = f'set -o pipefail; "{sys.executable}" "{OPS_PY}" --json --units "{big_units}" ' \
        "inventory domains | head -1"  # fmt: skip
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (0, "[\n", "")


def test_a_reader_that_leaves_midway_gets_no_traceback(big_units: Path) -> None:
    with subprocess.Popen(
        [sys.executable, str(OPS_PY), "--json", "--units", str(big_units), "inventory",
         "domains"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        assert proc.stderr is not None
        assert proc.stdout.read(100).startswith(b"[")
        proc.stdout.close()  # ops is still writing: the rest does not fit in the pipe
        err = proc.stderr.read()
        code = proc.wait(timeout=TIMEOUT)
    assert (code, err) == (0, b"")


def test_logging_to_a_closed_stderr_is_quiet(config: Path) -> None:
    """-v logs to a stderr whose reader is gone: the command still does its work, prints
    its result and exits 0."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    out_read, out_write = os.pipe()
    try:
        code = ops_process(
            "-v", "--json", "--config", str(config), "config", "check",
            stdout=out_write, stderr=write_end,
        )  # fmt: skip
    finally:
        os.close(write_end)
        os.close(out_write)
    with os.fdopen(out_read, "rb") as reader:
        document = json.loads(reader.read())
    assert code == 0
    assert document["file"] == str(config)


def test_both_readers_gone_and_an_error_to_say(tmp_path: Path) -> None:
    """Nobody reads either stream and the command fails: its exit code still says so."""
    pipes = [os.pipe(), os.pipe()]
    for read_end, _ in pipes:
        os.close(read_end)
    try:
        failed = ops_process(
            "-v", "--config", str(tmp_path / "missing.yaml"), "config", "check",
            stdout=pipes[0][1], stderr=pipes[1][1],
        )  # fmt: skip
        helped = ops_process("--help", stdout=pipes[0][1], stderr=pipes[1][1])
    finally:
        for _, write_end in pipes:
            os.close(write_end)
    assert failed == 2
    assert helped == 0


def test_a_reader_gone_before_the_command_is_done_is_128_plus_sigpipe(tmp_path: Path) -> None:
    """The exporter's banner meets a closed stderr before it serves: ops stops as a program
    killed by SIGPIPE would be reported (141), quietly, instead of serving to nobody's log."""
    config = tmp_path / "ops.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "monitor:\n  estate: false\n  urls: ['http://127.0.0.1:9/']\n",
        encoding="utf-8",
    )
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        code = ops_process(
            "--config", str(config), "monitor", "serve", "--listen", "127.0.0.1:0",
            stdout=subprocess.DEVNULL, stderr=write_end,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert code == 128 + signal.SIGPIPE
