"""``GET /message/ws?app=<appId>``: the browser side of messaging."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from bfstream.messaging import protocol
from bfstream.messaging.transports.websocket import WebSocketSession

router = APIRouter()


@router.websocket("/message/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    # Accept before refusing: a close before the handshake reaches the browser as a bare HTTP 403,
    # with no code saying why.
    await websocket.accept()
    app_id = websocket.query_params.get("app")
    if not app_id:
        await websocket.close(protocol.CLOSE_BAD_REQUEST, "the app query parameter is required")
        return
    state = websocket.app.state
    if state.store.app_by_id(app_id) is None:
        await websocket.close(protocol.CLOSE_UNKNOWN_APP, "unknown app")
        return
    await WebSocketSession(websocket, state.hub, app_id, state.settings.send_queue).serve()
