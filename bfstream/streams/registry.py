"""The streams running in this process: admission (per-app limit, draining), stop, and shutdown.

A stream's task is cancelled to stop it, which closes the provider connection at once (the
provider then stops generating, and billing); the runner tells a stop from a shutdown by the
``stop_requested`` flag.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bfstream.config import StreamSettings
from bfstream.errors import ShuttingDown, TooManyRequests
from bfstream.store.records import StreamRecord


@dataclass(eq=False)
class RunningStream:
    record: StreamRecord
    text: list[str] = field(default_factory=list)  # the answer so far, for live status
    stop_requested: bool = False
    task: asyncio.Task[None] | None = None


class StreamRegistry:
    def __init__(self, settings: StreamSettings) -> None:
        self._settings = settings
        self._running: dict[str, RunningStream] = {}
        self._opening: dict[asyncio.Task[Any], str] = {}  # the request tasks holding a slot, by app
        self.accepting = True

    @contextmanager
    def admitted(self, app_id: str) -> Iterator[None]:
        """Hold one of the app's slots while a call opens its stream (or, for ``stream: false``, runs).

        Raises unless the app may start one more now. Calls still waiting for the provider's
        headers, or between retries, count as much as running streams: counting only the running
        ones would let a burst of simultaneous requests through the limit."""
        if not self.accepting:
            raise ShuttingDown("The server is shutting down; retry on another instance or in a moment")
        busy = sum(1 for s in self._running.values() if s.record.app_id == app_id)
        busy += sum(1 for owner in self._opening.values() if owner == app_id)
        if busy >= self._settings.max_per_app:
            raise TooManyRequests(f"At most {self._settings.max_per_app} streams may run at once per app")
        task = asyncio.current_task()
        assert task is not None
        self._opening[task] = app_id
        try:
            yield
        finally:
            del self._opening[task]

    def start(self, stream: RunningStream, work: Coroutine[Any, Any, None]) -> None:
        stream_id = stream.record.id
        stream.task = asyncio.create_task(work, name=f"stream-{stream_id}")
        self._running[stream_id] = stream
        stream.task.add_done_callback(lambda _: self._running.pop(stream_id, None))

    def __len__(self) -> int:
        return len(self._running)

    def get(self, stream_id: str) -> RunningStream | None:
        return self._running.get(stream_id)

    async def stop(self, stream_id: str) -> bool:
        """Stop a running stream; returns once its ``end`` went out (or after a second at most)."""
        stream = self._running.get(stream_id)
        if stream is None or stream.task is None:
            return False
        stream.stop_requested = True
        stream.task.cancel()
        await asyncio.wait({stream.task}, timeout=1.0)
        return True

    async def drain(self, seconds: float) -> None:
        """Take no new streams, give running ones (and calls still opening or running ``stream: false``)
        ``seconds`` to finish, then end the streams still running."""
        self.accepting = False
        tasks = [s.task for s in self._running.values() if s.task is not None] + list(self._opening)
        if tasks and seconds > 0:
            await asyncio.wait(tasks, timeout=seconds)
        remaining = [s.task for s in self._running.values() if s.task is not None]
        for task in remaining:
            task.cancel()
        await asyncio.gather(*remaining, return_exceptions=True)
