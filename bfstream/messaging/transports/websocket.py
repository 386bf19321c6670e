"""One browser connection over WebSocket: its channels, its send queue, its request loop.

Frames to the client go through a bounded queue drained by one writer task, so a slow reader
never blocks the hub; when the queue is full the connection is closed with ``CLOSE_SLOW_CONSUMER``
rather than letting server memory grow.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from bfstream.messaging import protocol
from bfstream.messaging.hub import Hub, scoped


class WebSocketSession:
    def __init__(self, websocket: WebSocket, hub: Hub, app_id: str, queue_size: int) -> None:
        self.id = secrets.token_urlsafe(12)
        self._ws = websocket
        self._hub = hub
        self._app_id = app_id
        self._private = protocol.PRIVATE_PREFIX + self.id
        self._channels: set[str] = set()
        self._queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self._writer: asyncio.Task[None] | None = None
        self._too_slow = False

    def push(self, frame: str) -> None:
        if self._too_slow:
            return
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self._too_slow = True
            if self._writer is not None:
                self._writer.cancel()

    async def serve(self) -> None:
        """Run until the client goes away, or is dropped for reading too slowly."""
        self._writer = asyncio.create_task(self._write_forever())
        await self._join(self._private)
        self.push(protocol.dumps({"op": "hello", "connectionId": self.id, "channels": [self._private]}))
        # Read only once hello is queued, so it is always the first frame the client sees.
        reader = asyncio.create_task(self._read_forever())
        try:
            await asyncio.wait({self._writer, reader}, return_when=asyncio.FIRST_COMPLETED)
            if self._too_slow and self._ws.client_state == WebSocketState.CONNECTED:
                await self._ws.close(protocol.CLOSE_SLOW_CONSUMER, "send queue full: reading too slowly")
        finally:
            for task in (self._writer, reader):
                task.cancel()
            await asyncio.gather(self._writer, reader, return_exceptions=True)
            for channel in tuple(self._channels):
                await self._hub.leave(self, scoped(self._app_id, channel))
            self._channels.clear()

    async def _write_forever(self) -> None:
        while True:
            frame = await self._queue.get()
            await self._ws.send_text(frame)

    async def _read_forever(self) -> None:
        while True:
            event = await self._ws.receive()
            if event["type"] == "websocket.disconnect":
                return
            text = event.get("text")
            if text is None:
                self.push(protocol.error_frame("frames must be JSON text", 400))
                continue
            await self._handle(text)

    async def _handle(self, text: str) -> None:
        try:
            request = json.loads(text)
        except ValueError:
            self.push(protocol.error_frame("frame is not valid JSON", 400))
            return
        if not isinstance(request, dict):
            self.push(protocol.error_frame("frame must be a JSON object", 400))
            return
        request_id: Any = request.get("id")
        op = request.get("op")
        if op == "ping":
            self.push(protocol.reply_frame("pong", request_id))
        elif op in ("join", "leave"):
            channel = request.get("channel")
            problem = protocol.channel_problem(channel)
            if problem is not None:
                self.push(protocol.error_frame(problem, 400, request_id))
            elif channel.startswith(protocol.PRIVATE_PREFIX):
                self.push(protocol.error_frame("tab| channels are private to their connection", 403, request_id))
            elif op == "join":
                await self._join(channel)
                self.push(protocol.reply_frame("joined", request_id, channel=channel))
            else:
                await self._leave(channel)
                self.push(protocol.reply_frame("left", request_id, channel=channel))
        else:
            self.push(protocol.error_frame(f"unknown op {op!r}; expected join, leave or ping", 400, request_id))

    async def _join(self, channel: str) -> None:
        if channel not in self._channels:
            self._channels.add(channel)
            await self._hub.join(self, scoped(self._app_id, channel))

    async def _leave(self, channel: str) -> None:
        if channel in self._channels:
            self._channels.discard(channel)
            await self._hub.leave(self, scoped(self._app_id, channel))
