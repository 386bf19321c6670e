"""The streams running in this process: admission (per-app limit, draining), stop, and shutdown.

A stream's task is cancelled to stop it, which closes the provider connection at once (the
provider then stops generating, and billing); the runner tells a stop from a shutdown by the
``stop_requested`` flag. A cancellation can be lost on its way: on Python 3.11,
``asyncio.wait_for`` (which redis-py uses for every write to Redis) returns the inner result when
the cancellation lands as that result arrives, and the task runs on as if never cancelled. So a
stop cancels again until the stream has taken it, and answers that it stopped only once it did.

The per-app limit is counted by the leases (``fleet/leases.py``), for the whole fleet when it shares a
broker: a call takes a slot when admitted and its stream keeps it until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from bfstream.config import StreamSettings
from bfstream.errors import BfstreamError, ShuttingDown, TooManyRequests
from bfstream.fleet.leases import Leases
from bfstream.store.records import StreamRecord

log = logging.getLogger("bfstream.streams")

STOP_WAIT = 5.0  # seconds a stop waits for the stream's end to go out before answering
_ENDING_AT_SHUTDOWN = 3.0  # seconds the streams get to send their ending once the drain is over
_CANCEL_AGAIN_AFTER = 0.05  # seconds: a cancellation not taken by then was lost


@dataclass(eq=False)
class RunningStream:
    record: StreamRecord
    text: list[str] = field(default_factory=list)  # the answer so far, for live status
    stop_requested: bool = False
    stopped: bool = False  # the stop was taken: its end says ``stopped``
    ending: bool = False  # past its last event: sending its end and writing its record, not to be cancelled
    task: asyncio.Task[None] | None = None
    slot: str = ""  # its slot in the app's limit
    admitted_at: float = 0.0  # time.monotonic() when its call was admitted, for the time to first token
    # Frontend tool calls waiting for a page's answer, by toolCallId (``tools.py``).
    answers: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    # For the saver (``saver.py``): what numbers its events (whose ``seq`` is the next one's),
    # whether the text is kept, how much of it is saved, and whether another instance ended the
    # stream meanwhile.
    publisher: Any = None
    retain_text: bool = True
    saved_pieces: int = 0
    saved_at: float = field(default_factory=time.monotonic)  # the last save that found it still its own
    fenced: bool = False


@dataclass(eq=False)
class Admission:
    app_id: str
    slot: str
    kept: bool = False  # the slot went on to a running stream
    at: float = field(default_factory=time.monotonic)


class StreamRegistry:
    def __init__(self, settings: StreamSettings, leases: Leases) -> None:
        self._settings = settings
        self._leases = leases
        self._running: dict[str, RunningStream] = {}
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

    def start(self, stream: RunningStream, work: Coroutine[Any, Any, None], admission: Admission) -> None:
        stream_id = stream.record.id
        admission.kept, stream.slot, stream.admitted_at = True, admission.slot, admission.at
        stream.task = asyncio.create_task(work, name=f"stream-{stream_id}")
        self._running[stream_id] = stream

        def ended(_: asyncio.Task[None]) -> None:
            self._running.pop(stream_id, None)
            release = asyncio.ensure_future(self._release(stream.record.app_id, stream.slot))
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
        return held + [(s.record.app_id, s.slot) for s in self._running.values()]

    def __len__(self) -> int:
        return len(self._running)

    def running(self) -> list[RunningStream]:
        return list(self._running.values())

    def get(self, stream_id: str) -> RunningStream | None:
        return self._running.get(stream_id)

    async def stop(self, stream_id: str) -> bool:
        """Stop a running stream. True once it has ended as ``stopped`` (its ``end`` went out, or is
        held until the broker takes it: after ``STOP_WAIT`` seconds the answer does not wait for
        that); False when there was nothing to stop: no such stream here, or one that ended, or
        began ending, by itself first."""
        stream = self._running.get(stream_id)
        if stream is None or stream.task is None:
            return False
        task = stream.task
        if stream.ending:  # it ended, or began its ending, by itself: nothing is left to stop
            return False
        stream.stop_requested = True
        while not stream.ending and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=_CANCEL_AGAIN_AFTER)
        if stream.stopped:
            await asyncio.wait({task}, timeout=STOP_WAIT)
        return stream.stopped

    async def drain(self, seconds: float) -> None:
        """Take no new streams, give running ones (and calls still opening or running ``stream: false``)
        ``seconds`` to finish, then end the streams still running."""
        self.accepting = False
        tasks = [s.task for s in self._running.values() if s.task is not None] + list(self._opening)
        if tasks and seconds > 0:
            await asyncio.wait(tasks, timeout=seconds)
        remaining = [s.task for s in self._running.values() if s.task is not None]
        for stream in self._running.values():
            if not stream.ending:
                stream.task.cancel()  # type: ignore[union-attr]
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
