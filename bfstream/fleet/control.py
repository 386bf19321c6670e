"""Requests between instances: stop a stream another instance runs, read its live status, apply a
change to connections held elsewhere. They travel over the broker's control messages, addressed
by instance id (python-socketio's managers and centrifuge's ``PublishControl`` do the same).

A request is a JSON object with ``op``; ``call`` also sends ``from`` and ``rid`` and waits for the
reply ``{"rid", "reply"}``. Callers act on what this instance holds themselves, before asking
others. An instance that does not answer within the timeout is taken to be gone: ``call`` gives None.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from bfstream.errors import BrokerError
from bfstream.messaging.broker import Broker
from bfstream.messaging.protocol import dumps

log = logging.getLogger("bfstream.control")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class Control:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self.instance_id = broker.instance_id
        self._handlers: dict[str, Handler] = {}
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._pump: asyncio.Task[None] | None = None
        self.broker_errors = 0  # requests and replies the broker failed to send, for /metrics

    def on(self, op: str, handler: Handler) -> None:
        """``handler(request)`` answers requests with this ``op``; what it returns is the reply."""
        self._handlers[op] = handler

    async def start(self) -> None:
        self._pump = asyncio.create_task(self._receive_forever(), name="bfstream-control")

    async def stop(self) -> None:
        tasks = [t for t in (self._pump, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def call(self, instance_id: str, request: dict[str, Any], wait: float = 2.0) -> Any:
        rid = secrets.token_hex(8)
        reply = self._waiting[rid] = asyncio.get_running_loop().create_future()
        try:
            await self._send(instance_id, dumps({**request, "from": self.instance_id, "rid": rid}))
            async with asyncio.timeout(wait):  # not wait_for, which can swallow a cancellation on 3.11
                return await reply
        except TimeoutError:
            return None
        finally:
            del self._waiting[rid]

    async def tell(self, instance_id: str, request: dict[str, Any]) -> None:
        """Send without waiting; ``"*"`` reaches every instance, this one too, through the broker."""
        await self._send(instance_id, dumps(request))

    async def _send(self, instance_id: str, data: str) -> None:
        try:
            await self._broker.control(instance_id, data)
        except BrokerError:
            self.broker_errors += 1
            raise

    async def _receive_forever(self) -> None:
        while True:
            data = await self._broker.next_control()
            try:
                message = json.loads(data)
            except ValueError:
                log.warning("dropping an unreadable control message")
                continue
            if "reply" in message:
                waiting = self._waiting.get(message.get("rid"))
                if waiting is not None and not waiting.done():
                    waiting.set_result(message["reply"])
                continue
            # Each request on its own task: a slow one (a stop waits for the stream's end) must not
            # hold up the others.
            task = asyncio.create_task(self._answer(message))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _answer(self, message: dict[str, Any]) -> None:
        handler = self._handlers.get(message.get("op"))  # type: ignore[arg-type]
        if handler is None:
            log.warning("no handler for control op %r", message.get("op"))
            return
        try:
            reply = await handler(message)
            if "rid" in message and "from" in message:
                await self._send(message["from"], dumps({"rid": message["rid"], "reply": reply}))
        except Exception:
            log.exception("control request %r failed", message.get("op"))
