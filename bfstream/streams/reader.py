"""A stream read back by its id: its events from its log (``hub.read_log``), or from its record once
the log has expired, and a wait for the next ones. ``GET /stream/{id}/events`` serves what this
reads, in either of its encodings (``api/stream_events.py``).

Positions are seqs: ``after`` is the seq of the last event the reader has, -1 for none. The first
event read may be a ``snapshot`` standing for every seq up to its own (``docs/streams.md``).

Waiting goes the one way every message goes: the reader joins the stream's home channel through
the hub as a listener, and a publication of this stream there wakes it. It then reads the log
again, so an event is never lost between a read and a wake-up, and never read twice: the log, not
the publication, is what it hands on.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bfstream.errors import BrokerError, NotFound, ValidationFailed
from bfstream.fleet.connection_limits import ConnectionLimits
from bfstream.messaging.broker import Publication
from bfstream.messaging.hub import Hub, scoped
from bfstream.messaging.streamlog import ending_of, event_of
from bfstream.store.records import StreamRecord
from bfstream.store.store import Store

# A wake-up that never comes (a broker that lost a publication while it reconnected) costs at most
# this long: the reader looks at the log again anyway.
RECHECK_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Chunk:
    """What one read found after the asked-for seq."""

    events: list[dict[str, Any]]  # each with its ``seq``, above the asked-for one, in seq order
    tail: int  # the seq the stream's next event gets: one past the last event there is
    closed: bool  # the stream's ``end`` is among the events there are: nothing more will come


class BeyondEnd(ValidationFailed):
    """An offset past the stream's last event: no server ever gave it out."""


class _Waker:
    """The reader's listener on the home channel: anything of its stream there sets ``woken``."""

    user = None  # an anonymous listener, as far as the channel's presence listings go

    def __init__(self, stream_id: str) -> None:
        # Every stream event is published as compact JSON with this member (messaging/protocol.py),
        # and a stream id is hex: one substring test per publication, no parsing.
        self._needle = f'"streamId":"{stream_id}"'
        self.woken = asyncio.Event()

    def deliver(self, channel: str, publication: Publication, frame: str) -> None:
        if self._needle in publication.data:
            self.woken.set()

    async def leave(self, channel: str, request_id: Any = None) -> None:
        """Asked when the channel becomes one for its added users only. The stream id, not the
        channel, is what lets this reader read, so it stays."""


class StreamReader:
    """``connections`` and ``address``: a reader that waits for events holds a connection of the
    app's and of the client's address while it waits, as a page's WebSocket or SSE connection
    does, so stream ids in many hands cannot hold more open than the limits allow."""

    def __init__(
        self,
        hub: Hub,
        store: Store,
        record: StreamRecord,
        connections: ConnectionLimits | None = None,
        address: str | None = None,
    ) -> None:
        self._hub = hub
        self._store = store
        self._connections = connections
        self._address = address
        self.record = record
        self.stream_id = record.id
        self.home = scoped(record.app_id, record.channels[0])

    @contextlib.asynccontextmanager
    async def following(self) -> AsyncIterator[asyncio.Event]:
        """Listen to the home channel for as long as the block runs; yields the event a publication
        of this stream sets. Joined before the block's first read, so nothing published after that
        read goes unnoticed."""
        waker = _Waker(self.stream_id)
        held = secrets.token_urlsafe(12)
        if self._connections is not None:
            await self._connections.acquire(held, self.record.app_id, self._address)  # 429 when full
        try:
            await self._hub.join(waker, self.home)
            try:
                yield waker.woken
            finally:
                with contextlib.suppress(BrokerError):  # the hub counted it; the next join subscribes again
                    await self._hub.leave(waker, self.home)
        finally:
            if self._connections is not None:
                await self._connections.release(held)

    async def read(self, after: int) -> Chunk:
        """Every event after seq ``after``. Raises ``BeyondEnd`` for a position past the last event."""
        # From ``after`` itself: the event there tells whether the reader stands at a closed stream's end.
        entries = await self._hub.read_log(self.stream_id, self.home, after - 1 if after >= 0 else -1)
        events = [event for _, data in entries if (event := event_of(data)) is not None]
        if not events:
            events = await self._from_record(after)
        elif events[-1]["type"] != "end" and self.record.status != "running":
            events += self._unlogged_ending(events[-1])
        if not events:
            if after >= 0:
                raise BeyondEnd(
                    "The offset is past the end of the stream",
                    details=[{"field": "offset", "message": "past the stream's last event"}],
                )
            return Chunk([], 0, False)
        last = events[-1]
        return Chunk([e for e in events if e["seq"] > after], last["seq"] + 1, last["type"] == "end")

    async def wait(self, after: int, woken: asyncio.Event, seconds: float) -> Chunk:
        """The next events after ``after``, waiting up to ``seconds`` for some (inside ``following``);
        the chunk is empty when none came in time."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            woken.clear()  # before the read: a publication landing during it wakes the next wait
            chunk = await self.read(after)
            left = deadline - asyncio.get_running_loop().time()
            if chunk.events or chunk.closed or left <= 0:
                return chunk
            try:
                async with asyncio.timeout(min(left, RECHECK_SECONDS)):
                    await woken.wait()
            except TimeoutError:  # quiet a while: the record may say it ended without a logged end
                self.record = await self._store.stream_by_id(self.stream_id) or self.record

    def _unlogged_ending(self, last: dict[str, Any]) -> list[dict[str, Any]]:
        """The record says the stream is over, yet its log has no ``end``: the owner could not
        publish it before it stopped (a shutdown with the broker away). Nothing else will come, so
        the record's ending closes the stream here, right after the logged events."""
        closing = [e for e in ending_of(self.record) if e["type"] in ("error", "end")]
        if last["type"] == "error":  # logged already: only the end is missing
            closing = closing[-1:]
        return [{**event, "seq": last["seq"] + 1 + i} for i, event in enumerate(closing)]

    async def _from_record(self, after: int) -> list[dict[str, Any]]:
        """No log: the stream has not published yet, or it ended long enough ago for its log to
        expire. Then its record, read again, stands in for the log with what it kept."""
        record = await self._store.stream_by_id(self.stream_id)
        if record is None:
            raise NotFound(f"No stream {self.stream_id[:80]!r}")
        self.record = record
        if record.status == "running":
            return []
        return [e for e in ending_of(record) if e["seq"] >= after]
