"""Delivery through apprise: a person's channels in order, each retried, until one delivers.

Channel URLs carry passwords and tokens (``mailto://user:pass@...``, ``tgram://bottoken/...``),
so nothing here logs or returns a URL: a channel is named by its position and scheme.

Every channel (every distinct URL) has its own small thread pool, and every attempt runs the
apprise plugin synchronously in it with apprise's socket timeouts set to
``delivery.timeout``. An attempt that does not answer in time is *abandoned*: its thread may
still be blocked, so the channel is not tried again for this page (a retry could deliver
twice once the first attempt wakes up) and the next channel is tried at once; if it ends
later, that is logged. A channel whose threads are all held by abandoned attempts refuses
new ones straight away ("busy"). A mail server that accepts connections and never answers
costs each page one ``delivery.timeout`` on that channel until its threads are all held,
then none, and it never blocks another channel's threads (an asyncio timeout alone does not
stop apprise's threads: they filled its shared pool and a healthy channel then failed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

import apprise

from portalops.oncall.config import Delivery, Person
from portalops.oncall.messages import Message
from portalops.oncall.secrets import remember_channels

log = logging.getLogger(__name__)

#: Threads per channel: attempts of one channel under way at once (more wait their turn).
WORKERS_PER_CHANNEL = 4
_ABANDONED = "no answer within"
_BUSY = "channel busy"
_UNPARSABLE = "not a URL apprise understands"


@dataclass(frozen=True)
class Delivered:
    ok: bool
    channel: str | None  # "2:mailto", the channel that delivered (or was tried last)
    error: str | None  # every failure on the way, for the record


def channel_name(index: int, url: str) -> str:
    return f"{index + 1}:{urlsplit(url).scheme or '?'}"


class _Channel:
    """One channel's pool and the number of its abandoned attempts still holding a thread."""

    def __init__(self) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(
            WORKERS_PER_CHANNEL, thread_name_prefix="oncall-channel"
        )
        self.lock = threading.Lock()
        self.abandoned = 0

    def stuck(self) -> bool:
        with self.lock:
            return self.abandoned >= WORKERS_PER_CHANNEL

    def abandon(self, future: concurrent.futures.Future[str | None], name: str) -> None:
        with self.lock:
            self.abandoned += 1
        future.add_done_callback(lambda done: self._ended_late(done, name))

    def _ended_late(self, future: concurrent.futures.Future[str | None], name: str) -> None:
        with self.lock:
            self.abandoned -= 1
        error = future.exception() or future.result()
        log.warning("an abandoned attempt on channel %s ended late: %s", name,
                    "delivered after all" if error is None else error)  # fmt: skip


_channels: dict[str, _Channel] = {}
_channels_lock = threading.Lock()


def _channel(url: str) -> _Channel:
    with _channels_lock:
        found = _channels.get(url)
        if found is None:
            found = _channels[url] = _Channel()
        return found


def _attempt(url: str, message: Message, timeout: float) -> str | None:
    """One synchronous try in the channel's thread: None if delivered, else why not."""
    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        return _UNPARSABLE
    # apprise's own socket timeouts bound the thread (SMTP uses the connect one for every
    # read too); never longer than ours
    plugin.socket_connect_timeout = min(float(plugin.socket_connect_timeout), timeout)
    plugin.socket_read_timeout = min(float(plugin.socket_read_timeout), timeout)
    try:
        ok = plugin.notify(body=message.body, title=message.title)
    except Exception as exc:  # a plugin bug must not kill the page; its text may hold the URL
        return f"apprise raised {type(exc).__name__}"
    return None if ok else "apprise reported the delivery failed"


async def send_one(url: str, message: Message, timeout: float, name: str = "?") -> str | None:
    """None if the channel accepted the message; else why not (no secrets)."""
    remember_channels([url])  # before apprise has a chance to log any part of it
    if apprise.Apprise.instantiate(url) is None:
        return _UNPARSABLE
    channel = _channel(url)
    if channel.stuck():
        return f"{_BUSY}: {WORKERS_PER_CHANNEL} abandoned attempts have not ended"
    try:
        future = channel.pool.submit(_attempt, url, message, timeout)
    except RuntimeError:  # the interpreter is shutting down
        return "shutting down"
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.shield(asyncio.wrap_future(future))
    except TimeoutError:
        if future.cancel():  # still waiting for a thread: never ran, safe to try again
            return f"waited {timeout:g} s for a free thread of this channel"
        channel.abandon(future, name)
        return f"{_ABANDONED} {timeout:g} s (abandoned, not retried: it may yet deliver)"


async def deliver(person: Person, message: Message, delivery: Delivery) -> Delivered:
    """Try ``person``'s channels in order; each gets ``delivery.attempts`` tries with a
    doubling delay. The first channel that delivers ends it; a channel that did not answer
    (or is busy with earlier attempts) is left at once for the next one."""
    if not person.channels:
        return Delivered(False, None, f"{person.id} has no channels")
    errors: list[str] = []
    name = None
    for index, url in enumerate(person.channels):
        name = channel_name(index, url)
        delay = delivery.retry_delay
        for attempt in range(1, delivery.attempts + 1):
            error = await send_one(url, message, delivery.timeout, name)
            if error is None:
                if errors:
                    log.warning("page to %s delivered through channel %s after: %s",
                                person.id, name, "; ".join(errors))  # fmt: skip
                return Delivered(True, name, "; ".join(errors) or None)
            errors.append(f"channel {name} attempt {attempt}: {error}")
            if error.startswith((_UNPARSABLE, _ABANDONED, _BUSY)):
                break  # retrying would not parse it, or could deliver twice
            if attempt < delivery.attempts:
                await asyncio.sleep(delay)
                delay *= 2
    log.error("page to %s not delivered: %s", person.id, "; ".join(errors))
    return Delivered(False, name, "; ".join(errors))
