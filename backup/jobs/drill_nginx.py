"""``nginx -t`` on a restored configuration: as the drill user, reading only the snapshot.

A restored ``nginx.conf`` was written by a backup host, which may be hostile, and ``nginx -t``
is nginx parsing it for real: ``load_module`` loads (runs) a shared object; ``include`` reads
any file, and a parse error echoes the file's first word (``include /etc/shadow;``); log, pid,
temp and cache paths are created. So before nginx runs, the drill reads the configuration
itself, the way nginx does (its tokens, quotes, escapes and comments; ``include`` and its
globs, relative to the configuration's directory), and:

- refuses it, naming file and line, if it would load code: ``load_module`` (and any mention
  of it, comments included: no difference between this reader and nginx's can hide one),
  ``ssl_engine``, an ``engine:`` key, an ``ssl_conf_command`` naming a file;
- reads nothing but the restored tree: an absolute path in ``include`` or in a certificate,
  key, CRL, DH parameter or password directive names the restored copy of that path (the
  snapshot is the root, as if chrooted), absolute symbolic links in the tree are turned the
  same way, and a file that is still outside the tree (``..``, a relative link climbing out),
  missing from it, or not a regular file is refused, never opened;
- points every file nginx writes (``error_log``, ``access_log``, ``pid``, ``lock_file``,
  temp and cache paths, ``listen unix:``), and nginx's compiled-in defaults for them, into a
  scratch directory of the drill user's.

Then ``nginx -t`` runs as the drill user (``drill.run_as``), which may read the configuration
files and certificates found above (its group) and write only its scratch directory, with one
capability kept: binding ports below 1024, because ``nginx -t`` binds every ``listen`` address
for a moment. nginx ignores ``user`` when it is not root, so that directive is not checked.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from portalops.backup.engines.scratch import (
    ScratchServerError,
    as_user,
    check_reachable,
    ensure_user,
    hand_over,
    run_bounded,
)

NGINX_TIMEOUT = 60.0
MAX_FILE_BYTES = 4 << 20  # one configuration file
MAX_TOTAL_BYTES = 16 << 20  # every file of one configuration, includes counted each time
MAX_INCLUDES = 20_000  # files included, each time counted
MAX_DEPTH = 64  # includes within includes
MAX_NESTING = 200  # blocks and includes within one another
SHOWN = 5  # problems listed per configuration

LOADS_CODE = {b"ssl_engine"}  # load_module: any mention of it is refused, see _load
# directives whose first argument is a file nginx -t reads (relative: to the config's dir)
READS = {
    prefix + b"ssl_" + what
    for prefix in (b"", b"proxy_", b"grpc_", b"uwsgi_")
    for what in (
        b"certificate", b"certificate_key", b"trusted_certificate", b"client_certificate",
        b"dhparam", b"crl", b"password_file", b"session_ticket_key", b"stapling_file",
    )
}  # fmt: skip
# directives whose first argument is a file or directory nginx -t creates or opens to write
WRITES = {
    b"error_log": b"log",
    b"access_log": b"log",
    b"pid": b"pid",
    b"lock_file": b"lock",
    **{name + b"_temp_path": b"temp" for name in (b"client_body", b"proxy", b"fastcgi",
                                                   b"uwsgi", b"scgi")},
    **{name + b"_cache_path": b"cache" for name in (b"proxy", b"fastcgi", b"uwsgi", b"scgi")},
}  # fmt: skip
# ssl_conf_command names that make OpenSSL read a file
_FILE_COMMAND = re.compile(rb"(?i)(file|path|certificate|privatekey|dhparameters)$")
_UNSAFE_PREFIX = set(b"*?[\\$")  # a scratch path nginx would read as a pattern or variable
_WORK_KINDS = {b"log", b"pid", b"lock", b"temp", b"cache", b"sock"}


class ConfSyntax(Exception):
    def __init__(self, what: str, line: int) -> None:
        super().__init__(what, line)
        self.what, self.line = what, line


# -- reading a configuration the way nginx does (src/core/ngx_conf_file.c) -------------------


@dataclass
class Word:
    value: bytes  # unescaped, quotes removed
    start: int  # the token as written, quotes included: data[start:end]
    end: int
    line: int


@dataclass
class Directive:
    words: list[Word]
    block: list[Directive] | None = None
    brace: int = 0  # offset just after "{" for a block

    @property
    def name(self) -> bytes:
        return self.words[0].value

    @property
    def args(self) -> list[Word]:
        return self.words[1:]

    @property
    def line(self) -> int:
        return self.words[0].line


_SPACE = frozenset(b" \t\r\n")
_SPACE_AND_COMMENTS = re.compile(rb"(?:[ \t\r\n]+|#[^\n]*)*")
_WORD_STOPS = re.compile(rb"[ \t\r\n;{\\$]")
_QUOTED_STOPS = {ord(q): re.compile(rb"[\\$" + q.encode() + rb"]") for q in "\"'"}
_ESCAPES = {ord('"'): b'"', ord("'"): b"'", ord("\\"): b"\\", ord("t"): b"\t",
            ord("r"): b"\r", ord("n"): b"\n"}  # fmt: skip


def parse(data: bytes) -> list[Directive]:
    """The directives of one configuration file, nested as nginx nests them.

    A transcription of ngx_conf_read_token: words end at whitespace, ``;`` or ``{`` (``}``,
    ``#`` and quotes inside a word are part of it); a quoted word ends at its closing quote,
    which must be followed by whitespace, ``;``, ``{`` or ``)``; ``\\`` escapes the next byte;
    ``${`` does not end a word; ``#`` at the start of a word comments to the end of the line.
    """
    top: list[Directive] = []
    stack = [top]
    words: list[Word] = []
    line, i = 1, 0
    while True:
        word, i, line, stop = _token(data, i, line)
        if word is not None:
            words.append(word)
        if stop in (b";", b"{") and not words:
            raise ConfSyntax(f'unexpected "{stop.decode()}"', line)
        if stop == b";":
            stack[-1].append(Directive(words))
            words = []
        elif stop == b"{":
            if len(stack) > MAX_NESTING:
                raise ConfSyntax(f"blocks nested deeper than {MAX_NESTING}", line)
            block: list[Directive] = []
            stack[-1].append(Directive(words, block, i))
            stack.append(block)
            words = []
        elif stop == b"}":
            if words or len(stack) == 1:
                raise ConfSyntax('unexpected "}"', line)
            stack.pop()
        elif stop == b"":  # end of file
            if words or len(stack) > 1:
                raise ConfSyntax("unexpected end of file", line)
            return top


def _token(data: bytes, i: int, line: int) -> tuple[Word | None, int, int, bytes]:
    """The next word from ``i`` and what stopped it: b";" or b"{" (the directive ends there),
    b"}", b"" at the end of the data, b" " when only a word ended."""
    size = len(data)
    i, line = _skip_space(data, i, line)
    if i >= size:
        return None, i, line, b""
    ch = data[i]
    if ch in b";{}":
        return None, i + 1, line, bytes([ch])
    start, start_line = i, line
    quote = ch if ch in b"\"'" else None
    i += 1 if quote is not None else 0
    content = i
    stops = _WORD_STOPS if quote is None else _QUOTED_STOPS[quote]
    variable = False  # the last byte was a "$": a "{" after it does not end the word
    while (found := stops.search(data, i)) is not None:
        at = found.start()
        line += data.count(b"\n", i, at)  # inside quotes only: unquoted, a newline stops
        variable = variable and at == i
        ch = data[at]
        if ch == ord("\\"):  # escapes the next byte (an escaped newline still counts)
            line += data[at + 1 : at + 2] == b"\n"
            i, variable = at + 2, False
        elif ch == ord("$"):
            i, variable = at + 1, True
        elif ch == ord("{") and variable:
            i = at + 1
        elif quote is not None:  # the closing quote
            word = Word(_unescape(data[content:at]), start, at + 1, start_line)
            return _after_quote(data, at + 1, line, word)
        else:
            word = Word(_unescape(data[content:at]), start, at, start_line)
            line += ch == 10
            stop = b";" if ch == ord(";") else b"{" if ch == ord("{") else b" "
            return word, at + 1, line, stop
    raise ConfSyntax("unexpected end of file", line + data.count(b"\n", i))


def _skip_space(data: bytes, i: int, line: int) -> tuple[int, int]:
    """Past whitespace and comments (``#`` at the start of a word, to the end of the line)."""
    end = _SPACE_AND_COMMENTS.match(data, i).end()  # type: ignore[union-attr]  # matches ""
    return end, line + data.count(b"\n", i, end)


def _after_quote(data: bytes, i: int, line: int, word: Word) -> tuple[Word, int, int, bytes]:
    if i >= len(data):
        raise ConfSyntax("unexpected end of file", line)
    ch = data[i]
    if ch in _SPACE:
        return word, i + 1, line + (ch == 10), b" "
    if ch == ord(";"):
        return word, i + 1, line, b";"
    if ch == ord("{"):
        return word, i + 1, line, b"{"
    if ch == ord(")"):  # nginx lets ")" follow a quote and start the next word
        return word, i, line, b" "
    raise ConfSyntax(f'unexpected "{chr(ch)}"', line)


def _unescape(raw: bytes) -> bytes:
    out, i = bytearray(), 0
    while i < len(raw):
        if raw[i] == ord("\\") and i + 1 < len(raw) and raw[i + 1] in _ESCAPES:
            out += _ESCAPES[raw[i + 1]]
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def quote(value: bytes) -> bytes:
    """``value`` as one nginx word, whatever it holds."""
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


# -- the check -------------------------------------------------------------------------------


@dataclass
class _File:
    path: bytes  # inside the restored tree, no symbolic link in it
    data: bytes
    directives: list[Directive]
    edits: list[tuple[int, int, bytes]] = field(default_factory=list)


@dataclass
class _Config:
    """One configuration read from its nginx.conf: what to change, what is wrong."""

    restored: bytes
    conf_dir: bytes
    work: bytes
    problems: list[str] = field(default_factory=list)
    files: dict[tuple[int, int], _File] = field(default_factory=dict)  # (st_dev, st_ino)
    readable: set[bytes] = field(default_factory=set)  # files nginx -t reads
    main_level: set[bytes] = field(default_factory=set)
    http_level: set[bytes] = field(default_factory=set)
    http: tuple[_File, int] | None = None  # where the http block opens
    mapped: dict[tuple[bytes, bytes], bytes] = field(default_factory=dict)
    included: int = 0
    total_bytes: int = 0

    def shown(self, path: bytes) -> str:
        """``path`` as the snapshot named it (the restored tree is the root)."""
        if path == self.restored or path.startswith(self.restored + b"/"):
            path = path[len(self.restored) :] or b"/"
        return os.fsdecode(path)

    def problem(self, file: _File | None, line: int, what: str) -> None:
        where = f"{self.shown(file.path)} line {line}: " if file is not None else ""
        self.problems.append(where + what)

    def inside(self, path: bytes) -> bytes | None:
        """The real path of ``path`` if it is within the restored tree."""
        real = os.path.realpath(path)
        if real == self.restored or real.startswith(self.restored + b"/"):
            return real
        return None

    def map_read(self, value: bytes) -> bytes:
        """Where nginx -t, given the rewritten word, will read ``value``."""
        if value.startswith(b"/"):
            return self.restored + value
        return self.conf_dir + b"/" + value

    def map_write(self, kind: bytes, value: bytes) -> bytes:
        key = (kind, value)
        if key not in self.mapped:
            suffix = b".sock" if kind == b"sock" else b".log" if kind == b"log" else b""
            self.mapped[key] = self.work + b"/%s%d%s" % (kind, len(self.mapped), suffix)
        return self.mapped[key]


def read_config(conf: bytes, restored: bytes, work: bytes) -> _Config:
    """Read the configuration ``conf`` (a real path in ``restored``) and every file it
    includes; collect the rewrites and the problems."""
    config = _Config(restored, os.path.dirname(conf), work)
    if set(restored + work) & _UNSAFE_PREFIX:
        config.problem(None, 0, f"the scratch path {os.fsdecode(work)} holds one of * ? [ \\ $ "
                       "(set drill.scratch_dir to a plain path)")  # fmt: skip
        return config
    main = _load(config, conf, None, 0)
    if main is not None:
        _walk(config, main, main.directives, (), 0)
    return config


def _load(config: _Config, path: bytes, by: _File | None, line: int) -> _File | None:
    """The file at ``path`` (already known to be inside), read once, parsed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        config.problem(by, line, f"{config.shown(path)}: cannot be read ({exc.strerror})")
        return None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        if key in config.files:
            return config.files[key]
        if not stat.S_ISREG(st.st_mode):
            config.problem(by, line, f"{config.shown(path)} is not a regular file")
            return None
        if st.st_size > MAX_FILE_BYTES:
            config.problem(by, line, f"{config.shown(path)} is larger than "
                           f"{MAX_FILE_BYTES >> 20} MiB")  # fmt: skip
            return None
        data = handle.read(MAX_FILE_BYTES + 1)
    file = _File(path, data, [])
    if b"load_module" in data:  # nginx sees the directive only where these bytes are
        at = data.index(b"load_module")
        text = data[data.rfind(b"\n", 0, at) + 1 :].split(b"\n", 1)[0].strip()
        config.problem(file, data[:at].count(b"\n") + 1, f"'{_show(text)}': loading a module "
                       "runs its code; the drill tests no configuration that loads modules "
                       "(nginx -t not run)")  # fmt: skip
    try:
        file.directives = parse(data)
    except ConfSyntax as exc:
        config.problem(file, exc.line, f"{exc.what} (nginx -t not run)")
        return None
    config.files[key] = file
    config.readable.add(path)
    return file


def _walk(
    config: _Config,
    file: _File,
    directives: list[Directive],
    context: tuple[bytes, ...],
    depth: int,
) -> None:
    if len(context) + depth > MAX_NESTING:
        config.problem(file, directives[0].line if directives else 0,
                       f"blocks and includes nested deeper than {MAX_NESTING}")  # fmt: skip
        return
    for directive in directives:
        name = directive.name
        if not context:
            config.main_level.add(name)
        elif context == (b"http",):
            config.http_level.add(name)
        if name == b"http" and not context and directive.block is not None:
            config.http = (file, directive.brace)
        _check(config, file, directive)
        if name == b"include" and len(directive.args) == 1:
            _include(config, file, directive, context, depth)
        if directive.block is not None:
            _walk(config, file, directive.block, (*context, name), depth)


def _check(config: _Config, file: _File, directive: Directive) -> None:
    name, args, line = directive.name, directive.args, directive.line
    shown = name.decode(errors="replace")
    if name in LOADS_CODE:
        config.problem(file, line, f"{shown}: loads code; refused (nginx -t not run)")
        return
    if not args:
        return
    first = args[0]
    if name == b"ssl_conf_command" and _FILE_COMMAND.search(first.value):
        config.problem(file, line, f"ssl_conf_command {first.value.decode(errors='replace')}: "
                       "makes OpenSSL read a file; refused")  # fmt: skip
    elif name in READS:
        _read_arg(config, file, directive)
    elif name in WRITES:
        value = first.value
        if name == b"access_log" and (value == b"off" or b"$" in value):
            return
        if value == b"stderr" or value.startswith((b"syslog:", b"memory:")):
            return
        target = config.map_write(WRITES[name], value)
        file.edits.append((first.start, first.end, quote(target)))
    elif name == b"listen" and first.value.startswith(b"unix:"):
        target = config.map_write(b"sock", first.value)
        file.edits.append((first.start, first.end, quote(b"unix:" + target)))


def _read_arg(config: _Config, file: _File, directive: Directive) -> None:
    first = directive.args[0]
    value, shown = first.value, f"{directive.name.decode(errors='replace')} {_show(first.value)}"
    if value.startswith(b"data:") or b"$" in value:  # inline, or read per request
        return
    if value.startswith(b"engine:"):
        config.problem(file, directive.line, f"{shown}: loads an OpenSSL engine; refused")
        return
    path = config.map_read(value)
    real = _readable(config, file, directive.line, shown, path)
    if real is not None:
        config.readable.add(real)
        file.edits.append((first.start, first.end, quote(path)))


def _readable(config: _Config, file: _File, line: int, shown: str, path: bytes) -> bytes | None:
    real = config.inside(path)
    if real is None:
        config.problem(file, line, f"{shown}: resolves outside the restored snapshot "
                       "(the drill reads no file of its own host); not opened")  # fmt: skip
        return None
    try:
        st = os.stat(real)
    except OSError:
        config.problem(file, line, f"{shown}: not in the restored snapshot (the drill reads "
                       "no file of its own host)")  # fmt: skip
        return None
    if not stat.S_ISREG(st.st_mode):
        config.problem(file, line, f"{shown}: not a regular file; not opened")
        return None
    return real


def _include(
    config: _Config,
    file: _File,
    directive: Directive,
    context: tuple[bytes, ...],
    depth: int,
) -> None:
    word = directive.args[0]
    shown = f"include {_show(word.value)}"
    if depth >= MAX_DEPTH:
        config.problem(file, directive.line, f"{shown}: includes nested deeper than "
                       f"{MAX_DEPTH} (a loop?)")  # fmt: skip
        return
    pattern = config.map_read(word.value)
    file.edits.append((word.start, word.end, quote(pattern)))
    if any(c in pattern for c in b"*?["):
        if b"[" in pattern or b"\\" in pattern:
            config.problem(file, directive.line, f"{shown}: the drill reads include patterns "
                           "with * and ? only, not [ ] or \\")  # fmt: skip
            return
        found = sorted(glob.glob(pattern))  # what glob(3) gives for * and ?, sorted as it does
    else:
        found = [pattern]
    for path in found:
        real = _readable(config, file, directive.line, shown, path)
        if context and context[-1] == b"geo" and real is not None:  # geo reads a .bin first
            bin_path = path + b".bin"
            if os.path.lexists(bin_path):
                _readable(config, file, directive.line, shown + ".bin", bin_path)
        if real is None:
            continue
        config.included += 1
        if config.included > MAX_INCLUDES:
            config.problem(file, directive.line, f"{shown}: more than {MAX_INCLUDES} files "
                           "included")  # fmt: skip
            return
        included = _load(config, real, file, directive.line)
        if included is None:
            continue
        config.total_bytes += len(included.data)
        if config.total_bytes > MAX_TOTAL_BYTES:
            config.problem(file, directive.line, f"{shown}: the configuration reads more than "
                           f"{MAX_TOTAL_BYTES >> 20} MiB")  # fmt: skip
            return
        _walk(config, included, included.directives, context, depth + 1)


def _show(value: bytes) -> str:
    """A word of the configuration for a report: printable, at most 120 characters."""
    text = "".join(c if c.isprintable() else "?" for c in value.decode("utf-8", "replace"))
    return text if len(text) <= 120 else text[:120] + "…"


# -- preparing the tree and running nginx ----------------------------------------------------


def retarget_links(restored: bytes) -> None:
    """Absolute symbolic links in the restored tree point at the restored copy of their
    target, as if the tree were the root (``sites-enabled/x -> /etc/nginx/sites-available/x``
    means the restored file, never the drill host's)."""
    for top, dirs, files in os.walk(restored):
        for name in (*dirs, *files):
            path = os.path.join(top, name)
            if os.path.islink(path):
                target = os.readlink(path)
                if target.startswith(b"/"):
                    os.unlink(path)
                    os.symlink(restored + target, path)


def configurations(restored: bytes) -> Iterator[tuple[bytes, bytes | None]]:
    """(nginx.conf as found, its real path if that is inside the restored tree)."""
    seen: set[bytes] = set()
    for found in sorted(Path(os.fsdecode(restored)).glob("**/nginx/nginx.conf")):
        path = os.fsencode(found)
        real = os.path.realpath(path)
        inside = real.startswith(restored + b"/")
        if inside and real in seen:
            continue
        seen.add(real)
        yield path, real if inside else None


@cache
def _without() -> frozenset[str]:
    """The http modules the installed nginx was built without (``nginx -V``)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    done = subprocess.run([nginx, "-V"], capture_output=True, text=True, check=False)
    return frozenset(re.findall(r"--without-http_(\w+)_module", done.stderr))


def _defaults(config: _Config) -> None:
    """nginx's compiled-in paths, pointed into scratch where the configuration sets none:
    at http level the access log and the temp paths (its pid file is set with -g)."""
    if config.http is None:
        return
    file, brace = config.http
    absent = _without()
    wanted = [b"access_log"] + [
        name + b"_temp_path"
        for name in (b"client_body", b"proxy", b"fastcgi", b"uwsgi", b"scgi")
        if name == b"client_body" or name.decode() not in absent
    ]
    added = b"".join(
        b" %s %s;" % (name, quote(config.map_write(WRITES[name], b"(default %s)" % name)))
        for name in wanted
        if name not in config.http_level
    )
    if added:
        file.edits.append((brace, brace, added))


def _apply(file: _File) -> bytes:
    data = bytearray(file.data)
    for start, end, text in sorted(file.edits, reverse=True):
        newlines = data[start:end].count(b"\n")  # keep nginx's line numbers right
        data[start:end] = text + b"\n" * newlines
    return bytes(data)


def _share(config: _Config, restored: bytes, gid: int) -> None:
    """The drill user's group may list the restored directories and read the files found."""
    for top, _, _ in os.walk(restored):
        os.chown(top, -1, gid)
        os.chmod(top, stat.S_IMODE(os.lstat(top).st_mode) | 0o050)  # noqa: S103 (group: drill)
    for path in config.readable:
        real = os.path.realpath(path)
        os.chown(real, -1, gid)
        os.chmod(real, stat.S_IMODE(os.lstat(real).st_mode) | 0o040)


def nginx_test(restored: Path, scratch: Path, user: str) -> tuple[list[str], str]:
    """(problems, who tested) for every ``nginx/nginx.conf`` in ``restored``; ``scratch`` is
    the drill's own directory that holds ``restored``."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        return ["nginx is not installed on the drill host (Debian package nginx-light)"], ""
    root = os.geteuid() == 0
    who = user if root else pwd.getpwuid(os.geteuid()).pw_name
    if root:
        try:
            ensure_user(user)
            check_reachable(scratch.parent, user, "nginx -t runs")
        except ScratchServerError as exc:
            return [str(exc)], who
        os.chown(scratch, -1, pwd.getpwnam(user).pw_gid)
        os.chmod(scratch, stat.S_IMODE(os.lstat(scratch).st_mode) | 0o010)  # noqa: S103
    tree = os.fsencode(os.path.realpath(restored))
    retarget_links(tree)
    problems: list[str] = []
    tested = 0
    for number, (conf, real) in enumerate(configurations(tree)):
        shown = os.fsdecode(conf[len(tree) :])
        if real is None:
            problems.append(f"{shown}: a symbolic link out of the restored snapshot; not read")
            continue
        work = scratch / f"nginx-{number}"
        work.mkdir(mode=0o700)
        hand_over(work, user)
        config = read_config(real, tree, os.fsencode(work))
        if config.problems:
            extra = len(config.problems) - SHOWN
            problems += config.problems[:SHOWN] + ([f"… and {extra} more"] if extra > 0 else [])
            continue
        _defaults(config)
        if root:
            _share(config, tree, pwd.getpwnam(user).pw_gid)
        problems += _run(nginx, config, real, user, tree)
        tested += 1
    if not tested and not problems:
        problems.append("no nginx/nginx.conf of the snapshot's own: a symbolic link pointed at "
                        "the drill host's files; nothing tested")  # fmt: skip
    return problems, who


def _run(nginx: str, config: _Config, conf: bytes, user: str, tree: bytes) -> list[str]:
    """nginx -t on the rewritten files; the files are as restored again afterwards."""
    work = config.work
    argv = [nginx, "-t", "-q", "-p", os.fsdecode(config.conf_dir) + "/", "-c",
            os.fsdecode(conf), "-e", os.fsdecode(work + b"/error.log")]  # fmt: skip
    if b"pid" not in config.main_level:
        argv += ["-g", f"pid {os.fsdecode(quote(work + b'/nginx.pid'))};"]
    changed = [f for f in config.files.values() if f.edits]
    try:
        for file in changed:
            _write(file.path, _apply(file))
        code, stderr = run_bounded(
            as_user(argv, user, bind_low_ports=True),
            what="nginx -t",
            timeout=NGINX_TIMEOUT,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
            cwd=Path(os.fsdecode(work)),
        )
    except ScratchServerError as exc:
        return [f"{config.shown(conf)}: {exc}"]
    finally:
        for file in changed:
            _write(file.path, file.data)
    if code == 0:
        return []
    lines = [line for line in stderr.strip().splitlines() if line][-3:]
    tail = " | ".join(lines).replace(os.fsdecode(work), "(scratch)")
    return [f"{config.shown(conf)} fails nginx -t: {tail.replace(os.fsdecode(tree), '')}"]


def _write(path: bytes, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
