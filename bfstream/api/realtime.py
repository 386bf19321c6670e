"""The browser side of messaging: ``GET /message/ws`` and ``GET /message/sse``.

Both take ``?app=<appId>`` and, for a signed-in user, ``&token=<connection token>``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, WebSocket, WebSocketDisconnect
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from bfstream.api.errors import error_response
from bfstream.api.headers import narrow_to_app
from bfstream.api.openapi import ChannelParameter
from bfstream.errors import BfstreamError, Forbidden, NotFound, ValidationFailed
from bfstream.messaging import protocol, tokens
from bfstream.messaging.session import Context, check_access, resume_from
from bfstream.messaging.tokens import User
from bfstream.messaging.transports.sse import EventStream
from bfstream.messaging.transports.websocket import WebSocketConnection
from bfstream.store.records import App

router = APIRouter()


class _Endpoint:
    """An ASGI callable that Starlette takes as an app, not as an endpoint to wrap: it wraps plain
    functions and methods only."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


async def identify(connection: HTTPConnection) -> tuple[App, User | None]:
    """The app a connection belongs to, and its user when it brings a token. A page whose origin
    the app does not list is refused (a browser always sends Origin on a WebSocket upgrade)."""
    app_id = connection.query_params.get("app")
    if not app_id:
        raise ValidationFailed("The app query parameter is required", details=[{"field": "app", "message": "required"}])
    store = connection.app.state.store
    app = await store.app_by_id(app_id)
    if app is None:
        raise NotFound(f"Unknown app {app_id[:80]!r}")
    narrow_to_app(connection.scope, app.origins)
    if not app.allows_origin(connection.headers.get("origin")):
        raise Forbidden("This page's origin may not connect to this app (bfstream apps update --origins)")
    token = connection.query_params.get("token")
    user = tokens.verify(connection.app.state.signing_key, token, app.id) if token else None
    return app, user


async def websocket_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /message/ws``, as a plain ASGI endpoint: its frames go to the server's own ``send``.
    A FastAPI websocket route wraps ``send`` in coroutines of its own, which every frame then went
    through; at 1,000 streams they were 8% of the server's CPU, for nothing a connection uses."""
    websocket = WebSocket(scope, receive, send)
    try:
        # Accept before refusing: a close before the handshake reaches the browser as a bare HTTP
        # 403, with no code saying why.
        await websocket.accept()
        try:
            app, user = await identify(websocket)
        except BfstreamError as exc:
            await websocket.close(protocol.close_code(exc.status), exc.message[:120])
            return
        context: Context = websocket.app.state.messaging
        # ``since``: positions (as in SSE ids) for the channels a user's connection joins by itself.
        resume = resume_from(websocket.query_params.get("since"))
        server_send = scope.get("bfstream.server_send", send)
        await WebSocketConnection(websocket, context, app, user, resume, server_send).serve()
    except WebSocketDisconnect:
        # The client left (or broke the protocol, and uvicorn closed it) before the accept or the
        # close could reach it: nobody is left to tell, and it is no server error to log.
        return


# A route of the ASGI function itself (Starlette wraps only endpoints that take a WebSocket).
router.routes.append(WebSocketRoute("/message/ws", _Endpoint(websocket_endpoint)))


@router.get(
    "/message/sse",
    response_class=Response,
    responses={200: {"content": {"text/event-stream": {}}, "description": "An endless Server-Sent Events stream."}},
)
async def sse_endpoint(
    request: Request,
    app: Annotated[str, Query(description="The app id (app_...).", json_schema_extra={"minLength": 1})],
    channel: Annotated[list[ChannelParameter], Query(description="Channels to join; repeat for several.")] = [],  # noqa: B006
    token: Annotated[str | None, Query(description="A connection token from POST /message/token.")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    lastEventId: Annotated[str | None, Query(description="Resume point, when a header cannot be set.")] = None,
) -> Response:
    """Stream the connection's messages as Server-Sent Events, resuming from ``Last-Event-ID``."""
    try:
        found_app, user = await identify(request)
        context: Context = request.app.state.messaging
        channels = list(dict.fromkeys(channel))
        if len(channel) > context.limits.max_channels:  # as given, as the document's maxItems counts
            raise ValidationFailed(f"At most {context.limits.max_channels} channels per connection")
        for name in channels:
            problem = protocol.channel_problem(name)
            if problem is not None:
                raise ValidationFailed(problem, details=[{"field": "channel", "message": problem}])
            await check_access(context.store, found_app, user, name)
        address = request.client.host if request.client else None
        resume = resume_from(last_event_id or lastEventId)
        return await EventStream.open(context, found_app, user, channels, resume, address)
    except BfstreamError as exc:
        return error_response(exc)
