"""A stream's events on its channels, and its ending: sent however long the broker is away, and
recorded however long the database is.

Each event becomes a BetterForms message that runs the caller's named action::

    {"actions": [{"action": "namedAction", "name": <actionName>, "options": EVENT}]}

EVENT carries ``type``, ``streamId`` and ``seq`` (0, 1, 2, ... in publish order). ``end`` says
why the stream ended in OpenAI's words: ``stop``, ``length``, ``tool_calls``, ``content_filter``,
or ``stopped`` (POST /stream/stop) and ``error`` (an ``error`` event came first).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from bfstream.errors import BrokerError, StoreError
from bfstream.messaging.broker import Fenced
from bfstream.messaging.hub import Hub, scoped
from bfstream.messaging.protocol import stream_event
from bfstream.providers.events import ToolCall
from bfstream.store.records import StreamRecord
from bfstream.store.store import Store
from bfstream.text import repair

log = logging.getLogger("bfstream.streams")

ENDING_PATIENCE = 30.0  # seconds a stream waits for an unreachable broker to take its end
_RETRY_ENDING_EVERY = 0.5


def announced(call: ToolCall) -> dict[str, Any]:
    """The contract lets a tool's arguments carry a line for the user while the tool runs."""
    try:
        parsed = json.loads(call.arguments)
    except ValueError:
        parsed = None
    user_message = parsed.get("userMessage") if isinstance(parsed, dict) else None
    return {
        "id": call.id and repair(call.id),
        "name": repair(call.name),
        "arguments": repair(call.arguments),
        "userMessage": repair(user_message) if isinstance(user_message, str) else None,
    }


class Publisher:
    """A stream's events as channel messages, numbered from ``record.seq`` on. The owner publishes
    behind the stream's fence (see ``messaging/broker.py``); whoever ends it for a dead owner, not."""

    def __init__(self, hub: Hub, record: StreamRecord, fenced: bool = True) -> None:
        self._hub = hub
        self._fence = record.id if fenced else None
        self._stream_id = record.id
        self._action_name = record.action_name
        self._channels = [scoped(record.app_id, c) for c in dict.fromkeys(record.channels)]
        self.seq = record.seq

    async def emit(self, type_: str, **fields: Any) -> None:
        """The number moves on only once every channel has the event: sent again after a failure,
        it keeps its ``seq``, so a client can tell a repeat from a new event."""
        message = stream_event(self._action_name, type_, self._stream_id, self.seq, **fields)
        for channel in self._channels:
            await self._hub.publish(channel, message, self._fence)
        self.seq += 1

    async def raise_fence(self) -> None:
        for channel in self._channels:
            await self._hub.broker.raise_fence(channel, self._stream_id)


async def send_ending(
    out: Publisher, store: Store, record: StreamRecord, events: list[dict[str, Any]], patience: float
) -> bool:
    """Send the closing events, waiting up to ``patience`` seconds for an unreachable broker to come
    back: every stream ends with ``end``. Gives up early if another instance, taking this one for
    dead meanwhile, has already ended the stream on the channels (its record is no longer running)."""
    deadline = time.monotonic() + patience
    for event in events:
        while True:
            try:
                await out.emit(**event)
                break
            except Fenced:
                return False  # another instance ended the stream on the channels already
            except BrokerError as exc:
                if time.monotonic() >= deadline:
                    log.warning("stream %s could not send its end: %s", record.id, exc.message)
                    return False
            await asyncio.sleep(_RETRY_ENDING_EVERY)
            if not await still_running(store, record):
                return False
    return True


async def record_end(store: Store, record: StreamRecord, patience: float) -> None:
    """Write the final record, waiting up to ``patience`` seconds for an unreachable database."""
    deadline = time.monotonic() + patience
    while True:
        try:
            await store.record_stream_end(record)
            return
        except StoreError:
            if time.monotonic() >= deadline:  # it stays running, and is swept once this instance stops
                log.warning("stream %s ended, but its record could not be written", record.id)
                return
        await asyncio.sleep(_RETRY_ENDING_EVERY)


async def still_running(store: Store, record: StreamRecord) -> bool:
    """False once another instance has ended the stream for this one. Not knowing (the database is
    down) counts as running: only a definite answer stops a stream."""
    try:
        current = await store.stream_by_id(record.id)
    except StoreError:
        return True
    return current is None or current.status == "running"
