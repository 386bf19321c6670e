"""The streams running in this process, so shutdown can end them and nothing is garbage-collected mid-flight."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class StreamRegistry:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, stream_id: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=f"stream-{stream_id}")
        self._tasks[stream_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(stream_id, None))

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel what still runs; each stream then tells its channels ``error`` and ``end``."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
