"""OpenAI Chat Completions (and every server that speaks it).

Wire format: ``data: <chat.completion.chunk JSON>`` events ending with ``data: [DONE]``. Text is in
``choices[0].delta.content``; tool calls arrive as ``delta.tool_calls`` fragments keyed by
``index`` (id and name in the first, the arguments JSON spread over the rest); old models use
``delta.function_call`` instead. With ``stream_options.include_usage`` a last chunk carries
``usage`` and an empty ``choices``. An error after the headers comes as ``data: {"error": ...}``.

Reasoning: OpenAI's own Chat Completions never shows it, but compatible servers put it in the delta
as ``reasoning_content`` (DeepSeek, vLLM, llama.cpp) or ``reasoning`` (OpenRouter, Ollama, vLLM's
newer releases). It is never sent back: DeepSeek refuses a request whose messages carry it. Sources:
search models attach ``annotations`` of type ``url_citation`` to the delta (or the message).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

from bfstream.config import ServiceConfig
from bfstream.errors import ProviderError
from bfstream.providers.events import (
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

# Compatible servers and legacy models use other words for OpenAI's finish reasons.
_FINISH_REASONS = {"function_call": "tool_calls", "end_turn": "stop", "eos": "stop", "max_tokens": "length"}


def _usage(usage: dict[str, Any] | None) -> dict[str, int] | None:
    """The three counts every provider reports; OpenAI's detail objects (cached tokens...) are left out."""
    if usage is None:
        return None
    counts = {k: v for k in ("prompt_tokens", "completion_tokens", "total_tokens") if type(v := usage.get(k)) is int}
    prompt, completion = counts.get("prompt_tokens", 0), counts.get("completion_tokens", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": counts.get("total_tokens", prompt + completion),
    }


def build_body(payload: dict[str, Any], *, stream: bool, include_usage: bool) -> dict[str, Any]:
    """The payload as the caller gave it, minus what OpenAI rejects.

    Empty ``functions``/``tools`` arrays are dropped: OpenAI answers 400 to them, and the
    contract's own example sends ``"functions": []``."""
    body = {k: v for k, v in payload.items() if not (k in ("functions", "tools") and v == [])}
    body["stream"] = stream
    if stream and include_usage:
        options = body.get("stream_options")
        body["stream_options"] = {"include_usage": True, **(options if isinstance(options, dict) else {})}
    elif not stream:
        body.pop("stream_options", None)
    return body


def _request(request: ChatRequest, service: ServiceConfig, stream: bool) -> Outbound:
    headers = {"Accept": "text/event-stream" if stream else "application/json", **service.headers}
    if request.api_key:
        headers["Authorization"] = f"Bearer {request.api_key}"
    body = build_body(request.payload, stream=stream, include_usage=service.stream_options)
    body = with_provider_args(body, request.provider_args)
    url = (service.base_url or "").rstrip("/") + "/chat/completions"
    return outbound(url, headers, body, service.timeouts.connect)


def _thinking(delta: dict[str, Any]) -> str:
    """The reasoning a compatible server put in a delta or a message, under either name."""
    for key in ("reasoning_content", "reasoning"):
        if isinstance(text := delta.get(key), str) and text:
            return text
    return ""


def _cited(annotations: Any) -> Sources | None:
    found = [
        source
        for note in (annotations if isinstance(annotations, list) else [])
        if isinstance(note, dict) and note.get("type") == "url_citation"
        and isinstance(cite := note.get("url_citation"), dict)
        and (source := source_of(cite.get("url"), cite.get("title"))) is not None
    ]  # fmt: skip
    return Sources(found) if found else None


class _ToolCallBuffer:
    """Reassembles tool calls from their fragments, in index order."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}

    def add_tool_calls(self, fragments: list[Any]) -> None:
        for fragment in fragments:
            if not isinstance(fragment, dict):
                continue
            index = fragment.get("index")
            if not isinstance(index, int):
                # Some compatible servers send whole calls without an index: one call per fragment.
                index = len(self._calls)
            self._add(index, fragment.get("id"), fragment.get("function"))

    def add_function_call(self, fragment: Any) -> None:
        self._add(0, None, fragment)

    def _add(self, index: int, call_id: Any, function: Any) -> None:
        call = self._calls.setdefault(index, {"id": None, "name": "", "arguments": []})
        if isinstance(call_id, str) and call_id:
            call["id"] = call_id
        if isinstance(function, dict):
            if isinstance(function.get("name"), str) and not call["name"]:
                call["name"] = function["name"]
            if isinstance(function.get("arguments"), str):
                call["arguments"].append(function["arguments"])

    def take(self) -> ToolCalls | None:
        if not self._calls:
            return None
        calls = [
            ToolCall(id=c["id"], name=c["name"], arguments="".join(c["arguments"]))
            for _, c in sorted(self._calls.items())
        ]
        self._calls.clear()
        return ToolCalls(calls)


async def stream_chat(
    request: ChatRequest, client: ProviderClient, service: ServiceConfig
) -> AsyncGenerator[ProviderEvent, None]:
    http_request = _request(request, service, stream=True)
    async with open_stream(client, http_request, service.timeouts, request.api_key) as chunks:
        yield Started(model=request.model)
        tools = _ToolCallBuffer()
        finish_reason: str | None = None
        usage: dict[str, Any] | None = None
        async for event in iter_sse(chunks, service):
            if event.data == "[DONE]":
                if pending := tools.take():
                    yield pending
                yield Finished(_FINISH_REASONS.get(finish_reason or "", finish_reason), _usage(usage))
                return
            try:
                chunk = provider_json(event.data)
            except ValueError:
                chunk = None
            if event.event == "error" or (isinstance(chunk, dict) and "error" in chunk):
                raise _stream_error(chunk if isinstance(chunk, dict) else {"error": event.data}, request.api_key)
            if not isinstance(chunk, dict):
                continue  # a stray non-JSON line from a proxy is not ours to judge
            if isinstance(chunk.get("usage"), dict):
                usage = chunk["usage"]
            # With n > 1 every chunk carries one choice, tagged by index: relay the first answer only.
            choice = next(
                (c for c in chunk.get("choices") or [] if isinstance(c, dict) and c.get("index", 0) == 0), None
            )
            if choice is None:
                continue
            delta = choice.get("delta") or {}
            if thought := _thinking(delta):
                yield Reasoning(thought)
            text = delta.get("content") or delta.get("refusal")
            if isinstance(text, str) and text:
                yield Delta(text)
            if (cited := _cited(delta.get("annotations"))) is not None:
                yield cited
            if isinstance(delta.get("tool_calls"), list):
                tools.add_tool_calls(delta["tool_calls"])
            if delta.get("function_call") is not None:
                tools.add_function_call(delta["function_call"])
            if choice.get("finish_reason"):
                finish_reason = choice["finish_reason"]
                if pending := tools.take():
                    yield pending
    raise ProviderError("The provider closed the stream before it was complete", details="no [DONE] marker")


def _stream_error(chunk: dict[str, Any], api_key: str | None) -> ProviderError:
    inner = chunk.get("error")
    code = None
    if isinstance(inner, dict):
        code = inner.get("code") or inner.get("type")
    message = scrub(error_message(chunk) or "The provider reported an error mid-stream", api_key)
    return ProviderError(
        message,
        code=code if isinstance(code, str | int) else 502,
        details=json.loads(scrub(json.dumps(inner), api_key)),
    )


async def complete(request: ChatRequest, client: ProviderClient, service: ServiceConfig) -> Any:
    """The chat.completion object exactly as OpenAI sent it; asked for reasoning, a server that calls
    it ``reasoning`` gets it copied to ``reasoning_content`` too, where every other adapter puts it."""
    http_request = _request(request, service, stream=False)
    answer = await post_json(client, http_request, service, request.api_key)
    if request.include_reasoning and isinstance(answer, dict):
        for choice in answer.get("choices") or []:
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict) and "reasoning_content" not in message and (thought := _thinking(message)):
                message["reasoning_content"] = thought
    return answer
