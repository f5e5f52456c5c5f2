#!/usr/bin/env python3
"""portal-ops: the command line.

Parses arguments, loads inventory and config once (on first use), calls one command, prints a
table or --json, and maps errors to exit codes (0 ok, 1 problem found, 2 bad input,
3 operational failure, 130 interrupted). No traceback reaches the user unless -v; a reader
that goes away (``ops ... | head``) ends the command quietly.

Logs go to stderr in one of two shapes: for a person at a terminal, with time and level; for
the journal, a pipe or cron's mail, sd-daemon's ``<N>`` priority prefix and no timestamp (the
journal stamps each line itself).

Everything it prints goes to the streams of an Environment (the process's own unless one is
given), so tests run ``main(argv, env)`` in-process and read what a user would have seen.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import select
import signal
import sys
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from types import ModuleType

from portalops import __version__
from portalops.cli.context import Context
from portalops.cli.environment import Environment
from portalops.cli.output import emit
from portalops.cli.parser import PLACEHOLDER, Parser, add_global_options, finish
from portalops.core.errors import ExitCode, OpsError
from portalops.core.visible import has_controls, visible

# pydantic looks for plugins in the entry points of every installed distribution when the
# first model is defined, some 0.05-0.1 s of each command that reads a config; portal-ops uses
# none. The documented switch, unless the caller set it.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

#: Every command group, in the order ``ops --help`` lists them: its module under
#: portalops.cli, and the commands that module adds with the help line it gives each. A
#: command line imports and builds only its own group; the others stand in as placeholders
#: with the same name and help line, so ``ops --help`` and the errors of the top level are
#: those of the whole parser (tests/unit/test_cli_startup.py holds the two together).
COMMANDS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("inventory", (("inventory", "the estate model: units, portals, domains (Art. 3)"),)),
    ("config", (("config", "the operations config (ops.yaml): check it, print its schema or "
                "reference"),)),
    ("backup", (("backup", "Art. 11 backups: keys, repositories, snapshots"),)),
    ("drill", (("drill", "Art. 11.3: restore every source's latest snapshot and test it"),)),
    ("monitor", (("monitor", "Art. 19: probe the portals' availability and security posture"),)),
    ("oncall", (("oncall", "Art. 19.3: on-call rotation, escalation and paging"),)),
    ("cron", (
        ("cron", "the /etc/cron.d lines for this host's scheduled jobs (hosts without systemd)"),
        ("schedule", "run this host's scheduled jobs in the foreground"),
    )),
    ("systemd", (("systemd", "systemd timers and services for this host's jobs ('ops cron' "
                 "where no systemd)"),)),
    ("demo", (("demo", "back up a sample commune portal twice, then drill it (nothing else "
               "needed)"),)),
    ("provision", (("provision", "build the servers with the playbooks (ansible-playbook, "
                    "estate inventory)"),)),
    ("shell", (
        ("completion", "print the shell completion script for ops (bash or zsh)"),
        ("manpage", "print the ops(1) manual page (roff)"),
    )),
)  # fmt: skip

#: The commands that describe the whole command line (completion, man page): they get it all.
WHOLE_PARSER = frozenset({"completion", "manpage"})

log = logging.getLogger("portalops")


DESCRIPTION = """\
Operations toolkit for the e-portals of a province's state agencies (Decision 32/2023/QĐ-UBND):
provisioning, Art. 11 backups, Art. 19 monitoring and on-call.

The global options may come before or after the command: 'ops --json backup list' and
'ops backup list --json' are the same."""

EPILOG = """\
examples:
  ops inventory domains --json          every portal's domains as JSON
  ops backup run -v                     the daily backup, with debug logs
  ops --config /srv/ops.yaml drill      the restore drill with another config
  ops completion bash > /etc/bash_completion.d/ops

The config is --config FILE, else $PORTAL_OPS_CONFIG, else /etc/portal-ops/ops.yaml, else
config/ops.yaml in the working directory; -v logs which one was read.

Exit codes: 0 all good; 1 a problem was found; 2 bad input; 3 operational failure;
130 interrupted."""


def _module(group: str) -> ModuleType:
    return importlib.import_module(f"portalops.cli.{group}")


def build_parser(groups: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``groups``, only those groups are built (their modules
    imported) and every other command is a placeholder of the same name and help line."""
    parser = Parser(prog="ops", description=DESCRIPTION, epilog=EPILOG)
    add_global_options(parser, top=True)
    parser.add_argument(
        "--version",
        action="version",
        version=f"portal-ops {__version__}",
        help="print the version and exit",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title="commands"
    )
    for group, names in COMMANDS:
        if groups is None or group in groups:
            _module(group).build_parser(commands)
            continue
        for name, help_line in names:
            # No options, no --help of its own: whatever follows the command is left over
            # (parse_known_args) for the group's real parser.
            stand_in = commands.add_parser(name, help=help_line, add_help=False)
            stand_in.set_defaults(**{PLACEHOLDER: group})
    finish(parser)
    return parser


def _parse(
    argv: Sequence[str] | None, env: Environment
) -> tuple[argparse.ArgumentParser, argparse.Namespace] | int:
    """The parser of the chosen command's group and the parsed arguments, or the exit code
    argparse chose (2 on bad arguments, 0 after --help or --version); its usage and messages
    go to the Environment's streams.

    Two passes: the top level alone (every group a placeholder) finds the command, answers
    ``ops --help`` and ``--version`` and rejects an unknown command; then the command's own
    group is built and the whole line parsed again. Completion and the man page describe the
    whole command line, so they get every group."""
    try:
        with redirect_stdout(env.stdout), redirect_stderr(env.stderr):
            found, _ = build_parser(()).parse_known_args(argv)
            group: str = getattr(found, PLACEHOLDER)
            parser = build_parser(None if found.command in WHOLE_PARSER else (group,))
            return parser, parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code is None:
            return int(ExitCode.OK)
        return exc.code if isinstance(exc.code, int) else int(ExitCode.BAD_INPUT)


# sd-daemon(3): "<N>" at the start of a line gives the journal its priority.
_PRIORITIES = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)
_DEBUG_PRIORITY = 7


def priority(level: int) -> int:
    """The syslog priority of a logging level (there is no NOTICE level in logging)."""
    return next((prio for floor, prio in _PRIORITIES if level >= floor), _DEBUG_PRIORITY)


class JournalFormatter(logging.Formatter):
    """``<N>logger: message``, every line of it (a traceback too) prefixed, no timestamp:
    the journal (or syslog, or the reader of cron's mail) has the time already."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Libraries whose debug and info lines carry channel URLs with passwords and tokens
#: (apprise, urllib3, requests) or request lines with signed query strings (aiohttp's access
#: and client logs): WARNING at most, even with -v.
CLAMPED_LOGGERS = ("apprise", "urllib3", "requests", "aiohttp")

_SECRETS = (
    # userinfo of any URL: mailto://user:PASSWORD@host, https://token@host
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^\s/@]+@"), r"\1***@"),
    # query parameters that sign or authenticate: an acknowledge link's s=, token=, ...
    (
        re.compile(
            r"([?&;](?:s|sig|signature|token|access_token|apikey|api_key|key|password"
            r"|pass|secret|auth)=)[^&\s\"']+",
            re.IGNORECASE,
        ),
        r"\1***",
    ),
    (re.compile(r"(\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
)


def scrub(text: str) -> str:
    """``text`` without the secrets a URL or header in it may carry (belt and braces: no
    portal-ops log line names a channel URL, but a library's message or a traceback might),
    and without the exact secrets of every channel URL used so far (an ntfy topic, a bot
    token in a path: :func:`portalops.oncall.secrets.redact`)."""
    from portalops.oncall.secrets import redact  # a log line's cost, not every start-up's

    text = redact(text)
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class _Scrubbing(logging.Formatter):
    """Another formatter's output, scrubbed (:func:`scrub`), its message made visible
    (:func:`~portalops.core.visible.visible`); a traceback keeps its lines."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if has_controls(message):
            # a message quoting a portal (a URL, a reason phrase) is one line, shown escaped:
            # a newline or an escape sequence in it cannot forge a record or drive a terminal
            record = logging.makeLogRecord(
                {**record.__dict__, "msg": visible(message), "args": None}
            )
        return scrub(self.inner.format(record))


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that stays quiet when the reader of stderr has gone: one lost log
    line is not worth a "--- Logging error ---" report on a stream nobody reads."""

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], BrokenPipeError):
            return
        super().handleError(record)


def plain_logs(env: Environment) -> bool:
    """Whether logs take the journal's shape: stderr is the journal, or no terminal."""
    return env.stderr_is_journal or not env.stderr_is_tty


@contextmanager
def _logging_to(env: Environment, verbose: bool, service: bool) -> Iterator[None]:
    """What logging.basicConfig did in a fresh process, onto the Environment's stderr, undone
    afterwards so that in-process runs (tests) see their own logs and do not pile up handlers.

    Levels: -v is DEBUG for everything but :data:`CLAMPED_LOGGERS`, which carry secrets in
    their debug lines; every line is scrubbed of URL credentials and signatures (:func:`scrub`).
    Otherwise other libraries log warnings only, and
    portal-ops too, except in a service or under systemd (stderr is the journal), where its
    INFO lines (backup results, pages sent, acknowledgements, escalations) are the record."""
    root = logging.getLogger()
    ours = logging.getLogger("portalops")
    handler = _Handler(env.stderr)
    shape = JournalFormatter() if plain_logs(env) else logging.Formatter(HUMAN_FORMAT)
    handler.setFormatter(_Scrubbing(shape))
    # Only this run's records: threads that were there before it (none in a fresh process;
    # a test's servers when ops runs in-process) log elsewhere, not into this command's stderr.
    earlier = {t.ident for t in threading.enumerate()} - {threading.get_ident()}
    handler.addFilter(lambda record: record.thread not in earlier)
    levels = root.level, ours.level
    clamped = [logging.getLogger(name) for name in CLAMPED_LOGGERS]
    clamped_levels = [logger.level for logger in clamped]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    informative = (service or env.stderr_is_journal) and not verbose
    ours.setLevel(logging.INFO if informative else logging.NOTSET)
    for logger in clamped:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        ours.setLevel(levels[1])
        for logger, level in zip(clamped, clamped_levels, strict=True):
            logger.setLevel(level)


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    """Run one ``ops`` command line and return its exit code (with -v, a bug's exception
    propagates so that Python prints its traceback)."""
    env = env if env is not None else Environment.from_process()
    try:
        chosen = _parse(argv, env)
        if isinstance(chosen, int):
            return chosen
        parser, parsed = chosen
        with _logging_to(env, parsed.verbose, getattr(parsed, "service", False)):
            return _run(Context(parsed, env, parser), env)
    except BrokenPipeError:
        # Raised again by _run (and not a pipe of the command's own): the usage text or a
        # last message met a closed stderr or stdout.
        if not _readers_gone(env):
            raise
        return int(ExitCode.OK)


# 128 + SIGPIPE, what a shell reports for a program the closed pipe stopped midway.
READER_GONE_MIDWAY = 128 + signal.SIGPIPE


def _run(ctx: Context, env: Environment) -> int:
    args = ctx.args
    try:
        outcome = args.run(ctx, args)
    except OpsError as exc:
        if args.verbose:
            log.exception("command failed")
        _say(env, f"ops: {exc}")
        return int(exc.exit_code)
    except KeyboardInterrupt:
        _say(env, "ops: interrupted")
        return 130
    except BrokenPipeError as exc:
        # ops demo | head: the reader left while the command was still writing. A broken
        # pipe of the command's own (a child, a socket) is a failure like any other.
        if _readers_gone(env):
            return READER_GONE_MIDWAY
        if args.verbose:
            raise
        return _internal_error(env, exc)
    except Exception as exc:  # a bug, not a user mistake: say so, and how to see more
        if args.verbose:
            raise
        return _internal_error(env, exc)
    try:
        emit(outcome, args.json, env)
        env.stdout.flush()
    except BrokenPipeError:
        # The reader went away (ops --json ... | head): the command's work is done; say
        # nothing more to it. Its exit code is the outcome's.
        if not _readers_gone(env):
            raise
    return int(outcome.exit_code)


def _internal_error(env: Environment, exc: Exception) -> int:
    """A bug (without -v, which lets Python print the traceback): one line saying so."""
    _say(env, f"ops: internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)")
    return int(ExitCode.OPERATIONAL)


def _say(env: Environment, text: str) -> None:
    """The command's last word on stderr; in the journal, at error priority."""
    if env.stderr_is_journal:
        text = "\n".join(f"<{priority(logging.ERROR)}>{line}" for line in text.splitlines())
    try:
        print(text, file=env.stderr)
        env.stderr.flush()
    except BrokenPipeError:
        _readers_gone(env)


def _readers_gone(env: Environment) -> bool:
    """Whether the reader of stdout or stderr has closed its end; if so, that stream is
    pointed at /dev/null, so that Python's flush at exit has nowhere to fail (it would
    print "Exception ignored" and exit 120)."""
    gone = False
    for stream in (env.stdout, env.stderr):
        try:
            fd = stream.fileno()
        except (OSError, ValueError):  # StringIO in tests: never a pipe
            continue
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if any(event & select.POLLERR for _, event in poller.poll(0)):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
            gone = True
    return gone


if __name__ == "__main__":
    sys.exit(main())
