"""The ASGI application: routes, error handlers, and what lives for the server's lifetime."""

from __future__ import annotations

import asyncio
import copy
import gc
import hashlib
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send
from uvicorn.config import WS_PROTOCOLS
from uvicorn.importer import import_from_string

from bfstream import __version__
from bfstream.api import admin, demo, docs, errors, llm, messages, metrics, pages, realtime, stream_events, streams
from bfstream.api.headers import AppOrigins, SecurityHeaders
from bfstream.api.limits import BodyLimit
from bfstream.api.openapi import describe
from bfstream.api.refused_calls import RefusedCalls
from bfstream.api.sockets import guarded_protocol
from bfstream.api.static import static_files
from bfstream.config import Settings
from bfstream.errors import BrokerError
from bfstream.filemaker.client import FileMaker
from bfstream.fleet import open_fleet
from bfstream.fleet.connection_limits import ConnectionLimits
from bfstream.fleet.control import Control
from bfstream.fleet.owners import Owners
from bfstream.messaging.hub import Hub
from bfstream.messaging.session import Context
from bfstream.messaging.transports.websocket import announce_write_path
from bfstream.messaging.users import UserSessions, apply_change
from bfstream.metrics import ConnectionCounter, Metrics
from bfstream.providers.http import provider_client
from bfstream.scrub import hold, install_log_scrubber
from bfstream.store.store import open_store
from bfstream.streams.lifecycle import Announcer
from bfstream.streams.orphans import end_orphans, keep_alive
from bfstream.streams.registry import StreamRegistry
from bfstream.streams.remote import FleetStreams
from bfstream.streams.saver import save_forever
from bfstream.streams.stream import StreamContext
from bfstream.streams.tools import ToolAnswers
from bfstream.webhooks import Deliveries

log = logging.getLogger("bfstream")

# Seconds a shutdown waits for the lifecycle events of the streams it drained before it cancels them.
DRAIN_EVENTS_GRACE = 3.0


def create_app(settings: Settings) -> FastAPI:
    # Made here, not in the lifespan: the connection counter below needs it when the app is built.
    counts = Metrics(settings.enabled_services())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = app.state
        state.settings = settings
        # Secrets of the configuration are scrubbed by value, whatever their shape.
        releases = [hold(secret) for secret in _configured_secrets(settings)]
        state.metrics = counts
        state.refused_calls = RefusedCalls()  # for the dashboard: this instance's, in memory
        state.store = store = await open_store(settings.database_url, settings.data_dir)
        state.demo_app = await demo.demo_app(store) if settings.demo.enabled else None
        secret = settings.token_secret
        state.signing_key = hashlib.sha256(secret.encode()).digest() if secret else await state.store.signing_key()
        # One pooled client for every provider call; each call sets its own time-outs.
        # One pooled session for every outgoing call: providers, and apps' webhooks.
        state.http = provider_client(settings.streams.provider_connections)
        state.fleet = fleet = open_fleet(settings)
        if not fleet.shared and settings.database_url and not settings.database_url.startswith("sqlite"):
            log.warning("a shared database with broker_url memory://: run one instance only (docs/deployment.md)")
        state.hub = hub = Hub(fleet.broker)
        try:
            await hub.start()
            # The lease exists before any record names this instance, so no other takes its streams for orphans.
            await fleet.leases.renew([])
        except BrokerError as exc:
            # A configuration problem for the operator, not a bug: said in one line (DrainingServer.startup).
            state.refusal = f"cannot start: {exc.message}; is Redis running at the broker_url printed above?"
            raise
        state.control = control = Control(fleet.broker)
        state.streams = registry = StreamRegistry(settings.streams, fleet.leases)
        owners = Owners(store, control)
        state.fleet_streams = FleetStreams(registry, store, owners, control)
        tools = settings.tools
        state.deliveries = deliveries = Deliveries(
            state.http, tools.delivery_attempts, tools.webhook_timeout, tools.allow_private_webhooks
        )
        state.filemaker = filemaker = FileMaker(state.http, store, settings)
        announcer = Announcer(store, deliveries, fleet.instance_id, filemaker)
        state.stream_context = StreamContext(
            hub, store, state.http, counts, registry, settings, fleet.instance_id, announcer, filemaker
        )
        state.tool_answers = answers = ToolAnswers(registry, owners, control)
        users = UserSessions()
        connections = ConnectionLimits(fleet.leases, settings.limits)
        state.messaging = Context(
            hub, store, users, fleet.presence, settings.messaging, settings.limits, fleet.rates, connections,
            answer_tool=answers.from_page, deliveries=deliveries,
        )  # fmt: skip
        control.on("users", lambda change: apply_change(users, hub, store, change))
        counts.watch(state)
        await control.start()
        interrupted = await end_orphans(store, hub, fleet.leases, fleet.instance_id, announcer=announcer)
        if interrupted:
            log.warning("%d stream(s) were cut short by a shutdown or crash; ended as interrupted", interrupted)
        await announcer.resend_orphans(fleet.leases)  # alone, what the last run left on its way
        held = lambda: registry.held_slots() + connections.held_slots()  # noqa: E731
        keeper = asyncio.create_task(keep_alive(held, fleet.leases, store, hub, fleet.instance_id, announcer))
        saver = asyncio.create_task(save_forever(registry, store))
        _settle_garbage_collector()
        try:
            yield
        finally:
            keeper.cancel()
            saver.cancel()
            await asyncio.gather(keeper, saver, return_exceptions=True)
            await registry.drain(0)
            await deliveries.close(grace=DRAIN_EVENTS_GRACE)
            await filemaker.close()
            await control.stop()
            await fleet.close()
            await hub.stop()
            await state.http.close()
            await store.close()
            for release in releases:
                release()

    app = _Application(
        title="bfstream",
        version=__version__,
        description="Streams LLM output to BetterForms-style messaging channels.",
        lifespan=lifespan,
        docs_url=None,  # served by api/docs.py, from bfstream's own copy of the viewer
        redoc_url=None,
    )
    errors.install(app)
    app.include_router(streams.router)
    app.include_router(stream_events.router)
    app.include_router(llm.router)
    app.include_router(messages.router)
    app.include_router(realtime.router)
    app.include_router(metrics.router)
    app.mount("/static", static_files(), name="static")  # bfstream.js, protocol.json, the pages' assets
    app.include_router(pages.router)
    app.include_router(docs.router)
    app.include_router(demo.router)
    app.include_router(admin.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = describe(errors.document_errors(document), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get(
        "/healthz",
        responses={503: {"description": "Draining before shutdown, or the broker is down: send streams elsewhere."}},
    )
    async def healthz() -> JSONResponse:
        """503 while draining or while the broker is unreachable, so a load balancer sends new
        streams elsewhere; ``broker`` says which."""
        draining = not app.state.streams.accepting
        broker_up = app.state.hub.broker.up
        status = "draining" if draining else "ok" if broker_up else "broker_down"
        body = {"status": status, "broker": "up" if broker_up else "down", "version": __version__}
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)  # load balancers probe so

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, per_address=settings.limits.body_bytes_per_address)
    app.add_middleware(ConnectionCounter, connections=counts.connections)
    if settings.cors_origins:
        # Browsers call /stream/stop and /message/sse directly; nothing here relies on cookies.
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"], allow_headers=["*"]
        )
    app.add_middleware(AppOrigins)
    # Outermost but for the one below, so that even the answers CORS gives by itself (preflights) carry them.
    app.add_middleware(SecurityHeaders, hsts=settings.tls_certfile is not None)
    return app


class _Application(FastAPI):
    """FastAPI, with what has to happen before any middleware, Starlette's outermost error handler
    included, wraps ``send``:

    - the server's own ``send`` is kept in the scope (``bfstream.server_send``): a WebSocket writes
      its frames to it (``api/realtime.py``), and an SSE response cuts through it the connection of
      a reader too slow to take its last bytes (``messaging/transports/sse.py``);
    - a start-up the lifespan refused (``app.state.refusal``) reaches uvicorn without the traceback
      Starlette attaches to it, which uvicorn would log; ``DrainingServer.startup`` says it in one line.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            state = self.state

            async def quiet(message: Message) -> None:
                if message["type"] == "lifespan.startup.failed" and getattr(state, "refusal", None):
                    message = {"type": message["type"], "message": ""}
                await send(message)

            await super().__call__(scope, receive, quiet)
            return
        scope["bfstream.server_send"] = send
        await super().__call__(scope, receive, send)


def _settle_garbage_collector() -> None:
    """What start-up made (modules, the app, its routes) lives as long as the process: frozen, the
    collector never walks it again. And a collection every 700 allocations (the default) meant
    full collections of 50-90 ms under load, each a stall for every stream: one every 50,000 keeps
    the young generation cheap and full collections rare. Memory only waits longer for cycles,
    which the relay hardly makes."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _configured_secrets(settings: Settings) -> list[str | None]:
    found = [settings.token_secret, settings.metrics_token, settings.admin_token]
    found += [service.api_key for service in settings.services.values()]
    # Headers configured for a service that carry a credential (Azure's api-key, a proxy's token).
    credential = ("authorization", "key", "token", "secret")
    for service in settings.services.values():
        found += [v for k, v in service.headers.items() if any(word in k.lower() for word in credential)]
    return found


class DrainingServer(uvicorn.Server):
    """uvicorn, but on SIGTERM/SIGINT running streams get ``streams.drain_seconds`` to finish first.

    uvicorn closes every WebSocket as soon as it starts shutting down, so the drain has to happen
    before that for the browsers to see their streams end."""

    _draining = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn exits with its start-up failure code; a refusal the lifespan explained is instead
        one ``bfstream: ...`` line and the CLI's usage-error code (``bfstream.cli.main``)."""
        try:
            await super().startup(sockets)
        except SystemExit:
            refusal = getattr(getattr(self.config.app, "state", None), "refusal", None)
            if refusal:
                raise SystemExit(f"bfstream: {refusal}") from None
            raise

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        state = getattr(self.config.app, "state", None)
        streams = getattr(state, "streams", None)
        if self._draining or streams is None or not self.started:
            self._exit_now(sig, frame)
            return
        self._draining = True
        seconds = state.settings.streams.drain_seconds
        log.info("draining: no new streams; %d running get up to %.0f s", len(streams), seconds)

        async def drain_then_exit() -> None:
            await streams.drain(seconds)
            self._exit_now(sig, frame)

        # Kept on self: the loop holds tasks only weakly, and a drain must not vanish half-way.
        self._drain_task = asyncio.get_running_loop().create_task(drain_then_exit())

    def _exit_now(self, sig: int, frame: FrameType | None) -> None:
        messaging = getattr(getattr(self.config.app, "state", None), "messaging", None)
        if messaging is not None:
            messaging.closing.set()  # uvicorn waits for open responses; SSE streams must end themselves
        super().handle_exit(sig, frame)


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, with bfstream's own loggers (``bfstream.*``) on its console handler at
    ``level``: without it they reached no handler, so only warnings came out, bare, through
    Python's last-resort handler, and ``log_level = "debug"`` changed nothing of bfstream's."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["loggers"]["bfstream"] = {"handlers": ["default"], "level": level.upper()}  # propagates: caplog sees it
    return config


def server_config(settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The one uvicorn configuration, shared by ``bfstream serve`` and the tests."""
    # Log lines show URLs (browsers pass connection tokens in the query string) and error texts.
    install_log_scrubber()
    ping = settings.messaging.ping_interval
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "log_config": log_config(settings.log_level),
        # A connection that stays silent through a ping and its timeout is dropped: dead peers go
        # within two intervals.
        "ws_ping_interval": ping,
        "ws_ping_timeout": ping,
        "ws_max_size": settings.messaging.max_frame_bytes,
        "ws_per_message_deflate": settings.messaging.compression,
        # Named, not "auto": the direct frame path (messaging/transports/websocket.py) and the 4408
        # of a slow reader rely on this protocol's write flow control, whatever "auto" picks next.
        "ws": "websockets-sansio",
        # A backstop: requests still open this long after shutdown began are cut.
        "timeout_graceful_shutdown": 5,
        "ssl_certfile": settings.tls_certfile,
        "ssl_keyfile": settings.tls_keyfile,
        **overrides,
    }
    config = uvicorn.Config(create_app(settings), **options)  # sets up uvicorn's logging, which the line below uses
    ws = config.ws if not isinstance(config.ws, str) else WS_PROTOCOLS.get(config.ws, config.ws)
    if ws is not None:  # "none": no WebSocket at all
        announce_write_path(import_from_string(ws) if isinstance(ws, str) else ws, settings.messaging)
    # After the Config is made: which peers are proxies is uvicorn's reading of its options and
    # environment (FORWARDED_ALLOW_IPS), and the guard must agree with it.
    config.http = guarded_protocol(config, settings.limits)
    return config
