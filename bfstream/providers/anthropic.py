"""Anthropic Messages API (``POST /v1/messages``), spoken to with an OpenAI-style payload.

Wire format (streaming): named SSE events, ``event: <type>`` then ``data: <JSON with the same type>``:
``message_start`` (the message skeleton: model, ``usage.input_tokens`` and the cache counts), then per
content block ``content_block_start`` / ``content_block_delta``\\* / ``content_block_stop`` (blocks carry an
``index``; text comes as ``text_delta``, a ``tool_use`` block's input as ``input_json_delta`` fragments of one
JSON document, extended thinking as ``thinking_delta``/``signature_delta``, a text block's
citations as ``citations_delta``), then ``message_delta``
(``stop_reason`` and *cumulative* ``usage.output_tokens``) and ``message_stop``, the end marker. ``ping``
events may come anywhere; an ``error`` event (``{"type": "error", "error": {"type", "message"}}``, e.g.
``overloaded_error``) ends a stream that already answered 200. Anthropic may add event types and says
clients must ignore those they do not know.

Reasoning: a ``thinking`` block's ``thinking_delta`` text is the model's thinking; a
``redacted_thinking`` block (encrypted by Anthropic's safety systems) is reported as withheld. Both
go back whole and signed in the next turn of a tool loop. Sources: the ``web_search_result``
entries of a ``web_search_tool_result`` block, and the ``web_search_result_location`` citations of
text (document citations carry no URL and are not sources).

The OpenAI-style payload is translated by ``anthropic_payload.build_body``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator
from typing import Any

from bfstream.config import ServiceConfig
from bfstream.errors import ProviderError
from bfstream.providers.anthropic_payload import build_body
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
    source_of,
)
from bfstream.providers.http import Outbound, ProviderClient, error_message, iter_sse, open_stream, outbound, post_json
from bfstream.providers.translation import with_provider_args
from bfstream.scrub import scrub
from bfstream.text import provider_json

ANTHROPIC_VERSION = "2023-06-01"

# providerArgs may use OpenAI's words for these.
_ARG_ALIASES = {"max_completion_tokens": "max_tokens", "stop": "stop_sequences"}

# pause_turn: a server tool (web search...) paused a long turn; the answer so far is complete as far as
# the caller can tell, and OpenAI has no word for "resume me", so it reads as a normal stop.
_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: Any) -> str | None:
    """Anthropic's stop_reason in OpenAI's words; an unknown future value passes as it is."""
    if stop_reason is None:
        return None
    return _FINISH_REASONS.get(stop_reason, stop_reason if isinstance(stop_reason, str) else None)


def usage_of(usage: Any) -> dict[str, int] | None:
    """OpenAI's usage from Anthropic's: its input total is ``input_tokens`` plus both cache counts."""
    if not isinstance(usage, dict):
        return None

    def count(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) else 0

    prompt = count("input_tokens") + count("cache_creation_input_tokens") + count("cache_read_input_tokens")
    completion = count("output_tokens")
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


# ---- the HTTP calls -----------------------------------------------------------------------------------


def _request(request: ChatRequest, service: ServiceConfig, stream: bool) -> Outbound:
    body = build_body(request.payload, stream=stream, max_tokens=service.max_tokens)
    body = with_provider_args(body, request.provider_args, _ARG_ALIASES)
    headers = {
        "anthropic-version": ANTHROPIC_VERSION,
        "accept": "text/event-stream" if stream else "application/json",
        **service.headers,  # e.g. anthropic-beta, or a newer anthropic-version
    }
    if request.api_key:
        headers["x-api-key"] = request.api_key
    url = (service.base_url or "").rstrip("/") + "/v1/messages"
    return outbound(url, headers, body, service.timeouts.connect)


def _scrubbed(value: Any, api_key: str | None) -> Any:
    return json.loads(scrub(json.dumps(value), api_key))


def _stream_error(data: Any, raw: str, api_key: str | None) -> ProviderError:
    inner = data.get("error") if isinstance(data, dict) else None
    code = inner.get("type") if isinstance(inner, dict) else None
    message = error_message(data) if isinstance(data, dict) else None
    message = scrub(message or raw.strip() or "The provider reported an error mid-stream", api_key)
    details = _scrubbed(inner, api_key) if inner is not None else scrub(raw, api_key)
    return ProviderError(message, code=code if isinstance(code, str) and code else 502, details=details)


class _ToolUses:
    """tool_use blocks by index: input fragments until ``content_block_stop``, then a complete call."""

    def __init__(self) -> None:
        self._open: dict[int, dict[str, Any]] = {}
        self.done: list[ToolCall] = []

    def start(self, index: int, block: dict[str, Any]) -> None:
        self._open[index] = {
            "id": block.get("id"),
            "name": block.get("name") or "",
            "input": block.get("input"),
            "json": [],
        }

    def add(self, index: int, fragment: Any) -> None:
        if index in self._open and isinstance(fragment, str):
            self._open[index]["json"].append(fragment)

    def stop(self, index: int) -> None:
        block = self._open.pop(index, None)
        if block is None:
            return
        arguments = "".join(block["json"])
        if not arguments:
            # No fragments: the input came whole in content_block_start, or the tool takes none.
            start_input = block["input"]
            arguments = json.dumps(start_input, ensure_ascii=False) if isinstance(start_input, dict) else "{}"
        self.done.append(ToolCall(id=block["id"], name=block["name"], arguments=arguments))


def _sources(block: dict[str, Any]) -> Sources | None:
    """The web search results of a ``web_search_tool_result`` block (an error result has none)."""
    results = block.get("content")
    found = [
        source
        for result in (results if isinstance(results, list) else [])
        if isinstance(result, dict) and result.get("type") == "web_search_result"
        and (source := source_of(result.get("url"), result.get("title"))) is not None
    ]  # fmt: skip
    return Sources(found) if found else None


def _cited(citation: Any) -> Sources | None:
    if not isinstance(citation, dict) or citation.get("type") != "web_search_result_location":
        return None
    source = source_of(citation.get("url"), citation.get("title"), citation.get("cited_text"))
    return Sources([source]) if source is not None else None


def _index(data: dict[str, Any]) -> int:
    index = data.get("index")
    return index if isinstance(index, int) else -1


async def stream_chat(
    request: ChatRequest, client: ProviderClient, service: ServiceConfig
) -> AsyncGenerator[ProviderEvent, None]:
    http_request = _request(request, service, stream=True)
    async with open_stream(client, http_request, service.timeouts, request.api_key) as chunks:
        yield Started(model=request.model)
        tools = _ToolUses()
        # Signed thinking blocks, kept whole: with tools, Anthropic wants them back in the next turn.
        thinking: dict[int, dict[str, Any]] = {}
        usage: dict[str, Any] = {}
        stop_reason: Any = None
        async for event in iter_sse(chunks, service):
            try:
                data = provider_json(event.data)
            except ValueError:
                data = None
            # The event name and the data's type agree on Anthropic; a proxy may drop either.
            kind = event.event if event.event != "message" else (data.get("type") if isinstance(data, dict) else None)
            if kind == "error":
                raise _stream_error(data, event.data, request.api_key)
            if not isinstance(data, dict):
                continue
            if kind == "message_start":
                message = data.get("message")
                if isinstance(message, dict) and isinstance(message.get("usage"), dict):
                    usage.update(message["usage"])
            elif kind == "content_block_start":
                block = data.get("content_block")
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "tool_use":
                    tools.start(_index(data), block)
                elif block.get("type") == "thinking":
                    thinking[_index(data)] = {"type": "thinking", "thinking": "", "signature": ""}
                elif block.get("type") == "redacted_thinking":
                    thinking[_index(data)] = dict(block)
                    yield Reasoning("", redacted=True)
                elif block.get("type") == "web_search_tool_result" and (found := _sources(block)) is not None:
                    yield found
                elif block.get("type") == "text" and isinstance(block.get("text"), str) and block["text"]:
                    yield Delta(block["text"])  # documented as empty at start; kept should that change
            elif kind == "content_block_delta":
                delta = data.get("delta")
                if not isinstance(delta, dict):
                    continue
                if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str) and delta["text"]:
                    yield Delta(delta["text"])
                elif delta.get("type") == "input_json_delta":
                    tools.add(_index(data), delta.get("partial_json"))
                elif delta.get("type") in ("thinking_delta", "signature_delta") and _index(data) in thinking:
                    key = "thinking" if delta["type"] == "thinking_delta" else "signature"
                    if isinstance(delta.get(key), str):
                        thinking[_index(data)][key] += delta[key]
                        if key == "thinking" and delta[key]:
                            yield Reasoning(delta[key])
                elif delta.get("type") == "citations_delta" and (cited := _cited(delta.get("citation"))) is not None:
                    yield cited
            elif kind == "content_block_stop":
                tools.stop(_index(data))
            elif kind == "message_delta":
                delta = data.get("delta")
                if isinstance(delta, dict) and delta.get("stop_reason") is not None:
                    stop_reason = delta["stop_reason"]
                if isinstance(data.get("usage"), dict):
                    # Cumulative counts: later values replace earlier ones.
                    usage.update({k: v for k, v in data["usage"].items() if v is not None})
            elif kind == "message_stop":
                if tools.done:
                    yield ToolCalls(tools.done, [block for _, block in sorted(thinking.items())])
                yield Finished(finish_reason(stop_reason), usage_of(usage) if usage else None)
                return
            # ping and event types added after this was written: nothing to do
    raise ProviderError("The provider closed the stream before it was complete", details="no message_stop event")


async def complete(request: ChatRequest, client: ProviderClient, service: ServiceConfig) -> dict[str, Any]:
    """Anthropic's Message reshaped as an OpenAI chat.completion, so callers parse one format."""
    http_request = _request(request, service, stream=False)
    answer = await post_json(client, http_request, service, request.api_key)
    if not isinstance(answer, dict) or not isinstance(answer.get("content"), list):
        if isinstance(answer, dict) and answer.get("type") == "error":
            raise _stream_error(answer, "", request.api_key)
        raise ProviderError(
            "The provider sent an answer that is not a message",
            details=scrub(json.dumps(answer)[:500], request.api_key),
        )
    texts: list[str] = []
    thoughts: list[str] = []
    thinking: list[dict[str, Any]] = []  # the signed blocks themselves, for a tool round to send back
    tool_calls: list[dict[str, Any]] = []
    for block in answer["content"]:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") in ("thinking", "redacted_thinking"):
            thinking.append(block)
            if isinstance(block.get("thinking"), str):
                thoughts.append(block["thinking"])
        elif block.get("type") == "tool_use":
            arguments = block.get("input") if isinstance(block.get("input"), dict) else {}
            function = {"name": block.get("name"), "arguments": json.dumps(arguments, ensure_ascii=False)}
            tool_calls.append({"id": block.get("id"), "type": "function", "function": function})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
        if thinking:
            message[THINKING] = thinking
    if request.include_reasoning and thoughts:
        message["reasoning_content"] = "".join(thoughts)
    return {
        "id": answer.get("id"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.get("model") or request.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(answer.get("stop_reason")),
            }
        ],
        "usage": usage_of(answer.get("usage")),
    }
