"""The embedded broker: one process, no network, the default."""

from __future__ import annotations

import asyncio


class MemoryBroker:
    def __init__(self) -> None:
        self._subscribed: set[str] = set()
        self._published: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def connect(self) -> None:
        pass

    async def disconnect(self) -> None:
        self._subscribed.clear()

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    async def publish(self, channel: str, message: str) -> None:
        if channel in self._subscribed:
            self._published.put_nowait((channel, message))

    async def next_published(self) -> tuple[str, str]:
        return await self._published.get()
