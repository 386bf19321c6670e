"""Local fan-out: which sessions of this process listen to which channel.

Every message goes through the broker, even in one process, so there is one delivery path: the
hub subscribes the broker to a channel when its first local listener joins, reads what the broker
delivers from one task, encodes each frame once and hands it to every local listener.

It also keeps the counts /metrics reads (``published``, ``delivered``, ``broker_errors``): plain
integers, one addition per message, however many listeners it reaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Protocol

from bfstream.errors import BrokerError
from bfstream.messaging.broker import Broker, History, Publication, Stamp
from bfstream.messaging.protocol import PRIVATE_PREFIX, message_frame
from bfstream.messaging.tokens import User

log = logging.getLogger("bfstream.hub")


class Listener(Protocol):
    user: User | None  # who listens, for the presence listings

    def deliver(self, channel: str, publication: Publication, frame: str) -> None:
        """Take a frame of ``channel`` (unscoped name) without waiting; a listener that cannot keep
        up drops itself."""

    async def leave(self, channel: str, request_id: Any = None) -> None:
        """Stop listening to ``channel`` (unscoped name) and tell the client so."""


def scoped(app_id: str, channel: str) -> str:
    """Channels belong to their app: app A's ``room1`` and app B's ``room1`` are different channels."""
    return f"{app_id}/{channel}"


def unscoped(channel: str) -> str:
    return channel.partition("/")[2]


class Hub:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._listeners: dict[str, set[Listener]] = {}
        self._subscribing: dict[str, asyncio.Future[None]] = {}
        self._pump: asyncio.Task[None] | None = None
        self.published = 0  # messages this instance published
        self.delivered = 0  # messages handed to this instance's listeners, once per listener
        self.broker_errors = 0  # broker calls made here that failed

    async def start(self) -> None:
        await self._broker.connect()
        self._pump = asyncio.create_task(self._deliver_forever(), name="bfstream-hub")

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        await self._broker.disconnect()

    async def join(self, listener: Listener, channel: str) -> None:
        """Returns once messages published to ``channel`` will reach ``listener``; raises
        ``BrokerError`` if the broker cannot subscribe, leaving nothing behind, so the next join
        tries again."""
        listeners = self._listeners.get(channel)
        if listeners is None:
            # Joins of a channel whose subscription is under way wait for that same subscription.
            subscribing = self._subscribing.get(channel)
            if subscribing is None:
                subscribing = self._subscribing[channel] = asyncio.ensure_future(self._broker.subscribe(channel))
                subscribing.add_done_callback(lambda _: self._subscribing.pop(channel, None))
                subscribing.add_done_callback(self._count_failure)  # once, however many joins wait for it
            await asyncio.shield(subscribing)
            listeners = self._listeners.setdefault(channel, set())
        listeners.add(listener)

    async def leave(self, listener: Listener, channel: str) -> None:
        listeners = self._listeners.get(channel)
        if listeners is None:
            return
        listeners.discard(listener)
        if not listeners:
            del self._listeners[channel]
            try:
                await self._broker.unsubscribe(channel)
            except BrokerError:
                self.broker_errors += 1
                raise

    def _count_failure(self, subscribing: asyncio.Future[None]) -> None:
        if not subscribing.cancelled() and isinstance(subscribing.exception(), BrokerError):
            self.broker_errors += 1

    @property
    def broker(self) -> Broker:
        return self._broker

    async def publish(self, channel: str, message_json: str) -> Publication:
        publication = await self.publish_stamped(channel, message_json, None, 0)
        assert publication is not None  # only a stream's event can be a repeat
        return publication

    async def publish_stamped(
        self, channel: str, message_json: str, stamp: Stamp | None, seq: int
    ) -> Publication | None:
        """A stream's event (``broker.py`` says what its stamp guards against and logs); None for a repeat."""
        try:
            publication = await self._broker.publish(channel, message_json, stamp, seq)
        except BrokerError:
            self.broker_errors += 1
            raise
        if publication is not None:
            self.published += 1
        return publication

    async def history(self, channel: str, since: int | None) -> History:
        with self._counted():
            return await self._broker.history(channel, since)

    async def read_log(self, stream: str, home: str, after: int = -1) -> list[tuple[int, str]]:
        with self._counted():
            return await self._broker.read_log(stream, home, after)

    async def fold_log(self, stream: str, home: str, seq: int, data: str) -> None:
        with self._counted():
            await self._broker.fold_log(stream, home, seq, data)

    async def streams_after(self, channel: str, offset: int) -> list[tuple[str, str]]:
        with self._counted():
            return await self._broker.streams_after(channel, offset)

    @contextlib.contextmanager
    def _counted(self) -> Iterator[None]:
        try:
            yield
        except BrokerError:
            self.broker_errors += 1
            raise

    def local_channels(self) -> tuple[int, int]:
        """How many channels have a listener here, and how many listeners they have together, the
        connections' private ``tab|`` channels left out (every connection has one)."""
        channels = members = 0
        for channel, listeners in self._listeners.items():
            if not unscoped(channel).startswith(PRIVATE_PREFIX):
                channels += 1
                members += len(listeners)
        return channels, members

    def listeners(self, app_id: str) -> Iterator[tuple[str, set[Listener]]]:
        """This process's listeners of each of the app's channels (names unscoped)."""
        prefix = app_id + "/"
        for channel, listeners in self._listeners.items():
            if channel.startswith(prefix):
                yield channel[len(prefix) :], listeners

    async def _deliver_forever(self) -> None:
        while True:
            publication = await self._broker.next_published()
            listeners = self._listeners.get(publication.channel)
            if not listeners:
                continue
            name = unscoped(publication.channel)  # once per message, not once per listener
            frame = message_frame(name, publication)
            self.delivered += len(listeners)
            for listener in tuple(listeners):
                try:
                    listener.deliver(name, publication, frame)
                except Exception:  # one broken listener must not stop delivery to the rest
                    log.exception("dropping a frame for a failing listener")
