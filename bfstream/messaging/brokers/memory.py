"""The embedded broker: one process, no network, the default.

History lives in process memory, so a restart loses it; every channel then starts over with a
new epoch and clients resuming from before the restart are told they could not recover.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from bfstream.messaging.broker import BROADCAST, Fenced, History, Publication, Stamp

_SEQS_KEPT = 10_000  # streams per channel whose last seq is remembered, and that its index names


@dataclass(slots=True)
class _Channel:
    epoch: str = field(default_factory=lambda: secrets.token_urlsafe(6))
    offset: int = 0
    retained: deque[tuple[float, Publication, int]] = field(default_factory=deque)  # (at, publication, size)
    retained_bytes: int = 0  # bounded by history_bytes, as the deque's length is by history_size
    fences: set[str] = field(default_factory=set)  # forgotten with the channel
    last_seq: dict[str, int] = field(default_factory=dict)  # fence -> the highest seq it published; so too
    # stream -> [offset of its latest event here, its home, when], updated in place by each event.
    streams: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(slots=True)
class _Log:
    entries: list[tuple[int, str]] = field(default_factory=list)  # (seq, data), in seq order
    expires: float = 0.0


class MemoryBroker:
    """Alone in its process, so control messages only ever reach this instance."""

    up = True

    def __init__(
        self,
        history_size: int = 1000,
        history_ttl: float = 600.0,
        instance_id: str = "local",
        history_bytes: int = 1024 * 1024,
        log_ttl: float = 3600.0,
    ) -> None:
        self.instance_id = instance_id
        self._log_ttl = log_ttl
        self._logs: dict[str, _Log] = {}
        self._history_size = history_size
        self._history_bytes = history_bytes
        self._history_ttl = history_ttl
        self._channels: dict[str, _Channel] = {}
        self._subscribed: set[str] = set()
        self._published: asyncio.Queue[Publication] = asyncio.Queue()
        self._control: asyncio.Queue[str] = asyncio.Queue()
        self._sweeper: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def disconnect(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self._subscribed.clear()

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    async def publish(self, channel: str, data: str, stamp: Stamp | None = None, seq: int = 0) -> Publication | None:
        state = self._channel(channel)
        now = time.monotonic()
        if stamp is not None:
            fence = stamp.fence
            if fence in state.fences:
                raise Fenced(fence)
            if seq <= state.last_seq.get(fence, -1):
                return None
            state.last_seq[fence] = seq
            if len(state.last_seq) > _SEQS_KEPT:  # one process loses no reply: only a bound matters
                del state.last_seq[next(iter(state.last_seq))]
            if channel == stamp.home:
                log = self._logs.get(stamp.stream)
                if log is None:
                    log = self._logs[stamp.stream] = _Log()
                log.entries.append((seq, data))
                log.expires = now + self._log_ttl
        state.offset += 1
        publication = Publication(channel, state.offset, state.epoch, data)
        if stamp is not None:
            indexed = state.streams.get(stamp.stream)
            if indexed is None:
                if len(state.streams) >= _SEQS_KEPT:
                    del state.streams[min(state.streams, key=lambda stream: state.streams[stream][0])]
                indexed = state.streams[stamp.stream] = [0, stamp.home, 0.0]
            indexed[0], indexed[2] = state.offset, now
        size = len(data) if data.isascii() else len(data.encode())
        retained = state.retained
        retained.append((now, publication, size))
        state.retained_bytes += size
        while retained and (len(retained) > self._history_size or state.retained_bytes > self._history_bytes):
            state.retained_bytes -= retained.popleft()[2]
        if channel in self._subscribed:
            self._published.put_nowait(publication)
        return publication

    async def raise_fence(self, channel: str, fence: str) -> None:
        self._channel(channel).fences.add(fence)

    async def next_published(self) -> Publication:
        return await self._published.get()

    async def control(self, target: str, data: str) -> None:
        if target in (self.instance_id, BROADCAST):
            self._control.put_nowait(data)

    async def next_control(self) -> str:
        return await self._control.get()

    async def history(self, channel: str, since: int | None) -> History:
        state = self._channel(channel)
        self._expire(state, time.monotonic())
        if since is None:
            return History([], state.offset, state.epoch, True)
        since = max(since, 0)
        publications = [p for _, p, _ in state.retained if p.offset > since]
        oldest = publications[0].offset if publications else state.offset + 1
        return History(publications, state.offset, state.epoch, oldest <= since + 1)

    async def read_log(self, stream: str, home: str, after: int = -1) -> list[tuple[int, str]]:
        log = self._logs.get(stream)
        if log is None or log.expires <= time.monotonic():
            return []
        entries = log.entries
        return entries[bisect_right(entries, after, key=lambda entry: entry[0]) :]

    async def fold_log(self, stream: str, home: str, seq: int, data: str) -> None:
        log = self._logs.get(stream)
        if log is not None:
            entries = log.entries
            log.entries = [(seq, data), *entries[bisect_right(entries, seq, key=lambda entry: entry[0]) :]]

    async def streams_after(self, channel: str, offset: int) -> list[tuple[str, str]]:
        state = self._channels.get(channel)
        if state is None:
            return []
        cutoff = time.monotonic() - self._history_ttl
        found = [
            (latest, stream, home)
            for stream, (latest, home, at) in state.streams.items()
            if latest > offset and at >= cutoff
        ]
        return [(stream, home) for _, stream, home in sorted(found)]

    def _channel(self, channel: str) -> _Channel:
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel()
        return state

    def _expire(self, state: _Channel, now: float) -> None:
        cutoff = now - self._history_ttl
        while state.retained and state.retained[0][0] < cutoff:
            state.retained_bytes -= state.retained.popleft()[2]

    async def _sweep_forever(self) -> None:
        """Forget channels whose history has all expired and that nobody listens to, and expired
        logs, so memory stays bounded."""
        while True:
            await asyncio.sleep(max(min(self._history_ttl, self._log_ttl) / 10, 1.0))
            now = time.monotonic()
            for name, state in list(self._channels.items()):
                self._expire(state, now)
                cutoff = now - self._history_ttl
                state.streams = {stream: entry for stream, entry in state.streams.items() if entry[2] >= cutoff}
                if not state.retained and not state.streams and name not in self._subscribed:
                    del self._channels[name]
            for stream, log in list(self._logs.items()):
                if log.expires <= now:
                    del self._logs[stream]
