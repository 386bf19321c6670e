"""One stream's life after the provider accepted it: relay every event to the channels, in order,
always finish with exactly one ``end``, and record how it went.

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
from collections.abc import AsyncGenerator
from typing import Any

from bfstream.errors import BfstreamError, BrokerError, ProviderError, StoreError
from bfstream.messaging.broker import Fenced
from bfstream.messaging.hub import Hub, scoped
from bfstream.messaging.protocol import stream_event
from bfstream.metrics import Metrics
from bfstream.providers.events import Delta, Finished, ProviderEvent, ToolCall, ToolCalls
from bfstream.scrub import scrub_json
from bfstream.store.records import StreamRecord
from bfstream.store.store import Store
from bfstream.streams.coalesce import coalesce
from bfstream.streams.registry import RunningStream
from bfstream.text import SurrogateJoiner, repair, repair_json

log = logging.getLogger("bfstream.streams")

_SAVE_EVERY = 1.0  # seconds between saves of a running stream's text
_ENDING_PATIENCE = 30.0  # seconds a stream waits for an unreachable broker to take its end
_RETRY_ENDING_EVERY = 0.5


def _function(call: ToolCall) -> dict[str, Any]:
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


async def _send_ending(
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
            if not await _still_running(store, record):
                return False
    return True


async def _record_end(store: Store, record: StreamRecord, patience: float) -> None:
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


async def _still_running(store: Store, record: StreamRecord) -> bool:
    """False once another instance has ended the stream for this one. Not knowing (the database is
    down) counts as running: only a definite answer stops a stream."""
    try:
        current = await store.stream_by_id(record.id)
    except StoreError:
        return True
    return current is None or current.status == "running"


async def relay(
    hub: Hub,
    store: Store,
    stream: RunningStream,
    events: AsyncGenerator[ProviderEvent, None],
    *,
    retain_text: bool,
    coalesce_ms: float,
    max_duration: float,
    metrics: Metrics,
) -> None:
    """Drain ``events`` (whose ``Started`` was already consumed) into the channels, then close the
    provider stream, send ``error`` (if any) and ``end``, and record the outcome.

    Deltas are counted in a local and added to the metrics with each save and at the end: one
    addition a second rather than one per delta."""
    record = stream.record
    counted = metrics.service(record.service)
    counted.started.inc()
    deltas = deltas_counted = 0
    out = Publisher(hub, record)
    source = coalesce(events, coalesce_ms / 1000) if coalesce_ms > 0 else events
    status, finish_reason, usage = "completed", "stop", None
    error: dict[str, Any] | None = None
    shutdown: asyncio.CancelledError | None = None
    taken_over = False
    saved_at = time.monotonic()
    joiner = SurrogateJoiner()
    try:
        async with asyncio.timeout(max_duration):
            await out.emit(
                "threadInfo", content={"streamId": record.id, "service": record.service, "model": record.model}
            )
            async for event in source:
                if isinstance(event, Delta):
                    piece = joiner.feed(event.text)  # a surrogate pair cut between chunks is joined
                    if not piece:
                        continue
                    stream.text.append(piece)
                    if not deltas:
                        counted.first_token.observe(time.monotonic() - (stream.admitted_at or saved_at))
                    if time.monotonic() >= saved_at + _SAVE_EVERY:
                        counted.deltas.inc(deltas - deltas_counted)
                        deltas_counted = deltas
                        # So that a crash leaves the record with the answer so far, not nothing, and
                        # whoever ends it for a dead instance knows where its numbering stood.
                        text = "".join(stream.text) if retain_text else None
                        try:
                            saved = await store.record_stream_text(record.id, text, out.seq)
                        except StoreError:  # the database is down: the next save makes up for it
                            saved = True
                        if not saved:
                            # Ended for this instance by another, which took it for dead (a freeze or a
                            # partition longer than its lease, and maybe than the fence): stop before
                            # this delta goes out.
                            raise Fenced(record.id)
                        saved_at = time.monotonic()
                    await out.emit("delta", content=piece)
                    deltas += 1
                elif isinstance(event, ToolCalls):
                    functions = [_function(call) for call in event.calls]
                    await out.emit("function_call", content={"functions": functions})
                elif isinstance(event, Finished):
                    finish_reason, usage = event.reason or "stop", event.usage
            if tail := joiner.flush():  # a high surrogate that no low half followed
                stream.text.append(tail)
                if not deltas:
                    counted.first_token.observe(time.monotonic() - (stream.admitted_at or saved_at))
                await out.emit("delta", content=tail)
                deltas += 1
    except Fenced:
        # Another instance took this one for dead and ended the stream on its channels: nothing
        # more goes out, and the record it wrote stands.
        log.warning("stream %s was ended by another instance meanwhile", record.id)
        taken_over = True
    except BfstreamError as exc:
        status, error = "failed", repair_json({"message": exc.message, "code": exc.code, "details": exc.details})
        log.warning("stream %s failed: %s", record.id, exc.message)
        if isinstance(exc, ProviderError):
            metrics.provider_error(record.service, exc)
        if isinstance(exc, BrokerError):
            out.seq += 1  # the failed event may still land (a reply lost, not the publish): never reuse its number
    except TimeoutError:
        status, error = "failed", {"message": f"The stream ran longer than {max_duration:g} s", "code": 504}
    except asyncio.CancelledError as exc:
        if stream.stop_requested:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]  # our own stop, handled here
            status, finish_reason = "stopped", "stopped"
        else:  # server shutdown: tell the channels, then let the task end
            status, error, shutdown = "interrupted", {"message": "The server is shutting down", "code": 503}, exc
    except Exception:
        log.exception("stream %s failed unexpectedly", record.id)
        status, error = "failed", {"message": "Internal error while streaming", "code": 500}

    # From here on the stream is ending its own way: a stop or a drain must not cut its end short
    # (set before the next await, so no cancel can slip in between).
    stream.ending = True
    try:
        await source.aclose()  # closes the provider connection if it is still open
    except Exception:
        log.exception("closing the provider stream of %s failed", record.id)
    text = "".join(stream.text)
    if error is not None:  # it goes to the channels and the record: scrubbed, whatever raised it
        finish_reason, error = "error", scrub_json({"details": None, **error})
    # Counted before the end goes out: whoever sees the end and then scrapes finds the stream counted.
    counted.deltas.inc(deltas - deltas_counted)
    counted.finished["interrupted" if taken_over else status].inc()
    ending = [{"type_": "error", "error": error}] if error is not None else []
    ending.append({"type_": "end", "finish_reason": finish_reason, "usage": usage, "text": text})
    # Unless another instance ended it for this one (asked once more: a stream may end right after
    # a long freeze). While shutting down there is no time to wait for the broker.
    if not taken_over and await _still_running(store, record):
        await _send_ending(out, store, record, ending, 0 if shutdown is not None else _ENDING_PATIENCE)
    record.status, record.finish_reason, record.usage, record.error = status, finish_reason, usage, error
    record.ended_at = time.time()
    record.text = text if retain_text else None
    record.seq = out.seq
    await _record_end(store, record, 0 if shutdown is not None else _ENDING_PATIENCE)
    if shutdown is not None:
        raise shutdown
