"""Local fan-out: which connections of this process listen to which channel.

Every message goes through the broker, even in one process, so there is one delivery path: the
hub subscribes the broker to a channel when its first local listener joins, reads what the broker
delivers from one task, encodes each frame once and hands it to every local listener's queue.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from bfstream.messaging.broker import Broker
from bfstream.messaging.protocol import message_frame

log = logging.getLogger("bfstream.hub")


class Listener(Protocol):
    def push(self, frame: str) -> None:
        """Queue a frame without waiting; a listener that cannot keep up drops itself."""


def scoped(app_id: str, channel: str) -> str:
    """Channels belong to their app: app A's ``room1`` and app B's ``room1`` are different channels."""
    return f"{app_id}/{channel}"


class Hub:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._listeners: dict[str, set[Listener]] = {}
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._broker.connect()
        self._pump = asyncio.create_task(self._deliver_forever(), name="bfstream-hub")

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        await self._broker.disconnect()

    async def join(self, listener: Listener, channel: str) -> None:
        """Returns once messages published to ``channel`` will reach ``listener``."""
        listeners = self._listeners.get(channel)
        if listeners is None:
            listeners = self._listeners[channel] = set()
            await self._broker.subscribe(channel)
        listeners.add(listener)

    async def leave(self, listener: Listener, channel: str) -> None:
        listeners = self._listeners.get(channel)
        if listeners is None:
            return
        listeners.discard(listener)
        if not listeners:
            del self._listeners[channel]
            await self._broker.unsubscribe(channel)

    async def publish(self, channel: str, message_json: str) -> None:
        await self._broker.publish(channel, message_json)

    async def _deliver_forever(self) -> None:
        while True:
            channel, message_json = await self._broker.next_published()
            listeners = self._listeners.get(channel)
            if not listeners:
                continue
            frame = message_frame(channel.partition("/")[2], message_json)
            for listener in tuple(listeners):
                try:
                    listener.push(frame)
                except Exception:  # one broken listener must not stop delivery to the rest
                    log.exception("dropping a frame for a failing listener")
