"""The SSH side of ``kind: ssh`` (:mod:`portalops.backup.sources.ssh`): connect with the pinned
host key, run the command in an exec channel, stream its stdout into the sink.

A module of its own so that paramiko loads only when an ssh source runs.
"""

from __future__ import annotations

import io
import stat
import threading
from typing import Any, NoReturn

import paramiko

from portalops.backup.archive.streams import STDERR_TAIL_LINES, Sink, SourceFailed
from portalops.backup.sources.ssh import SshSource

CONNECT_TIMEOUT = 30.0  # TCP connect, banner, key exchange and authentication, each
_STDERR_KEEP = 16 * 1024  # bytes of the remote stderr kept for the error message
_READ_SIZE = 256 * 1024


def produce(source: SshSource, sink: Sink) -> dict[str, Any]:
    """Run ``source.command`` on the host and store its stdout as ``filename``
    (default ``<name>.txt``); fail on an unpinned host key, a non-zero exit status, a
    timeout, or no output (unless ``allow_empty``)."""
    where = _where(source)
    key = _load_key(source)
    client = _client(source)
    policy = _Reject()
    client.set_missing_host_key_policy(policy)
    # One deadline for everything; closing the client wakes a blocked read (it returns EOF)
    # and a wait for the exit status, so the job never hangs on a device that stops talking.
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        client.close()

    timer = threading.Timer(source.timeout, expire)
    timer.daemon = True
    timer.start()
    try:
        host_key = _connect(client, source, key, policy, timed_out)
        size, status, tail = _execute(client, source, sink, timed_out)
    finally:
        timer.cancel()
        client.close()
    if timed_out.is_set():
        raise _too_slow(source, tail)
    if status == -1:
        raise SourceFailed(
            source.name,
            f"{where} closed the channel without an exit status (the command was killed, or "
            f"the device does not support exec channels): {tail}",
        )
    if status != 0:
        raise SourceFailed(
            source.name, f"remote command on {where} exited with status {status}: {tail}"
        )
    if size == 0 and not source.allow_empty:
        raise SourceFailed(source.name, f"remote command on {where} printed nothing: {tail}")
    return {
        "host": source.host,
        "port": source.port,
        "command": source.command,
        "bytes": size,
        "host_key": host_key,
    }


def _execute(
    client: paramiko.SSHClient, source: SshSource, sink: Sink, timed_out: threading.Event
) -> tuple[int, int, str]:
    """Run the command in an exec channel, stdout into the sink; return its size, the exit
    status (-1 if none came) and the tail of stderr."""
    where = _where(source)
    transport = client.get_transport()
    if transport is None:  # pragma: no cover - connect() succeeded
        raise SourceFailed(source.name, f"SSH connection to {where} was lost")
    try:
        channel = transport.open_session(timeout=min(CONNECT_TIMEOUT, source.timeout))
        channel.exec_command(source.command)
        channel.shutdown_write()  # no stdin: a command that reads it gets EOF, not a hang
    except (paramiko.SSHException, OSError, EOFError) as exc:
        if timed_out.is_set():
            raise _too_slow(source, "") from None
        raise SourceFailed(
            source.name, f"cannot run the command on {where}: {_reason(exc)}"
        ) from None
    stderr = _StderrTail(channel)
    stderr.start()
    try:
        size = sink.add_stream(
            source.filename or f"{source.name}.txt",
            io.BufferedReader(_ChannelReader(channel), buffer_size=_READ_SIZE),
        )
    except _ReadFailed as exc:  # not OSError: that could be the repository's disk
        if timed_out.is_set():
            raise _too_slow(source, stderr.text()) from None
        raise SourceFailed(
            source.name, f"reading the output from {where} failed: {_reason(exc.cause)}"
        ) from None
    status = channel.recv_exit_status()  # -1: none sent (signal, dropped connection)
    stderr.join(timeout=5)
    return size, status, stderr.text()


def _client(source: SshSource) -> paramiko.SSHClient:
    """A client that trusts exactly the host keys in the source's known_hosts file."""
    path = source.known_hosts
    if not path.is_file():
        raise SourceFailed(
            source.name,
            f"known_hosts file {path} not found; create it with "
            f"'ssh-keyscan -p {source.port} {source.host} > {path}' and verify "
            "the fingerprint out of band",
        )
    client = paramiko.SSHClient()
    try:
        # Only this file: never ~/.ssh/known_hosts or /etc/ssh/ssh_known_hosts, whose
        # entries someone else may have accepted blindly.
        client.load_host_keys(str(path))
    except paramiko.hostkeys.InvalidHostKey as exc:
        # paramiko gives up on the whole file for one bad line, including OpenSSH's
        # "@revoked" and "@cert-authority" markers, which it does not know
        raise SourceFailed(
            source.name,
            f"{path}: cannot read the line {exc.line.strip()!r} ({exc.exc}); keep only "
            "'host keytype base64' lines there, as ssh-keyscan writes them",
        ) from None
    except OSError as exc:
        raise SourceFailed(source.name, f"cannot read {path}: {exc.strerror}") from None
    return client


def _where(source: SshSource) -> str:
    return f"{source.user}@{source.host}:{source.port}"


def _known_hosts_name(source: SshSource) -> str:
    """How known_hosts (and paramiko) name the host: bare for port 22, else ``[host]:port``."""
    return source.host if source.port == 22 else f"[{source.host}]:{source.port}"


def _describe(key: paramiko.PKey) -> str:
    """``ssh-ed25519 SHA256:...``, as ``ssh-keygen -lf`` prints it."""
    return f"{key.get_name()} {key.fingerprint}"


def _load_key(source: SshSource) -> paramiko.PKey:
    path = source.key
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SourceFailed(source.name, f"key file {path} not found") from None
    except OSError as exc:
        raise SourceFailed(source.name, f"cannot read key file {path}: {exc.strerror}") from None
    if mode & 0o077:
        # what ssh does with "UNPROTECTED PRIVATE KEY FILE": a key others can read is no key
        raise SourceFailed(
            source.name,
            f"key file {path} is accessible by others (mode {stat.S_IMODE(mode):04o}); "
            f"run 'chmod 600 {path}'",
        )
    try:
        return paramiko.PKey.from_path(path)
    # paramiko's from_path lets cryptography's TypeError ("Key is password-protected, but
    # password was not provided") through for encrypted keys, OpenSSH and PEM format alike
    except (paramiko.PasswordRequiredException, TypeError):
        raise SourceFailed(
            source.name,
            f"key file {path} is protected by a passphrase, which unattended backups cannot "
            "use; make a dedicated key without one (ssh-keygen -t ed25519 -N ''), mode 0600, "
            "restricted on the device side",
        ) from None
    except OSError as exc:
        raise SourceFailed(source.name, f"cannot read key file {path}: {exc.strerror}") from None
    except (paramiko.SSHException, ValueError) as exc:
        raise SourceFailed(
            source.name, f"key file {path} is not a usable private key: {_reason(exc)}"
        ) from None


class _Reject(paramiko.RejectPolicy):
    """RejectPolicy that remembers the key it refused, for the error message."""

    offered: paramiko.PKey | None = None

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> NoReturn:
        self.offered = key
        super().missing_host_key(client, hostname, key)


def _connect(
    client: paramiko.SSHClient,
    source: SshSource,
    key: paramiko.PKey,
    policy: _Reject,
    timed_out: threading.Event,
) -> str:
    """Connect and authenticate; return the host key as ``type SHA256:...``."""
    where = _where(source)
    name = _known_hosts_name(source)
    limit = min(CONNECT_TIMEOUT, source.timeout)
    try:
        client.connect(
            source.host,
            port=source.port,
            username=source.user,
            pkey=key,
            look_for_keys=False,
            allow_agent=False,
            timeout=limit,
            banner_timeout=limit,
            auth_timeout=limit,
            channel_timeout=limit,
        )
    except paramiko.BadHostKeyException as exc:
        raise SourceFailed(
            source.name,
            f"the host key of {name} has CHANGED: {source.known_hosts} pins "
            f"{_describe(exc.expected_key)}, the server offered {_describe(exc.key)}. Someone "
            "may be intercepting the connection, or the device was reinstalled or replaced. "
            "Verify the new fingerprint out of band (on the device's console), then replace "
            f"the entry: ssh-keygen -R '{name}' -f {source.known_hosts}; "
            f"ssh-keyscan -p {source.port} {source.host} >> {source.known_hosts}",
        ) from None
    except paramiko.AuthenticationException as exc:
        raise SourceFailed(
            source.name,
            f"authentication as {where} with key {source.key} ({_describe(key)}) failed: "
            f"{_reason(exc)}; is its public key authorized for {source.user} on the device?",
        ) from None
    except paramiko.SSHException as exc:
        if policy.offered is not None:
            raise SourceFailed(
                source.name,
                f"unknown host key for {name}: the server offered {_describe(policy.offered)}, "
                f"which {source.known_hosts} does not list. Verify this fingerprint out of band "
                f"(on the device's console), then add it: "
                f"ssh-keyscan -p {source.port} {source.host} >> {source.known_hosts}",
            ) from None
        if timed_out.is_set():
            raise _too_slow(source, "") from None
        raise SourceFailed(source.name, f"SSH to {where} failed: {_reason(exc)}") from None
    except TimeoutError:
        raise SourceFailed(
            source.name, f"no answer from {source.host}:{source.port} within {limit:.0f} s"
        ) from None
    except (OSError, EOFError) as exc:
        if timed_out.is_set():
            raise _too_slow(source, "") from None
        raise SourceFailed(
            source.name, f"cannot connect to {source.host}:{source.port}: {_reason(exc)}"
        ) from None
    transport = client.get_transport()
    if transport is None:  # pragma: no cover - connect() succeeded
        raise SourceFailed(source.name, f"SSH connection to {where} was lost")
    return _describe(transport.get_remote_server_key())


def _too_slow(source: SshSource, tail: str) -> SourceFailed:
    return SourceFailed(
        source.name,
        f"ssh {_where(source)} did not finish within {source.timeout:.0f} s: "
        f"{tail or '(nothing on stderr)'}",
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        # paramiko's own text ("Unable to connect to port 22") hides the why: refused,
        # no route to host... one per address tried
        return "; ".join(sorted({_reason(e) for e in exc.errors.values()}))
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).rstrip(".") or type(exc).__name__


class _ReadFailed(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(cause)
        self.cause = cause


class _ChannelReader(io.RawIOBase):
    """The channel's stdout as a raw stream, for the chunker.

    paramiko's own ChannelFile.read(n) grows a bytes buffer until it holds n bytes, copying it
    on every packet: quadratic for the multi-megabyte reads the chunker makes."""

    def __init__(self, channel: paramiko.Channel) -> None:
        super().__init__()
        self._channel = channel

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._channel.recv(len(view))  # b"" at EOF and once the channel is closed
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise _ReadFailed(exc) from exc
        view[: len(data)] = data
        return len(data)


class _StderrTail(threading.Thread):
    """Drains the remote stderr, keeping its end.

    It must be read even if nobody looks at it: unread stderr still uses up the channel's
    flow-control window, and once that is full the remote stdout stalls too."""

    def __init__(self, channel: paramiko.Channel) -> None:
        super().__init__(daemon=True, name="ssh-stderr")
        self._channel = channel
        self._kept = bytearray()

    def run(self) -> None:
        while data := self._channel.recv_stderr(_READ_SIZE):
            self._kept += data
            del self._kept[:-_STDERR_KEEP]

    def text(self) -> str:
        lines = bytes(self._kept).decode("utf-8", "replace").splitlines()
        kept = [line.strip() for line in lines if line.strip()][-STDERR_TAIL_LINES:]
        return " | ".join(kept) or "(nothing on stderr)"
