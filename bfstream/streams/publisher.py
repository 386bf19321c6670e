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
from bfstream.messaging.broker import Fenced, Stamp
from bfstream.messaging.hub import Hub, scoped
from bfstream.messaging.protocol import stream_event
from bfstream.messaging.streamlog import TERMINAL, action_of, event_data, event_of, fold
from bfstream.providers.events import ToolCall
from bfstream.store.records import StreamRecord
from bfstream.store.store import Store
from bfstream.text import repair

log = logging.getLogger("bfstream.streams")

SHUTDOWN_PATIENCE = 0.0  # seconds a stream ending during a shutdown waits for the broker or the database
_RETRY_ENDING_EVERY = 0.5


def announced(call: ToolCall, with_arguments: bool) -> dict[str, Any]:
    """A call as ``function_call`` tells the channels of it. The contract lets a tool's arguments
    carry a line for the user while the tool runs (``userMessage``); the arguments themselves go
    only ``with_arguments`` (a page's own ui_* tool, or an app that made its tools' public): the
    back end processes a backend tool's arguments, which must not reach every browser."""
    try:
        parsed = json.loads(call.arguments)
    except ValueError:
        parsed = None
    user_message = parsed.get("userMessage") if isinstance(parsed, dict) else None
    told = {"id": call.id and repair(call.id), "name": repair(call.name)}
    if with_arguments:
        told["arguments"] = repair(call.arguments)
    return {**told, "userMessage": repair(user_message) if isinstance(user_message, str) else None}


def ender_fence(stream_id: str) -> str:
    """The fence of whoever ends a stream for its dead owner: its repeats are dropped too."""
    return f"{stream_id}.ended"


class Publisher:
    """A stream's events as channel messages, numbered from ``record.seq`` on. The owner publishes
    behind the stream's fence (see ``messaging/broker.py``), its id; whoever ends it for a dead
    owner raises that fence and publishes behind a fence of its own, ``ender_fence``.

    The broker logs each event with its publish on the stream's home channel (its first). The
    owner keeps its log within ``log_bytes``: past it, everything logged so far is folded into one
    snapshot (``messaging/streamlog.py``), read back from the log, so the log never loses a prefix
    and the stream keeps no second copy of its events."""

    def __init__(self, hub: Hub, record: StreamRecord, fence: str | None = None, log_bytes: int = 0) -> None:
        self._hub = hub
        self._fence = fence or record.id
        self._stream_id = record.id
        self._action_name = record.action_name
        self._channels = [scoped(record.app_id, c) for c in dict.fromkeys(record.channels)]
        self.home = self._channels[0]
        self._stamp = Stamp(self._stream_id, self.home, self._fence)
        self._log_bytes = log_bytes  # 0: never folded (an ender only adds its two events)
        self._fold_at = log_bytes
        self.logged = 0  # characters of the data logged since the last fold, the snapshot included
        self.seq = record.seq
        # The event whose publish failed: it may or may not have landed, so it goes out again in its
        # place, first in the ending (the broker drops it where it did land: a repeat of its seq).
        self.unsent: dict[str, Any] | None = None

    async def emit(self, type_: str, **fields: Any) -> None:
        """The number moves on only once every channel has the event: sent again after a failure,
        it keeps its ``seq``, and the owner's fence drops it where it had landed already."""
        message = stream_event(self._action_name, type_, self._stream_id, self.seq, **fields)
        if type_ in TERMINAL and self._log_bytes and self.logged + len(message) > self._fold_at:
            await self._fold()  # never folded itself, the end (it holds the whole text) needs the room
        try:
            for channel in self._channels:
                await self._hub.publish_stamped(channel, message, self._stamp, self.seq)
        except BaseException:  # kept only then: nothing more per event on the way of every chunk
            self.unsent = {"type_": type_, **fields}
            raise
        self.seq += 1
        self.logged += len(message)
        # Never right after a tool call: a page that joins while it awaits an answer must get the call.
        if self._log_bytes and self.logged > self._fold_at and type_ not in TERMINAL and type_ != "tool_call":
            await self._fold()

    async def _fold(self) -> None:
        """Everything logged so far but an ``error`` becomes one snapshot. A log holds at least the
        answer's text: the next fold waits until what came after the snapshot is as big as the bound
        allows, or as the snapshot itself, so an answer longer than the bound is not rewritten at
        every event."""
        try:
            entries = await self._hub.read_log(self._stream_id, self.home)
            events = [(event, len(data)) for _, data in entries if (event := event_of(data)) is not None]
            kept = [size for event, size in events if event["type"] in TERMINAL]
            folded = [event for event, _ in events if event["type"] not in TERMINAL]
            if not folded:
                return
            data = event_data(action_of(entries[0][1]), fold(folded))
            await self._hub.fold_log(self._stream_id, self.home, folded[-1]["seq"], data)
        except BrokerError as exc:  # the next event tries again: the log is only bigger meanwhile
            log.warning("could not fold the log of stream %s: %s", self._stream_id, exc.message)
            return
        self.logged = len(data) + sum(kept)
        self._fold_at = max(self._log_bytes, 2 * len(data))

    async def raise_fence(self) -> None:
        for channel in self._channels:
            await self._hub.broker.raise_fence(channel, self._stream_id)


async def send_ending(
    out: Publisher, store: Store, record: StreamRecord, events: list[dict[str, Any]], patience: float | None
) -> bool:
    """Send the closing events, waiting for an unreachable broker to come back however long it takes
    (``patience`` None; a number of seconds while shutting down): every stream ends with ``end``,
    after the event that could not go out, if one could not. Gives up early if another instance,
    taking this one for dead meanwhile, has already ended the stream on the channels (its record is
    no longer running)."""
    deadline = None if patience is None else time.monotonic() + patience
    if out.unsent is not None:
        events, out.unsent = [out.unsent, *events], None
    for event in events:
        while True:
            try:
                await out.emit(**event)
                break
            except Fenced:
                return False  # another instance ended the stream on the channels already
            except BrokerError as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    log.warning("stream %s could not send its end: %s", record.id, exc.message)
                    return False
            await asyncio.sleep(_RETRY_ENDING_EVERY)
            if not await still_running(store, record):
                return False
    return True


async def record_end(store: Store, record: StreamRecord, patience: float | None) -> bool:
    """Write the final record, waiting for an unreachable database however long it takes
    (``patience`` None), or that many seconds while shutting down. True when this wrote it: False
    when another instance had ended the stream already, or the record could not be written."""
    deadline = None if patience is None else time.monotonic() + patience
    while True:
        try:
            return await store.record_stream_end(record)
        except StoreError:
            # Given up while shutting down: it stays running, and is swept once this instance stops.
            if deadline is not None and time.monotonic() >= deadline:
                log.warning("stream %s ended, but its record could not be written", record.id)
                return False
        await asyncio.sleep(_RETRY_ENDING_EVERY)


async def still_running(store: Store, record: StreamRecord) -> bool:
    """False once another instance has ended the stream for this one. Not knowing (the database is
    down) counts as running: only a definite answer stops a stream."""
    try:
        current = await store.stream_by_id(record.id)
    except StoreError:
        return True
    return current is None or current.status == "running"
