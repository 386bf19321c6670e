"""The streams running in this process: admission (per-app limit, draining), finding one by id,
and shutdown. A stream stops itself when asked (``Stream.stop``); the registry only finds it.

The per-app limit is counted by the leases (``fleet/leases.py``), for the whole fleet when it shares a
broker: a call takes a slot when admitted and its stream keeps it until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bfstream.config import StreamSettings
from bfstream.errors import BfstreamError, ShuttingDown, TooManyRequests
from bfstream.fleet.leases import Leases

if TYPE_CHECKING:
    from bfstream.streams.stream import Stream

log = logging.getLogger("bfstream.streams")

_ENDING_AT_SHUTDOWN = 3.0  # seconds the streams get to send their ending once the drain is over


@dataclass(eq=False)
class Admission:
    app_id: str
    slot: str
    kept: bool = False  # the slot went on to a running stream
    at: float = field(default_factory=time.monotonic)  # for the time to first token


class StreamRegistry:
    def __init__(self, settings: StreamSettings, leases: Leases) -> None:
        self._settings = settings
        self._leases = leases
        self._running: dict[str, Stream] = {}
        self._opening: dict[asyncio.Task[Any], Admission] = {}  # the request tasks holding a slot
        self._releasing: set[asyncio.Task[None]] = set()
        self.accepting = True

    @asynccontextmanager
    async def admitted(self, app_id: str) -> AsyncIterator[Admission]:
        """Hold one of the app's slots while a call opens its stream (or, for ``stream: false``, runs).

        Raises unless the app may start one more now. Calls still waiting for the provider's
        headers, or between retries, count as much as running streams: counting only the running
        ones would let a burst of simultaneous requests through the limit."""
        if not self.accepting:
            raise ShuttingDown("The server is shutting down; retry on another instance or in a moment")
        admission = Admission(app_id, secrets.token_hex(8))
        if not await self._leases.acquire(app_id, admission.slot, self._settings.max_per_app):
            raise TooManyRequests(f"At most {self._settings.max_per_app} streams may run at once per app")
        task = asyncio.current_task()
        assert task is not None
        self._opening[task] = admission
        try:
            yield admission
        finally:
            del self._opening[task]
            if not admission.kept:
                await self._release(app_id, admission.slot)

    def add(self, stream: Stream) -> None:
        """A stream whose task has just started: found here, and holding its slot, until it ends."""
        stream_id, admission = stream.record.id, stream.admission
        admission.kept = True
        self._running[stream_id] = stream

        def ended(_: asyncio.Task[None]) -> None:
            self._running.pop(stream_id, None)
            release = asyncio.ensure_future(self._release(admission.app_id, admission.slot))
            self._releasing.add(release)
            release.add_done_callback(self._releasing.discard)

        stream.task.add_done_callback(ended)

    async def _release(self, app_id: str, slot: str) -> None:
        try:
            await self._leases.release(app_id, slot)
        except BfstreamError as exc:  # not renewed any more, the slot lapses by itself
            log.warning("could not release a stream slot now (%s); it lapses by itself", exc.message)

    def held_slots(self) -> list[tuple[str, str]]:
        """Every ``(app_id, slot)`` this instance holds, for the lease renewal."""
        held = [(a.app_id, a.slot) for a in self._opening.values() if not a.kept]
        return held + [(s.admission.app_id, s.admission.slot) for s in self._running.values()]

    def __len__(self) -> int:
        return len(self._running)

    def running(self) -> list[Stream]:
        return list(self._running.values())

    def get(self, stream_id: str) -> Stream | None:
        return self._running.get(stream_id)

    async def stop(self, stream_id: str) -> bool:
        """Stop a running stream (``Stream.stop``); False when there is no such stream here."""
        stream = self._running.get(stream_id)
        return stream is not None and await stream.stop()

    async def drain(self, seconds: float) -> None:
        """Take no new streams, give running ones (and calls still opening or running ``stream: false``)
        ``seconds`` to finish, then end the streams still running."""
        self.accepting = False
        tasks = [s.task for s in self._running.values()] + list(self._opening)
        if tasks and seconds > 0:
            await asyncio.wait(tasks, timeout=seconds)
        remaining = [s.task for s in self._running.values()]
        for stream in self._running.values():
            if not stream.ending:
                stream.task.cancel()
        # Those cancelled just now try their ending once. Those that were already ending wait for an
        # unreachable broker or database however long it takes: cut short, their records stay
        # running and the fleet ends them (``orphans.py``), here or on the next start.
        if remaining:
            _, waiting = await asyncio.wait(remaining, timeout=_ENDING_AT_SHUTDOWN)
            for task in waiting:
                task.cancel()
            await asyncio.gather(*remaining, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._releasing)
