"""``ops oncall serve``: Alertmanager's webhook in, pages out, acknowledgements by link.

Endpoints:

- ``POST /alertmanager``: Alertmanager's webhook (``Authorization: Bearer <webhook token>``);
- ``GET /ack?i=&p=&e=&s=``: the signed link of a page; shows a confirmation button, so a mail
  scanner that follows links acknowledges nothing;
- ``POST /ack`` (the same four fields, as the button sends them): acknowledges;
- ``GET /incidents``: open and recent incidents as JSON (read-only; the webhook's bearer
  token, as it shows what is broken where);
- ``GET /metrics``: Prometheus text (pages, escalation steps, database errors, the last tick
  and the last Watchdog), behind a bearer token of its own (``oncall.metrics_token_file``);
- ``GET /healthz``: 200 ``ok``, or 503 naming what is wrong (database, loop, unrecorded pages).

Only ``/ack`` is meant to be reachable from outside (a reverse proxy publishing that path).
Everything a client sends is hostile input: a malformed request is a 4xx with one line in the
log, never a 500 and a traceback.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import ClientPayloadError, web
from aiohttp.typedefs import Middleware

from portalops.oncall import notify, watchdog
from portalops.oncall.config import Oncall
from portalops.oncall.engine import Clock, Escalator, TickHook
from portalops.oncall.metrics import CONTENT_TYPE, OncallMetrics
from portalops.oncall.secrets import (
    LinkSigner,
    load_or_create,
    parse_number,
    remember_channels,
    token_matches,
)
from portalops.oncall.store import Incident, Store, private_dir

log = logging.getLogger(__name__)

#: Alertmanager's largest groups (hundreds of alerts with annotations) stay well below this.
MAX_WEBHOOK_BYTES = 1024 * 1024
#: How deep a webhook's JSON may nest: Alertmanager's is 4 levels deep.
MAX_JSON_DEPTH = 16
#: How long the service's database writes wait for another writer (``ops oncall ack``):
#: they run on the event loop, so a locked database is retried later instead.
SERVICE_BUSY_TIMEOUT = 0.25

#: Idle keep-alive connections close after this (aiohttp's default is an hour); it is also
#: how long a connection may take to send its first request line and headers.
KEEPALIVE_TIMEOUT = 10.0
#: How long a webhook's body may take to arrive.
BODY_TIMEOUT = 10.0
#: Open connections at most (Alertmanager needs a few; the process has ~1000 descriptors):
#: beyond, a new connection is answered 503 and closed.
MAX_CONNECTIONS = 64
BACKLOG = 64

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Refused(asyncio.Protocol):
    """A connection over :data:`MAX_CONNECTIONS`: one 503, closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                            b"Connection: close\r\n\r\n")  # fmt: skip
        transport.close()


def _bounded(server: web.Server, limit: int) -> Callable[[], asyncio.BaseProtocol]:
    """aiohttp's protocol factory, refusing connections beyond ``limit`` open ones (slow or
    idle clients must not take every file descriptor of the service)."""

    def factory() -> asyncio.BaseProtocol:
        if len(server.connections) >= limit:
            log.debug("connection refused: %d open connections already", limit)
            return _Refused()
        return server()

    return factory


class BadRequest(ValueError):
    """A request the service will not act on; its text is safe to return to the client."""


def _depth_ok(value: Any, limit: int) -> bool:
    """Whether ``value`` nests at most ``limit`` deep (iteratively: no recursion to blow)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return True


def parse_webhook(raw: bytes) -> dict[str, Any]:
    """The webhook body as a JSON object, or :class:`BadRequest` saying why not."""
    try:
        text = raw.decode("utf-8")
        payload = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("the body is not UTF-8 JSON") from None
    if not isinstance(payload, dict):
        raise BadRequest("the body is not a JSON object")
    if not _depth_ok(payload, MAX_JSON_DEPTH):
        raise BadRequest(f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    return payload


def _refuse_malformed(metrics: OncallMetrics) -> Middleware:
    """The last line of defence: what a handler could not parse is a 400, one log line; a
    database error is a 503, counted in ``metrics``; a client gone mid-body one DEBUG line."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except (BadRequest, UnicodeError, RecursionError, OverflowError) as exc:
            log.warning("%s %s from %s refused: %s", request.method, request.path,
                        request.remote, exc)  # fmt: skip
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        except sqlite3.Error as exc:  # locked by ops oncall ack, disk full: the client retries
            metrics.database_error(exc)
            log.warning("%s %s: database unavailable: %s", request.method, request.path, exc)
            return web.json_response({"error": "database unavailable, try again"}, status=503)
        except (ConnectionError, ClientPayloadError) as exc:  # the client went away mid-body
            log.debug("%s %s from %s: client gone: %s", request.method, request.path,
                      request.remote, exc)  # fmt: skip
            return web.Response(status=400)

    return middleware


_ACK_TEXT = {
    "vi": {
        "title": "Xác nhận xử lý sự cố #{id}",
        "confirm": "{name}, bạn xác nhận đã nhận xử lý sự cố #{id} ({alert})?",
        "button": "Xác nhận",
        "done": "Đã xác nhận sự cố #{id}. Hệ thống sẽ không gọi thêm người khác.",
        "already": "Sự cố #{id} đã ở trạng thái: {status}. Không cần xác nhận nữa.",
        "refused": "Liên kết không hợp lệ: {why}.",
    },
    "en": {
        "title": "Acknowledge incident #{id}",
        "confirm": "{name}, do you take incident #{id} ({alert})?",
        "button": "Acknowledge",
        "done": "Incident #{id} acknowledged. Nobody else will be paged for it.",
        "already": "Incident #{id} is already {status}. Nothing to acknowledge.",
        "refused": "This link is not valid: {why}.",
    },
}
_STATUS_VI = {"acknowledged": "đã xác nhận", "resolved": "đã khắc phục", "firing": "đang báo"}


def _page(lang: str, title: str, body: str, status: int = 200) -> web.Response:
    doc = (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width"><title>{html.escape(title)}</title>'
        f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return web.Response(
        status=status,
        text=doc,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; form-action 'self'",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
        },
    )


class OncallApp:
    def __init__(
        self,
        oncall: Oncall,
        escalator: Escalator,
        token: bytes,
        switch: watchdog.Switch | None = None,
        metrics_token: bytes | None = None,
    ) -> None:
        self.oncall, self.escalator, self.token = oncall, escalator, token
        self.switch, self.metrics_token = switch, metrics_token

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_WEBHOOK_BYTES,
            middlewares=[_refuse_malformed(self.escalator.metrics)],
        )
        app.router.add_post("/alertmanager", self.webhook)
        app.router.add_get("/ack", self.ack_form)
        app.router.add_post("/ack", self.ack)
        app.router.add_get("/incidents", self.incidents)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def webhook(self, request: web.Request) -> web.Response:
        if not token_matches(self.token, request.headers.get("Authorization")):
            log.warning("webhook from %s refused: missing or wrong bearer token", request.remote)
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                raw = await request.read()
            payload: Any = parse_webhook(raw)
            if isinstance(payload, dict) and self.switch is not None:
                arrived, payload = watchdog.split(payload)  # the dead man's switch, no incident
                if arrived:
                    self.switch.arrived(self.escalator.clock())
                if payload is None:
                    return web.json_response({"ok": True, "watchdog": arrived})
            summary = self.escalator.receive(payload, self.escalator.clock())
        except TimeoutError:  # a body trickling in: the connection is not worth keeping
            log.info("webhook from %s: body not received within %g s", request.remote,
                     BODY_TIMEOUT)  # fmt: skip
            return web.json_response({"error": "body too slow"}, status=408)
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:
            return web.json_response({"error": f"bad payload: {exc}"}, status=400)
        return web.json_response({"ok": True, **summary})

    def _lang(self, person_id: str) -> str:
        person = self.oncall.person(person_id)
        return (person.lang if person and person.lang else None) or self.oncall.lang

    def _check(self, fields: Any) -> tuple[str, str, Incident | None]:
        """(lang, refusal reason or '', the incident the link names). The signature covers
        the incident's nonce from the database, so a link signed for another incident that
        had this number (a recreated database, the same ``link.key``) is refused."""
        number = parse_number(str(fields.get("i", "")))
        person = str(fields.get("p", ""))
        lang = self._lang(person)
        if number is None:
            return lang, "malformed", None
        incident = self.escalator.store.incident(number)
        why = self.escalator.signer.verify(
            number,
            incident.nonce if incident else "",  # unknown: refused as a bad signature
            person,
            str(fields.get("e", "")),
            str(fields.get("s", "")),
            self.escalator.clock(),
        )
        if not why and self.oncall.person(person) is None:
            why = "unknown person"
        return lang, why, incident

    async def ack_form(self, request: web.Request) -> web.Response:
        lang, why, incident = self._check(request.query)
        text = _ACK_TEXT[lang]
        if why:
            return _page(lang, text["refused"].format(why=why), "", status=403)
        person = self.oncall.person(request.query["p"])
        if incident is None or person is None:
            return _page(lang, text["refused"].format(why="unknown incident"), "", status=404)
        if incident.status != "firing":  # nothing to confirm: say so before the button
            status = _STATUS_VI.get(incident.status, incident.status)
            shown = status if lang == "vi" else incident.status
            return _page(lang, text["already"].format(id=incident.id, status=shown), "")
        hidden = "".join(
            f'<input type="hidden" name="{k}" value="{html.escape(request.query[k])}">'
            for k in ("i", "p", "e", "s")
        )
        question = text["confirm"].format(name=person.name, id=incident.id,
                                          alert=incident.alertname)  # fmt: skip
        body = (
            f'<p>{html.escape(question)}</p><form method="post" action="ack">{hidden}'
            f'<button type="submit">{html.escape(text["button"])}</button></form>'
        )
        return _page(lang, text["title"].format(id=incident.id), body)

    async def ack(self, request: web.Request) -> web.Response:
        try:
            form = await request.post()
        except ValueError as exc:  # a body that is not a form
            raise BadRequest(f"not a form: {type(exc).__name__}") from None
        lang, why, found = self._check(form)
        text = _ACK_TEXT[lang]
        if why or found is None:
            why = why or "unknown incident"
            log.warning("acknowledge refused for incident %s: %s", found.id if found else "?", why)
            return _page(lang, text["refused"].format(why=why), "", status=403)
        incident_id = found.id
        person = str(form["p"])
        done = self.escalator.store.acknowledge(incident_id, person, self.escalator.clock())
        if done is None:
            incident = self.escalator.store.incident(incident_id)
            status = incident.status if incident else "unknown"
            shown = _STATUS_VI.get(status, status) if lang == "vi" else status
            return _page(lang, text["already"].format(id=incident_id, status=shown), "")
        log.info("incident %s acknowledged by %s (signed link)", incident_id, person)
        self.escalator.wake.set()
        return _page(lang, text["done"].format(id=incident_id), "")

    async def incidents(self, request: web.Request) -> web.Response:
        if not token_matches(self.token, request.headers.get("Authorization")):
            log.warning("/incidents from %s refused: missing or wrong bearer token",
                        request.remote)  # fmt: skip
            return web.json_response({"error": "unauthorized"}, status=401)
        store = self.escalator.store
        return web.json_response(
            [i.to_json() for i in store.incidents(limit=200)],
            dumps=lambda d: json.dumps(d, ensure_ascii=False),
        )

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text; it names channels and counts incidents, so a bearer token of its
        own guards it (``oncall.metrics_token_file``)."""
        if self.metrics_token is None or not token_matches(
            self.metrics_token, request.headers.get("Authorization")
        ):
            return web.json_response({"error": "unauthorized"}, status=401)
        body = self.escalator.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def healthz(self, _: web.Request) -> web.Response:
        """200 ``ok``; 503 and one line per problem when the database does not answer, the
        loop has stopped, or delivered pages wait to be recorded."""
        problems = self.escalator.health()
        if problems:
            return web.Response(text="".join(f"{p}\n" for p in problems), status=503)
        return web.Response(text="ok\n")


def make_escalator(
    oncall: Oncall,
    state_dir: Path,
    listen: str,
    *,
    clock: Clock = time.time,
    after_tick: TickHook | None = None,
) -> tuple[Escalator, bytes]:
    database, link_key, token_file = oncall.state_paths(state_dir)
    ours = state_dir / "oncall"
    private_dir(ours)  # the default home of the secrets, wherever the database is
    own = database.parent.resolve() == ours.resolve()  # ours to chmod
    store = Store(database, busy_timeout=SERVICE_BUSY_TIMEOUT, own_dir=own)
    signer = LinkSigner(load_or_create(link_key))
    token = load_or_create(token_file)
    base_url = oncall.public_url or f"http://{listen}"
    escalator = Escalator(oncall, store, signer, base_url, clock=clock, after_tick=after_tick)
    return escalator, token


def count_open(store: Store) -> int:
    """Incidents firing or acknowledged, counted by the database (``/metrics``)."""
    row = store.db.execute("SELECT COUNT(*) FROM incidents WHERE status != 'resolved'").fetchone()
    return int(row[0])


async def serve(
    oncall: Oncall,
    state_dir: Path,
    host: str,
    port: int,
    listen: str,
    *,
    clock: Clock = time.time,
    after_tick: TickHook | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until ``stop`` is set, or (without one, as ``ops oncall serve``) until SIGTERM or
    SIGINT; deliveries in flight get a bounded grace period.

    ``clock`` and ``after_tick`` are the escalator's (:class:`Escalator`): a test that runs
    the service in its own thread moves the clock and waits for the tick that saw it."""
    # apprise's debug and info lines can show channel URLs (passwords, tokens); the CLI
    # clamps it too (portalops.cli.main), this covers the service run in-process
    logging.getLogger("apprise").setLevel(logging.WARNING)
    remember_channels(url for person in oncall.people for url in person.channels)
    escalator, token = make_escalator(oncall, state_dir, listen, clock=clock, after_tick=after_tick)
    switch = watchdog.Switch.load(oncall, escalator.metrics, clock(),
                                  watchdog.state_path(escalator.store.path),
                                  health=escalator.health)  # fmt: skip
    escalator.metrics.precreate(
        notify.channel_name(index, url)
        for person in oncall.people
        for index, url in enumerate(person.channels)
    )
    escalator.metrics.read_at_scrape(
        lambda: count_open(escalator.store),
        lambda: escalator.last_good_tick or 0.0,
    )
    metrics_token = load_or_create(oncall.metrics_token_path(state_dir))
    handler = OncallApp(oncall, escalator, token, switch, metrics_token)
    runner = web.AppRunner(handler.app(), access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT)
    await runner.setup()
    server = runner.server
    if server is None:  # runner.setup() made it
        raise RuntimeError("aiohttp runner has no server after setup")
    listener = await asyncio.get_running_loop().create_server(
        _bounded(server, MAX_CONNECTIONS), host, port, backlog=BACKLOG
    )
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    log.info("on-call service listening on %s:%d (database %s)", host, port,
             escalator.store.path)  # fmt: skip
    watching = asyncio.create_task(switch.run(stop, clock))
    try:
        await escalator.run(stop)
    finally:
        listener.close()
        await runner.cleanup()
        stop.set()  # the switch's loop ends with the service, however the loop above ended
        await watching
        await escalator.drain(timeout=oncall.delivery.timeout)
        escalator.flush_records()
        escalator.store.close()
        log.info("on-call service stopped")
