"""Merging deltas (of the answer, or of its reasoning) that arrive close together, for pages that
cannot render hundreds of messages a second. Off unless a service or a request sets a window.

The provider is read by a pump task into a queue, so a merged delta goes out when its window
closes even if the provider is silent after it; cancelling the pump closes the provider stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from bfstream.providers.events import Delta, ProviderEvent, Reasoning

_END = object()


async def coalesce(events: AsyncGenerator[ProviderEvent, None], window: float) -> AsyncGenerator[ProviderEvent, None]:
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for event in events:
                queue.put_nowait(event)
            queue.put_nowait(_END)
        except Exception as exc:  # handed to the reader, which raises it in order
            queue.put_nowait(exc)
        finally:
            await events.aclose()

    task = asyncio.create_task(pump())
    try:
        pending: list[str] = []
        merging: type[Delta] | type[Reasoning] = Delta  # what the pending pieces are
        deadline = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout_at(deadline if pending else None):
                    item = await queue.get()
            except TimeoutError:
                yield merging("".join(pending))
                pending = []
                continue
            mergeable = isinstance(item, Delta) or (isinstance(item, Reasoning) and not item.redacted)
            if pending and (not mergeable or type(item) is not merging):
                yield merging("".join(pending))
                pending = []
            if mergeable:
                if not pending:
                    deadline, merging = loop.time() + window, type(item)
                pending.append(item.text)  # type: ignore[union-attr]
                continue
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            yield item  # type: ignore[misc]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
