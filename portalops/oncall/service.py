"""``ops oncall serve``: Alertmanager's webhook in, pages out, acknowledgements by link.

Endpoints:

- ``POST /alertmanager``: Alertmanager's webhook (``Authorization: Bearer <webhook token>``);
- ``GET /ack?i=&p=&e=&s=``: the signed link of a page; shows a confirmation button, so a mail
  scanner that follows links acknowledges nothing;
- ``POST /ack`` (the same four fields, as the button sends them): acknowledges;
- ``GET /incidents``: open and recent incidents as JSON (read-only);
- ``GET /metrics``: Prometheus text (pages, escalation steps, database errors, the last tick
  and the last Watchdog), behind a bearer token of its own (``oncall.metrics_token_file``);
- ``GET /healthz``.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from portalops.oncall import watchdog
from portalops.oncall.config import Oncall
from portalops.oncall.engine import Clock, Escalator, TickHook
from portalops.oncall.metrics import CONTENT_TYPE
from portalops.oncall.secrets import LinkSigner, load_or_create, token_matches
from portalops.oncall.store import Store

log = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 4 * 1024 * 1024

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
        app = web.Application(client_max_size=MAX_WEBHOOK_BYTES)
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
            payload: Any = await request.json()
            if isinstance(payload, dict) and self.switch is not None:
                arrived, payload = watchdog.split(payload)  # the dead man's switch, no incident
                if arrived:
                    self.switch.arrived(self.escalator.clock())
                if payload is None:
                    return web.json_response({"ok": True, "watchdog": arrived})
            summary = self.escalator.receive(payload, self.escalator.clock())
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": f"bad payload: {exc}"}, status=400)
        return web.json_response({"ok": True, **summary})

    def _lang(self, person_id: str) -> str:
        person = self.oncall.person(person_id)
        return (person.lang if person and person.lang else None) or self.oncall.lang

    def _check(self, fields: Any) -> tuple[str, str, str]:
        """(lang, refusal reason or '', incident id)."""
        incident, person = str(fields.get("i", "")), str(fields.get("p", ""))
        why = self.escalator.signer.verify(
            incident,
            person,
            str(fields.get("e", "")),
            str(fields.get("s", "")),
            self.escalator.clock(),
        )
        if not why and self.oncall.person(person) is None:
            why = "unknown person"
        return self._lang(person), why, incident

    async def ack_form(self, request: web.Request) -> web.Response:
        lang, why, incident_id = self._check(request.query)
        text = _ACK_TEXT[lang]
        if why:
            return _page(lang, text["refused"].format(why=why), "", status=403)
        incident = self.escalator.store.incident(int(incident_id))
        person = self.oncall.person(request.query["p"])
        if incident is None or person is None:
            return _page(lang, text["refused"].format(why="unknown incident"), "", status=404)
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
        form = await request.post()
        lang, why, incident_id = self._check(form)
        text = _ACK_TEXT[lang]
        if why:
            log.warning("acknowledge refused for incident %s: %s", incident_id or "?", why)
            return _page(lang, text["refused"].format(why=why), "", status=403)
        person = str(form["p"])
        done = self.escalator.store.acknowledge(int(incident_id), person, self.escalator.clock())
        if done is None:
            incident = self.escalator.store.incident(int(incident_id))
            status = incident.status if incident else "unknown"
            shown = _STATUS_VI.get(status, status) if lang == "vi" else status
            return _page(lang, text["already"].format(id=incident_id, status=shown), "")
        log.info("incident %s acknowledged by %s (signed link)", incident_id, person)
        self.escalator.wake.set()
        return _page(lang, text["done"].format(id=incident_id), "")

    async def incidents(self, _: web.Request) -> web.Response:
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
    store = Store(database)
    signer = LinkSigner(load_or_create(link_key))
    token = load_or_create(token_file)
    base_url = oncall.public_url or f"http://{listen}"
    escalator = Escalator(oncall, store, signer, base_url, clock=clock, after_tick=after_tick)
    return escalator, token


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
    # apprise masks secrets in what it logs, but its debug lines are noise at 2 a.m.
    logging.getLogger("apprise").setLevel(max(logging.INFO, log.getEffectiveLevel()))
    escalator, token = make_escalator(oncall, state_dir, listen, clock=clock, after_tick=after_tick)
    switch = watchdog.Switch(oncall, escalator.metrics, started=clock())
    escalator.metrics.read_at_scrape(
        lambda: len(escalator.store.incidents(open_only=True, limit=100_000)),
        lambda: float(getattr(escalator, "last_tick", 0.0) or 0.0),
    )
    metrics_token = load_or_create(oncall.metrics_token_path(state_dir))
    handler = OncallApp(oncall, escalator, token, switch, metrics_token)
    runner = web.AppRunner(handler.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
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
        await runner.cleanup()
        await watching
        await escalator.drain(timeout=oncall.delivery.timeout)
        escalator.store.close()
        log.info("on-call service stopped")
