"""Answering a model's tool calls: ``ui_*`` tools in the user's page, the others on the app's back end.

A frontend call goes to the stream's channels as a ``tool_call`` event (the page runs the named
action ``toolName``, the tool's name without ``ui_``) and waits for the first answer: a
``toolResult`` frame from a connection in one of the stream's channels, or ``POST
/llm/tool-response`` naming the stream. The ``toolCallId`` the page sees is made here and names the
stream (``tc_<streamId>_<random>``), so an answer arriving at any instance finds the stream's owner
through its record and is forwarded there over control. No answer within the timeout, and the
model reads a failure saying so.

A backend call is a signed POST to the app's webhook (``webhooks.py``); its JSON answer is the
result. An app with a FileMaker Server runs it there instead, as the script named after the tool
(``bfstream/filemaker``), whose result is the tool's. Refusals, time-outs, unreachable hosts and
script errors become failure results the model reads: a tool never fails the stream.

The calls of one turn are a ``ToolRound``, held by its stream while they run concurrently; an
answer found through the registry reaches the round through the stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from bfstream.errors import BfstreamError, FileMakerError, WebhookError
from bfstream.filemaker.target import tool_parameter
from bfstream.filemaker.wire import tool_result
from bfstream.fleet.control import Control
from bfstream.fleet.owners import Owners
from bfstream.messaging.protocol import tool_result_problem
from bfstream.providers.events import ToolCall
from bfstream.store.records import App, StreamRecord
from bfstream.streams.registry import StreamRegistry
from bfstream.text import repair_json
from bfstream.webhooks import post

if TYPE_CHECKING:
    from bfstream.messaging.session import Session
    from bfstream.streams.publisher import Publisher
    from bfstream.streams.stream import Stream, StreamContext, StreamSpec

log = logging.getLogger("bfstream.tools")

FRONTEND_PREFIX = "ui_"


def is_frontend(name: str) -> bool:
    return name.startswith(FRONTEND_PREFIX)


def stream_of(tool_call_id: str) -> str | None:
    """The stream a frontend ``toolCallId`` belongs to, or None for an id not made here."""
    kind, _, rest = tool_call_id.partition("_")
    stream_id, _, _ = rest.partition("_")
    return stream_id if kind == "tc" and len(stream_id) == 32 else None


@dataclass(slots=True)
class RoundResults:
    messages: list[dict[str, Any]] = field(default_factory=list)  # the ``tool`` messages, in call order
    entries: list[dict[str, Any]] = field(default_factory=list)  # for the stream's record


def _arguments(raw: str) -> dict[str, Any] | None:
    try:
        parsed = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _failure(message: str) -> dict[str, Any]:
    return {"success": False, "message": message}


class ToolRound:
    """The calls of one turn, answered concurrently: frontend ones by a page, only when streaming
    (``out``), the others by the app's webhook. Its stream holds it, and hands it a page's answer
    (``take``) while it waits; once it is over, a late answer finds nothing to answer."""

    def __init__(
        self,
        ctx: StreamContext,
        app: App,
        spec: StreamSpec,
        number: int,
        calls: list[ToolCall],
        stream_id: str | None = None,
        out: Publisher | None = None,
    ) -> None:
        self._ctx, self._app, self._spec, self._number = ctx, app, spec, number
        self._stream_id, self._out = stream_id, out
        # Every call needs an id to pair with its result; a provider that sent none gets one made up.
        self.calls = [call if call.id else replace(call, id=f"call_{number}_{i}") for i, call in enumerate(calls)]
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}  # by toolCallId

    def assistant(self, content: Any, thinking: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The assistant message that made the calls, in OpenAI's shape; the ``thinking`` the provider
        needs back (``ToolCalls.thinking``) goes first in its content, unchanged, before its text."""
        if thinking:
            content = [*thinking, *([{"type": "text", "text": content}] if content else [])]
        return {
            "role": "assistant",
            "content": content,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                    **(call.extra or {}),
                }
                for call in self.calls
            ],
        }

    async def run(self) -> RoundResults:
        prepared = [await self._prepare(call) for call in self.calls]
        try:
            done = await asyncio.gather(*(self._answer(*item) for item in prepared))
        finally:
            self._waiting.clear()  # late answers now find nothing to answer
        results = RoundResults()
        for call, (result, entry) in zip(self.calls, done, strict=True):
            content = json.dumps(repair_json(result), ensure_ascii=False, separators=(",", ":"))
            results.messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
            results.entries.append(entry)
        return results

    def take(self, tool_call_id: str, result: dict[str, Any]) -> bool:
        """The first answer wins; a second or a late one finds nothing."""
        waiting = self._waiting.get(tool_call_id)
        if waiting is None or waiting.done():
            return False
        waiting.set_result(dict(result))  # extra keys travel too, as the reference's llmToolCallResponse allows
        return True

    async def _prepare(
        self, call: ToolCall
    ) -> tuple[ToolCall, str, dict[str, Any] | None, asyncio.Future[dict[str, Any]] | None]:
        """The call's id and arguments, and for a page's call, its ``tool_call`` event sent and the
        answer awaited."""
        spec, stream_id = self._spec, self._stream_id
        tool_call_id = f"tc_{stream_id}_{secrets.token_hex(8)}" if stream_id else f"tc_{secrets.token_hex(8)}"
        arguments = _arguments(call.arguments)
        answer = None
        page = call.name in spec.offered and is_frontend(call.name) and arguments is not None
        if page and self._out is not None:
            answer = self._waiting[tool_call_id] = asyncio.get_running_loop().create_future()
            name = call.name[len(FRONTEND_PREFIX) :]
            await self._out.emit(
                "tool_call",
                action="llmToolCall",
                toolCallId=tool_call_id,
                toolName=name,
                arguments=arguments,
                functions=[{"name": name, "arguments": arguments}],
                timeoutMs=max(1, round(spec.tool_timeout * 1000)),
            )
        return call, tool_call_id, arguments, answer

    async def _answer(
        self,
        call: ToolCall,
        tool_call_id: str,
        arguments: dict[str, Any] | None,
        answer: asyncio.Future[dict[str, Any]] | None,
    ) -> tuple[Any, dict[str, Any]]:
        """The call's result, and its entry in the stream's record."""
        spec, app = self._spec, self._app
        started = time.monotonic()
        if call.name not in spec.offered:
            result, outcome = _failure(f"The tool {call.name} was not offered: there is no such tool"), "not_offered"
        elif arguments is None:
            result, outcome = _failure("The tool was not called: its arguments are not a JSON object"), "invalid"
        elif answer is not None:
            result, outcome = await _from_page(answer, call.name, spec.tool_timeout)
        elif app.filemaker is not None:
            parameter = tool_parameter(tool_call_id, call.name, arguments, self._stream_id, spec.metadata)
            result, outcome = await _from_filemaker(self._ctx, app, call.name, parameter)
        else:
            request = {
                "type": "tool_call",
                "appId": app.id,
                "streamId": self._stream_id,
                "toolCallId": tool_call_id,
                "toolName": call.name,
                "arguments": arguments,
                "round": self._number,
                "actionName": spec.action_name or None,
                "channels": spec.channels,
            }
            result, outcome = await _from_webhook(self._ctx, app, call.name, request)
        entry: dict[str, Any] = {
            "toolCallId": tool_call_id,
            "name": call.name,
            "kind": "frontend" if is_frontend(call.name) else "backend",
            "round": self._number,
            "durationMs": round((time.monotonic() - started) * 1000),
            "outcome": outcome,
        }
        if spec.app.retain_text:
            entry["arguments"] = arguments if arguments is not None else call.arguments
        return result, entry


def completion_calls(completion: Any) -> tuple[dict[str, Any], list[ToolCall]]:
    """The first choice's message of a ``chat.completion`` (``stream: false``), and its tool calls:
    what ``ToolRound.assistant`` gives back."""
    choices = completion.get("choices") if isinstance(completion, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    calls = []
    for entry in message.get("tool_calls") or []:
        function = entry.get("function") if isinstance(entry, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        arguments = function.get("arguments")
        extra = {k: v for k, v in entry.items() if k not in ("id", "type", "function")}
        calls.append(
            ToolCall(
                id=entry.get("id") if isinstance(entry.get("id"), str) else None,
                name=function["name"],
                arguments=arguments if isinstance(arguments, str) else "{}",
                extra=extra or None,
            )
        )
    return message, calls


async def _from_page(answer: asyncio.Future[dict[str, Any]], name: str, seconds: float) -> tuple[dict[str, Any], str]:
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the answer when a stop's
    # cancellation lands as the answer arrives, and the stop is lost.
    try:
        async with asyncio.timeout(seconds):
            result = await answer
    except TimeoutError:
        return _failure(f"The tool {name} did not respond within {seconds:g} s"), "timeout"
    return result, "ok" if result.get("success") else "failed"


async def _from_webhook(ctx: StreamContext, app: App, name: str, request: dict[str, Any]) -> tuple[Any, str]:
    if app.webhook_url is None or app.webhook_secret is None:
        return _failure(f"The tool {name} has no back end to run it"), "error"
    tools = ctx.settings.tools
    try:
        answer = await post(
            ctx.http, app.webhook_url, app.webhook_secret, "tool_call", request, tools.webhook_timeout,
            allow_private=tools.allow_private_webhooks,
        )  # fmt: skip
    except WebhookError as exc:
        # What the back end said goes to the operator's log (scrubbed), not to the model.
        log.info("tool %s of app %s failed at its webhook: %s (%s)", name, app.id, exc.message, exc.details)
        return _failure(f"The tool {name} failed: {exc.message}"), "error"
    if isinstance(answer, dict) and answer.get("success") is False:
        return answer, "failed"
    return answer, "ok"


async def _from_filemaker(ctx: StreamContext, app: App, name: str, parameter: Any) -> tuple[Any, str]:
    """The script named after the tool, on the app's FileMaker Server (``bfstream/filemaker``)."""
    if ctx.filemaker is None:
        return _failure(f"The tool {name} has no back end to run it"), "error"
    try:
        result = await ctx.filemaker.run_script(app, name, parameter)
    except FileMakerError as exc:
        log.info("tool %s of app %s failed on its FileMaker Server: %s (%s)", name, app.id, exc.message, exc.details)
        return _failure(f"The tool {name} failed: {exc.message}"), "error"
    answer = tool_result(result, name)
    if isinstance(answer, dict) and answer.get("success") is False:
        return answer, "failed"
    return answer, "ok"


class ToolAnswers:
    """Pages' answers to frontend calls, taken here or forwarded to the instance running the stream."""

    def __init__(self, registry: StreamRegistry, owners: Owners, control: Control) -> None:
        self._registry = registry
        self._owners = owners
        control.on("toolResult", self._here)

    async def from_page(self, session: Session, tool_call_id: str, result: dict[str, Any]) -> bool:
        """A ``toolResult`` frame: only from a connection of the stream's app, in one of its channels."""
        stream_id = stream_of(tool_call_id)
        if stream_id is None:
            return False
        return await self._route(stream_id, tool_call_id, result, session.app.id, session.channels)

    async def from_holder(self, stream_id: str, tool_call_id: str, result: dict[str, Any]) -> bool:
        """``POST /llm/tool-response``: the stream id is the capability, as for stopping."""
        if stream_of(tool_call_id) != stream_id:
            return False
        return await self._route(stream_id, tool_call_id, result, None, None)

    async def _route(
        self,
        stream_id: str,
        tool_call_id: str,
        result: dict[str, Any],
        app_id: str | None,
        channels: Iterable[str] | None,
    ) -> bool:
        running = self._registry.get(stream_id)
        if running is not None:
            return _take(running, tool_call_id, result, app_id, channels)
        try:
            record = await self._owners.elsewhere(stream_id)
        except BfstreamError:
            return False
        if record is None or not _may_answer(record, app_id, channels):
            return False
        request = {
            "op": "toolResult",
            "streamId": stream_id,
            "toolCallId": tool_call_id,
            "result": result,
            "app": app_id,
            "channels": list(channels) if channels is not None else None,
        }
        try:
            reply = await self._owners.ask(record, request)
        except BfstreamError:
            return False
        return isinstance(reply, dict) and reply.get("accepted") is True

    async def _here(self, request: dict[str, Any]) -> dict[str, Any]:
        running = self._registry.get(str(request.get("streamId")))
        result = request.get("result")
        if running is None or tool_result_problem(result) is not None:
            return {"accepted": False}
        channels = request.get("channels")
        taken = _take(running, str(request.get("toolCallId")), result, request.get("app"), channels)
        return {"accepted": taken}


def _may_answer(record: StreamRecord, app_id: str | None, channels: Iterable[str] | None) -> bool:
    if app_id is not None and app_id != record.app_id:
        return False
    return channels is None or not set(record.channels).isdisjoint(channels)


def _take(
    stream: Stream, tool_call_id: str, result: dict[str, Any], app_id: Any, channels: Iterable[str] | None
) -> bool:
    """Only from the stream's app and, when asked from a page, one of its channels."""
    return _may_answer(stream.record, app_id, channels) and stream.take_answer(tool_call_id, result)
