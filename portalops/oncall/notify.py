"""Delivery through apprise: a person's channels in order, each retried, until one delivers.

Channel URLs carry passwords and tokens (``mailto://user:pass@...``, ``tgram://bottoken/...``),
so nothing here logs or returns a URL: a channel is named by its position and scheme.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

import apprise

from portalops.oncall.config import Delivery, Person
from portalops.oncall.messages import Message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivered:
    ok: bool
    channel: str | None  # "2:mailto", the channel that delivered (or was tried last)
    error: str | None  # every failure on the way, for the record


def channel_name(index: int, url: str) -> str:
    return f"{index + 1}:{urlsplit(url).scheme or '?'}"


async def send_one(url: str, message: Message, timeout: float) -> str | None:
    """None if the channel accepted the message; else why not (no secrets)."""
    notifier = apprise.Apprise()
    if not notifier.add(url):
        return "not a URL apprise understands"
    try:
        async with asyncio.timeout(timeout):
            result = await notifier.async_notify(body=message.body, title=message.title)
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    return None if result else "apprise reported the delivery failed"


async def deliver(person: Person, message: Message, delivery: Delivery) -> Delivered:
    """Try ``person``'s channels in order; each gets ``delivery.attempts`` tries with a
    doubling delay. The first channel that delivers ends it."""
    if not person.channels:
        return Delivered(False, None, f"{person.id} has no channels")
    errors: list[str] = []
    name = None
    for index, url in enumerate(person.channels):
        name = channel_name(index, url)
        delay = delivery.retry_delay
        for attempt in range(1, delivery.attempts + 1):
            error = await send_one(url, message, delivery.timeout)
            if error is None:
                if errors:
                    log.warning("page to %s delivered through channel %s after: %s",
                                person.id, name, "; ".join(errors))  # fmt: skip
                return Delivered(True, name, "; ".join(errors) or None)
            errors.append(f"channel {name} attempt {attempt}: {error}")
            if error.startswith("not a URL"):
                break  # retrying will not make it parse
            if attempt < delivery.attempts:
                await asyncio.sleep(delay)
                delay *= 2
    log.error("page to %s not delivered: %s", person.id, "; ".join(errors))
    return Delivered(False, name, "; ".join(errors))
