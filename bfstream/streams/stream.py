"""One stream's whole life: admission, its turns with the model, the relay of each turn to the
channels, the tool rounds between turns, stop, the one ``end`` and the record.

A turn is one provider call. When the model's turn ends in tool calls the stream can answer
(``ui_*`` tools by a page, the others by the app's webhook: ``tools.py``), the calls and their
results are appended to the conversation in OpenAI's shape, which each adapter translates into its
provider's own (``tool_calls`` + ``tool`` messages, ``tool_use``/``tool_result`` blocks,
``functionCall``/``functionResponse`` parts), and the next turn continues the same stream: one
``streamId``, one ``seq`` sequence, usage added up, ``end.text`` the whole answer across turns.
A stream that cannot answer its calls (a backend tool and no webhook, or ``tools.max_rounds``
reached) ends as before tools existed: ``function_call``, then ``end`` with ``tool_calls``.

``stream: false`` runs the same loop through ``answer`` for backend tools.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from typing import Any

from bfstream.config import ServiceConfig, Settings
from bfstream.errors import BfstreamError, BrokerError, ProviderError, StoreError, outcome
from bfstream.filemaker.client import FileMaker
from bfstream.messaging.broker import Fenced
from bfstream.messaging.hub import Hub
from bfstream.metrics import Metrics, ServiceMetrics
from bfstream.providers import ADAPTERS, IMAGE_FETCHES
from bfstream.providers.events import (
    THINKING,
    ChatRequest,
    Delta,
    Finished,
    ProviderEvent,
    Reasoning,
    Sources,
    Started,
    ToolCall,
    ToolCalls,
)
from bfstream.providers.http import ProviderClient
from bfstream.providers.images import inline_images
from bfstream.store.records import App, StreamRecord
from bfstream.store.store import Store
from bfstream.streams.coalesce import coalesce
from bfstream.streams.lifecycle import Announcer
from bfstream.streams.publisher import SHUTDOWN_PATIENCE, Publisher, announced, record_end, send_ending, still_running
from bfstream.streams.registry import Admission, StreamRegistry
from bfstream.streams.retry import with_retries
from bfstream.streams.saver import STALE_AFTER, save_once_for
from bfstream.streams.tools import ToolRound, completion_calls, is_frontend
from bfstream.text import SurrogateJoiner

log = logging.getLogger("bfstream.streams")

_COUNT_EVERY = 20  # deltas added to the metrics at once: one addition a second at 20 a second
STOP_WAIT = 5.0  # seconds a stop waits for the stream's end to go out before answering
_CANCEL_AGAIN_AFTER = 0.05  # seconds: a cancellation not taken by then was lost


@dataclass(frozen=True, slots=True)
class StreamContext:
    """What every stream of the server shares."""

    hub: Hub
    store: Store
    http: ProviderClient  # providers and webhooks
    metrics: Metrics
    registry: StreamRegistry
    settings: Settings
    instance_id: str
    announcer: Announcer | None = None  # lifecycle events to apps' back ends (``lifecycle.py``)
    filemaker: FileMaker | None = None  # backend tools on apps' FileMaker Servers


@dataclass(slots=True)
class StreamSpec:
    """A request, checked and resolved by the API: everything a stream needs to run."""

    app: App
    service_name: str
    service: ServiceConfig
    chat: ChatRequest
    channels: list[str]
    action_name: str
    coalesce_ms: float = 0.0
    tool_timeout: float = 90.0
    max_rounds: int = 8
    offered: frozenset[str] = frozenset()  # the tools the request offered: no other is ever run
    metadata: dict[str, Any] | None = None  # the caller's, given back in the stream's lifecycle event


@dataclass(slots=True)
class _Turn:
    text: str
    calls: ToolCalls | None
    finish_reason: str
    usage: dict[str, Any] | None


def add_usage(total: dict[str, Any] | None, more: Any) -> dict[str, Any] | None:
    """Usage across turns: each count added up (a turn without usage adds nothing)."""
    if not isinstance(more, dict):
        return total
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    if total is None:
        return {k: more.get(k, 0) if isinstance(more.get(k), int) else 0 for k in keys}
    return {k: total[k] + (more.get(k) if isinstance(more.get(k), int) else 0) for k in keys}


class Stream:
    """One call's stream, and the only one that changes its state: the registry, the saver, a stop
    and a page's tool answer ask it. ``record``, ``task`` and ``admission`` exist once ``start``
    has them."""

    record: StreamRecord
    task: asyncio.Task[None]
    admission: Admission  # its slot in the app's limit, held until it ends
    _out: Publisher  # what numbers its events (whose ``seq`` is the next one's)
    _saved_at: float  # the last save that found it still this instance's

    def __init__(self, context: StreamContext, spec: StreamSpec) -> None:
        self._ctx = context
        self.spec = spec
        self._adapter = ADAPTERS[spec.service.kind]
        self._messages: list[Any] = list(spec.chat.payload.get("messages") or [])
        self._app = spec.app  # read again before each tool round: the webhook may have changed
        self._source: AsyncGenerator[ProviderEvent, None] | None = None
        self._deltas = self._deltas_counted = 0
        self._text: list[str] = []  # the answer so far, across turns
        # Its reasoning so far, when the request asked for it (None: not relayed, not kept).
        self._thoughts: list[str] | None = [] if spec.chat.include_reasoning else None
        self._sources: dict[str, dict[str, str]] = {}  # every source cited, by URL, in the order they came
        self._stop_requested = False
        self._stopped = False  # the stop was taken: its end says ``stopped``
        self.ending = False  # past its last event: sending its end and writing its record, not to be cancelled
        self._round: ToolRound | None = None  # the last tool round: a page's answer goes to it
        # For the saver (``saver.py``): how much of the text is saved, and whether a save found that
        # another instance ended the stream meanwhile.
        self._saved_pieces = 0
        self._fenced = False

    def _chat(self) -> ChatRequest:
        """The request of the next turn: the caller's payload with the conversation so far."""
        return replace(self.spec.chat, payload={**self.spec.chat.payload, "messages": self._messages})

    async def _inline_images(self) -> None:
        """Image URLs the provider cannot read itself, fetched and put in the conversation as bytes;
        once per stream, before its first turn, so tool rounds and retries never fetch them again.
        Raises ``ValidationFailed`` (a 400) before the provider is called."""
        wanted = IMAGE_FETCHES.get(self.spec.service.kind)
        if wanted is not None:
            images = self._ctx.settings.images
            self._messages = await inline_images(self._messages, wanted, self._ctx.http, images)

    async def _open_turn(self) -> AsyncGenerator[ProviderEvent, None]:
        """A provider stream that has answered (``Started`` consumed); retried only before it has."""
        spec, ctx = self.spec, self._ctx

        async def attempt() -> tuple[Started, AsyncGenerator[ProviderEvent, None]]:
            events = self._adapter.stream_chat(self._chat(), ctx.http, spec.service)
            try:
                started = await anext(events)
            except BaseException:
                await events.aclose()
                raise
            assert isinstance(started, Started)
            return started, events

        with ctx.metrics.provider_errors(spec.service_name):
            started, events = await with_retries(attempt, spec.service.retries, ctx.settings.streams.retry_max_wait)
        self._model = started.model
        return events

    # --- stream: true ------------------------------------------------------------------------------

    async def start(self) -> str:
        """Admit, open the first turn, record it, and run the rest in the background; the stream id."""
        ctx, spec = self._ctx, self.spec
        if not ctx.hub.broker.up:  # refuse before the provider is called (and paid) for nothing
            raise BrokerError("The message broker is unreachable: streams cannot reach their channels now")
        async with ctx.registry.admitted(spec.app.id) as admission:
            await self._inline_images()
            events = await self._open_turn()
            record = StreamRecord(
                secrets.token_hex(16), spec.app.id, spec.service_name, self._model, list(spec.channels),
                spec.action_name, owner=ctx.instance_id, metadata=spec.metadata,
            )  # fmt: skip
            try:
                await ctx.store.record_stream_start(record)
            except BaseException:
                await events.aclose()
                raise
            self.record, self.admission, self._saved_at = record, admission, time.monotonic()
            self.task = asyncio.create_task(self._run(events), name=f"stream-{record.id}")
            ctx.registry.add(self)
        return record.id

    async def _run(self, events: AsyncGenerator[ProviderEvent, None]) -> None:
        """Relay turn after turn, then send ``error`` (if any) and ``end``, and record the outcome.

        Deltas are counted in a local and added to the metrics every ``_COUNT_EVERY`` and at the
        end, rather than one addition per delta."""
        ctx, spec, record = self._ctx, self.spec, self.record
        counted = ctx.metrics.service(record.service)
        counted.started.inc()
        out = self._out = Publisher(ctx.hub, record, log_bytes=ctx.settings.streams.log_bytes)
        status, finish_reason, usage = "completed", "stop", None
        error: dict[str, Any] | None = None
        shutdown: asyncio.CancelledError | None = None
        taken_over = False
        max_duration = ctx.settings.streams.max_duration
        try:
            async with asyncio.timeout(max_duration):
                await out.emit(
                    "threadInfo", content={"streamId": record.id, "service": record.service, "model": record.model}
                )
                rounds = 0
                while True:
                    turn = await self._relay_turn(events, counted)
                    usage = add_usage(usage, turn.usage)
                    finish_reason = turn.finish_reason
                    if turn.calls is None:
                        break
                    if rounds >= spec.max_rounds or not await self._can_answer(turn.calls.calls, frontend=True):
                        finish_reason = "tool_calls"
                        break
                    rounds += 1
                    await self._tool_round(turn, rounds)
                    events = await self._open_turn()
        except Fenced:
            # Another instance took this one for dead and ended the stream on its channels: nothing
            # more goes out, and the record it wrote stands.
            log.warning("stream %s was ended by another instance meanwhile", record.id)
            taken_over = True
        except asyncio.CancelledError as exc:
            if self._stop_requested:
                task = asyncio.current_task()
                assert task is not None
                while task.uncancel():  # our own stop, handled here (it may have cancelled more than once)
                    pass
                status, finish_reason, self._stopped = "stopped", "stopped", True
            else:  # server shutdown: tell the channels, then let the task end
                status, error = outcome(exc, max_duration)
                shutdown = exc
        except Exception as exc:
            status, error = outcome(exc, max_duration)
            if isinstance(exc, ProviderError):
                ctx.metrics.provider_error(record.service, exc)
            if isinstance(exc, BfstreamError):
                log.warning("stream %s failed: %s", record.id, exc.message)
            elif not isinstance(exc, TimeoutError):
                log.exception("stream %s failed unexpectedly", record.id)

        # From here on the stream is ending its own way: a stop or a drain must not cut its end short
        # (set before the next await, so no cancel can slip in between).
        self.ending = True
        try:
            if self._source is not None:
                await self._source.aclose()  # closes the provider connection if it is still open
        except Exception:
            log.exception("closing the provider stream of %s failed", record.id)
        text = "".join(self._text)
        if error is not None:
            finish_reason = "error"
        # Counted before the end goes out: whoever sees the end and then scrapes finds the stream counted.
        counted.deltas.inc(self._deltas - self._deltas_counted)
        counted.finished["interrupted" if taken_over else status].inc()
        ending = [{"type_": "error", "error": error}] if error is not None else []
        end = {"type_": "end", "finish_reason": finish_reason, "usage": usage, "text": text}
        reasoning = "".join(self._thoughts) if self._thoughts is not None else None
        if reasoning is not None:
            end["reasoning"] = reasoning
        if self._sources:
            end["sources"] = list(self._sources.values())
        ending.append(end)
        # Unless another instance ended it for this one (asked once more: a stream may end right after
        # a long freeze). While shutting down there is no time to wait for the broker.
        patience = SHUTDOWN_PATIENCE if shutdown is not None else None
        if not taken_over and await still_running(ctx.store, record):
            await send_ending(out, ctx.store, record, ending, patience)
        record.status, record.finish_reason, record.usage, record.error = status, finish_reason, usage, error
        record.ended_at = time.time()
        record.text = text if spec.app.retain_text else None
        record.reasoning = reasoning if spec.app.retain_text else None
        record.sources = list(self._sources.values())
        record.seq = out.seq
        if await record_end(ctx.store, record, patience):
            if ctx.announcer is not None:
                await ctx.announcer.announce(await self._app_now(), record, text)
        if shutdown is not None:
            raise shutdown

    async def _relay_turn(self, events: AsyncGenerator[ProviderEvent, None], counted: ServiceMetrics) -> _Turn:
        window = self.spec.coalesce_ms / 1000
        source = coalesce(events, window) if window > 0 else events
        self._source = source
        joiner = SurrogateJoiner()  # a surrogate pair cut between chunks is joined
        thinking = SurrogateJoiner()
        thought_before = len(self._thoughts or [])  # a turn's thinking starts a paragraph of its own
        start = len(self._text)  # the whole answer so far: this turn's text is what it adds
        calls: ToolCalls | None = None
        reason, usage = "stop", None
        async for event in source:
            if isinstance(event, Delta):
                if piece := joiner.feed(event.text):
                    await self._delta(piece, counted)
            elif isinstance(event, Reasoning):
                if self._thoughts is None:
                    continue  # not asked for: a page that did not ask sees nothing new
                if event.redacted:
                    await self._emit_checked("reasoning", content="", redacted=True)
                elif piece := thinking.feed(event.text):
                    if thought_before and len(self._thoughts) == thought_before:
                        piece = "\n\n" + piece  # sent with it: the events still add up to end.reasoning
                    await self._think(piece)
            elif isinstance(event, Sources):
                fresh = {cited["url"]: cited for cited in event.sources if cited["url"] not in self._sources}
                self._sources.update(fresh)
                if fresh:
                    await self._emit_checked("sources", sources=list(fresh.values()))
            elif isinstance(event, ToolCalls):
                calls = event
                public = self._app.tool_arguments_public
                functions = [announced(call, public or is_frontend(call.name)) for call in event.calls]
                self.record.functions += functions  # kept with the text: the final snapshot's whole
                await self._out.emit("function_call", content={"functions": functions})
            elif isinstance(event, Finished):
                reason, usage = event.reason or "stop", event.usage
        if tail := joiner.flush():  # a high surrogate that no low half followed
            await self._delta(tail, counted)
        if tail := thinking.flush():
            await self._think(tail)
        await source.aclose()
        return _Turn("".join(self._text[start:]), calls, reason, usage)

    async def _delta(self, piece: str, counted: ServiceMetrics) -> None:
        await self._still_ours()
        self._text.append(piece)
        if not self._deltas:
            counted.first_token.observe(time.monotonic() - self.admission.at)
        await self._out.emit("delta", content=piece)
        self._deltas += 1
        if self._deltas - self._deltas_counted >= _COUNT_EVERY:
            counted.deltas.inc(self._deltas - self._deltas_counted)
            self._deltas_counted = self._deltas

    async def _think(self, piece: str) -> None:
        assert self._thoughts is not None
        await self._still_ours()
        self._thoughts.append(piece)
        await self._out.emit("reasoning", content=piece)

    async def _emit_checked(self, type_: str, **fields: Any) -> None:
        await self._still_ours()
        await self._out.emit(type_, **fields)

    async def _still_ours(self) -> None:
        """Before an event of the model's goes out: is the stream still this instance's to relay?"""
        if time.monotonic() - self._saved_at > STALE_AFTER:
            # The saver has not confirmed for a while that the stream is still this instance's: after
            # the process was frozen (a pause, a partition), the next delta must not go out before
            # that is known. Not knowing (the database is down) counts as still its own, and the next
            # check waits another while: a stream never waits on a database that is away.
            await save_once_for(self._ctx.store, [self])
            self._saved_at = time.monotonic()
        if self._fenced:
            # Ended for this instance by another, which took it for dead (a freeze or a partition
            # longer than its lease, and maybe than the fence; the saver found out): stop before
            # this delta goes out.
            raise Fenced(self.record.id)

    async def _can_answer(self, calls: list[ToolCall], frontend: bool) -> bool:
        """Whether every call has someone to answer it: a page for ``ui_*`` (streaming only), the
        app's FileMaker Server or webhook for the rest."""
        await self._app_now()
        if not frontend and any(is_frontend(call.name) for call in calls):
            return False
        app = self._app
        return all(is_frontend(call.name) for call in calls) or app.webhook_url is not None or app.filemaker is not None

    async def _app_now(self) -> App:
        """The app as it is now (its webhook may have changed since the stream started), or as last
        read when the database is away."""
        try:
            self._app = await self._ctx.store.app_by_id(self.spec.app.id) or self._app
        except StoreError:
            pass
        return self._app

    async def _tool_round(self, turn: _Turn, number: int) -> None:
        assert turn.calls is not None
        self._round = tools = ToolRound(
            self._ctx, self._app, self.spec, number, turn.calls.calls, self.record.id, self._out
        )
        assistant = tools.assistant(turn.text or None, turn.calls.thinking)
        results = await tools.run()
        self._messages += [assistant, *results.messages]
        self.record.tools += results.entries

    # --- asked by others: stop, the saver, a page's tool answer, status ----------------------------

    async def stop(self) -> bool:
        """True once the stream has ended as ``stopped`` (its ``end`` went out, or is held until the
        broker takes it: after ``STOP_WAIT`` seconds the answer does not wait for that); False when
        it ended, or began ending, by itself first.

        Its task is cancelled, which closes the provider connection at once (the provider then
        stops generating, and billing); ``_run`` tells a stop from a shutdown by
        ``_stop_requested``. A cancellation can be lost on its way: on Python 3.11,
        ``asyncio.wait_for`` (which redis-py uses for every write to Redis) returns the inner
        result when the cancellation lands as that result arrives, and the task runs on as if
        never cancelled. So a stop cancels again until the stream has taken it, and answers that it
        stopped only once it did."""
        if self.ending:  # it ended, or began its ending, by itself: nothing is left to stop
            return False
        self._stop_requested = True
        while not self.ending and not self.task.done():
            self.task.cancel()
            await asyncio.wait({self.task}, timeout=_CANCEL_AGAIN_AFTER)
        if self._stopped:
            await asyncio.wait({self.task}, timeout=STOP_WAIT)
        return self._stopped

    @property
    def unsaved(self) -> bool:
        """Text the saver has not written yet; never once ending: its ending writes its record."""
        return not self.ending and len(self._text) != self._saved_pieces

    def save_row(self) -> tuple[str, str | None, int, int]:
        """What the saver writes, read at once: the id, the text so far (None when the app keeps
        none) with the seq it reached, and how many pieces that text has, for ``saved``."""
        text = "".join(self._text) if self.spec.app.retain_text else None
        return self.record.id, text, self._out.seq, len(self._text)

    def saved(self, pieces: int, at: float, gone: bool) -> None:
        """A save of the first ``pieces`` pieces went through at ``at``; ``gone``: it found the
        record no longer running (another instance took this one for dead and ended the stream for
        it), and the relay stops before its next event."""
        self._saved_pieces, self._saved_at, self._fenced = pieces, at, self._fenced or gone

    def take_answer(self, tool_call_id: str, result: dict[str, Any]) -> bool:
        """A page's answer to a frontend call (``tools.ToolRound.take``)."""
        return self._round is not None and self._round.take(tool_call_id, result)

    def status(self, retain_text: bool) -> dict[str, Any]:
        """The record, live: with the text so far when the app (as it is now) keeps text."""
        live = self.record.to_json()
        live["text"] = "".join(self._text) if retain_text else None
        live["reasoning"] = "".join(self._thoughts) if retain_text and self._thoughts is not None else None
        live["sources"] = list(self._sources.values())
        return live

    # --- stream: false -----------------------------------------------------------------------------

    async def answer(self) -> Any:
        """The whole answer as one ``chat.completion``, after as many backend tool rounds as the model
        asks for (up to ``max_rounds``); usage is added up across them."""
        ctx, spec = self._ctx, self.spec
        retries, max_wait = spec.service.retries, ctx.settings.streams.retry_max_wait
        async with ctx.registry.admitted(spec.app.id):
            await self._inline_images()
            rounds, usage = 0, None
            while True:
                with ctx.metrics.provider_errors(spec.service_name):
                    completion = await with_retries(
                        lambda: self._adapter.complete(self._chat(), ctx.http, spec.service), retries, max_wait
                    )
                usage = add_usage(usage, completion.get("usage") if isinstance(completion, dict) else None)
                message, calls = completion_calls(completion)
                thinking = message.pop(THINKING, None)  # bfstream's own: never in the caller's answer
                if not calls or rounds >= spec.max_rounds or not await self._can_answer(calls, frontend=False):
                    break
                rounds += 1
                tools = ToolRound(ctx, self._app, spec, rounds, calls)
                results = await tools.run()
                self._messages += [tools.assistant(message.get("content"), thinking), *results.messages]
        if rounds and isinstance(completion, dict):
            completion["usage"] = usage
        return completion
