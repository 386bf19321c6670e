"""OpenAI's Responses API (``POST {base_url}/responses``), spoken to with a Chat Completions payload.

Wire format (streaming): named SSE events, ``event: <type>`` then ``data: <JSON with the same type>``,
each numbered by ``sequence_number``. ``response.created``/``in_progress`` carry the response skeleton;
each output item (a ``message``, a ``function_call``, a ``reasoning`` item, a built-in tool's call)
opens with ``response.output_item.added`` and closes with ``response.output_item.done`` (the whole
item), keyed by ``output_index``. Between them: ``response.output_text.delta`` and
``response.refusal.delta`` for a message's text, ``response.output_text.annotation.added`` for a
citation, ``response.function_call_arguments.delta``/``.done`` for a call's arguments,
``response.reasoning_summary_text.delta`` (and ``response.reasoning_text.delta`` on servers that show
the reasoning itself) for the model's thinking. The stream ends with ``response.completed``,
``response.incomplete`` (``incomplete_details.reason``) or ``response.failed`` (``response.error``),
each carrying the final response and its ``usage``; an ``error`` event reports a failure mid-stream.
There is no ``[DONE]``. OpenAI adds event types over time: those not named here are skipped.

The payload is translated by ``openai_responses_payload.build_body``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator
from typing import Any

from bfstream.config import ServiceConfig
from bfstream.errors import ProviderError
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
from bfstream.providers.http import Outbound, ProviderClient, iter_sse, open_stream, outbound, post_json
from bfstream.providers.openai_responses_payload import build_body, item_id_extra
from bfstream.scrub import scrub
from bfstream.text import provider_json

# incomplete_details.reason in OpenAI's Chat Completions words.
_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}

_REASONING_DELTAS = ("response.reasoning_summary_text.delta", "response.reasoning_text.delta")


def usage_of(usage: Any) -> dict[str, int] | None:
    """Chat Completions' three counts from the Responses ones (``input_tokens``, ``output_tokens``)."""
    if not isinstance(usage, dict):
        return None
    prompt, completion, total = (usage.get(k) for k in ("input_tokens", "output_tokens", "total_tokens"))
    prompt = prompt if type(prompt) is int else 0
    completion = completion if type(completion) is int else 0
    total = total if type(total) is int else prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def finish_reason(response: dict[str, Any], called: bool, refused: bool) -> str | None:
    """The finish reason of a completed or incomplete response: a refused answer is ``content_filter``,
    as Chat Completions has no word for a refusal (its ``refusal`` field says so beside ``stop``)."""
    if response.get("status") == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        return _INCOMPLETE.get(reason, reason) if isinstance(reason, str) else "length"
    if called:
        return "tool_calls"
    return "content_filter" if refused else "stop"


def _request(request: ChatRequest, service: ServiceConfig, stream: bool) -> Outbound:
    body = build_body(
        request.payload, stream=stream, include_reasoning=request.include_reasoning, provider_args=request.provider_args
    )
    headers = {"Accept": "text/event-stream" if stream else "application/json", **service.headers}
    if request.api_key:
        headers["Authorization"] = f"Bearer {request.api_key}"
    url = (service.base_url or "").rstrip("/") + "/responses"
    return outbound(url, headers, body, service.timeouts.connect)


def _error(inner: Any, raw: str, api_key: str | None) -> ProviderError:
    """An ``error`` event's or a failed response's error object (``code``, ``message``) as a ProviderError,
    every copy of the key taken out."""
    fields = inner if isinstance(inner, dict) else {}
    code = fields.get("code") or fields.get("type")
    message = fields.get("message")
    message = scrub(message if isinstance(message, str) and message else raw.strip() or "The provider failed", api_key)
    details = json.loads(scrub(json.dumps(fields), api_key)) if fields else scrub(raw, api_key)
    return ProviderError(message, code=code if isinstance(code, str | int) and code else 502, details=details)


def _event_error(data: Any, raw: str, api_key: str | None) -> ProviderError:
    """OpenAI documents the ``error`` event with its fields at the top; some servers nest them in ``error``."""
    if not isinstance(data, dict):
        return _error(None, raw, api_key)
    if isinstance(data.get("error"), dict):
        return _error(data["error"], raw, api_key)
    return _error({k: v for k, v in data.items() if k not in ("type", "sequence_number")}, raw, api_key)


class _Calls:
    """Function calls by output index (item ids may change, an index does not): the item from
    ``output_item.added``, replaced by the whole one ``output_item.done`` brings, with the argument
    fragments for a server that sends no whole item; reasoning items kept whole, in output order.
    The calls are taken once the response is over, when every one is complete."""

    def __init__(self) -> None:
        self._open: dict[Any, dict[str, Any]] = {}
        self.reasoning: list[dict[str, Any]] = []

    def add(self, key: Any, item: dict[str, Any]) -> None:
        self._open[key] = {"item": item, "arguments": []}

    def fragment(self, key: Any, delta: Any) -> None:
        if key in self._open and isinstance(delta, str):
            self._open[key]["arguments"].append(delta)

    def done(self, key: Any, item: dict[str, Any]) -> None:
        self._open.setdefault(key, {"arguments": []})["item"] = item

    def settle(self, response: dict[str, Any]) -> list[ToolCall]:
        """Every call, once the response is over. A server may list a call, or its reasoning, only in
        the final response and stream no event for it (LiteLLM's bridge to Chat Completions models
        does): those are taken from there."""
        output = response.get("output")
        output = [item for item in output if isinstance(item, dict)] if isinstance(output, list) else []
        seen = {call["item"].get("call_id") for call in self._open.values()}
        for i, item in enumerate(output):
            if item.get("type") == "function_call" and item.get("call_id") not in seen:
                self._open[("final", i)] = {"item": item, "arguments": []}
        if not self.reasoning:
            self.reasoning = [item for item in output if item.get("type") == "reasoning"]
        return self._take()

    def _take(self) -> list[ToolCall]:
        calls = []
        for call in self._open.values():
            item = call["item"]
            arguments = item.get("arguments")
            arguments = arguments if isinstance(arguments, str) and arguments else "".join(call["arguments"])
            call_id, name = item.get("call_id"), item.get("name")
            calls.append(
                ToolCall(
                    id=call_id if isinstance(call_id, str) else None,
                    name=name if isinstance(name, str) else "",
                    arguments=arguments or "{}",
                    extra=item_id_extra(item.get("id")),
                )
            )
        return calls


def _key(data: dict[str, Any]) -> Any:
    index = data.get("output_index")
    return index if isinstance(index, int) else data.get("item_id")


async def stream_chat(
    request: ChatRequest, client: ProviderClient, service: ServiceConfig
) -> AsyncGenerator[ProviderEvent, None]:
    http_request = _request(request, service, stream=True)
    async with open_stream(client, http_request, service.timeouts, request.api_key) as chunks:
        yield Started(model=request.model)
        calls = _Calls()
        refused = False
        thought_part: tuple[Any, ...] | None = None  # the reasoning part the last Reasoning came from
        async for event in iter_sse(chunks, service):
            try:
                data = provider_json(event.data)
            except ValueError:
                data = None
            kind = data.get("type") if isinstance(data, dict) else None
            kind = kind or (event.event if event.event != "message" else None)
            if kind == "error":
                raise _event_error(data, event.data, request.api_key)
            if not isinstance(data, dict):
                continue
            delta = data.get("delta")
            if kind in ("response.output_text.delta", "response.refusal.delta"):
                refused = refused or kind == "response.refusal.delta"
                if isinstance(delta, str) and delta:
                    yield Delta(delta)
            elif kind in _REASONING_DELTAS and isinstance(delta, str) and delta:
                part = (kind, _key(data), data.get("summary_index"), data.get("content_index"))
                if thought_part is not None and part != thought_part:
                    yield Reasoning("\n\n")  # summary parts are paragraphs: keep them apart
                thought_part = part
                yield Reasoning(delta)
            elif kind == "response.output_text.annotation.added":
                annotation = data.get("annotation")
                if isinstance(annotation, dict) and annotation.get("type") == "url_citation":
                    if (source := source_of(annotation.get("url"), annotation.get("title"))) is not None:
                        yield Sources([source])
            elif kind in ("response.output_item.added", "response.output_item.done"):
                item = data.get("item")
                if not isinstance(item, dict):
                    continue
                if item.get("type") == "function_call":
                    (calls.add if kind.endswith("added") else calls.done)(_key(data), item)
                elif item.get("type") == "reasoning" and kind.endswith("done"):
                    calls.reasoning.append(item)
            elif kind == "response.function_call_arguments.delta":
                calls.fragment(_key(data), delta)
            elif kind in ("response.completed", "response.incomplete"):
                response = data.get("response") if isinstance(data.get("response"), dict) else {}
                done = calls.settle(response)
                if done:
                    yield ToolCalls(done, calls.reasoning)
                yield Finished(finish_reason(response, bool(done), refused), usage_of(response.get("usage")))
                return
            elif kind == "response.failed":
                response = data.get("response")
                failure = response.get("error") if isinstance(response, dict) else None
                raise _error(failure, "The provider reported that the response failed", request.api_key)
            # response.created, content parts, the .done events, built-in tools' progress, and event
            # types added after this was written: nothing to relay
    raise ProviderError("The provider closed the stream before it was complete", details="no response.completed event")


def _message(output: list[Any], include_reasoning: bool) -> tuple[dict[str, Any], bool]:
    """The chat.completion message of a response's output items, and whether the model refused."""
    texts: list[str] = []
    refusals: list[str] = []
    annotations: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    thoughts: list[str] = []
    reasoning: list[dict[str, Any]] = []  # the items themselves, for a tool round to send back
    for item in output:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            for part in item.get("content") or []:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "output_text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                    for note in part.get("annotations") or []:
                        if isinstance(note, dict) and note.get("type") == "url_citation":
                            keys = ("start_index", "end_index", "title", "url")
                            annotations.append({"type": "url_citation", "url_citation": {k: note.get(k) for k in keys}})
                elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
                    refusals.append(part["refusal"])
        elif kind == "function_call":
            function = {"name": item.get("name"), "arguments": item.get("arguments") or "{}"}
            entry = {"id": item.get("call_id"), "type": "function", "function": function}
            tool_calls.append({**entry, **(item_id_extra(item.get("id")) or {})})
        elif kind == "reasoning":
            reasoning.append(item)
            for part in [*(item.get("summary") or []), *(item.get("content") or [])]:
                if isinstance(part, dict) and isinstance(part.get("text"), str) and part["text"]:
                    thoughts.append(part["text"])
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": "".join(refusals) if refusals else None,
    }
    if annotations:
        message["annotations"] = annotations
    if tool_calls:
        message["tool_calls"] = tool_calls
        if reasoning:
            message[THINKING] = reasoning
    if include_reasoning and thoughts:
        message["reasoning_content"] = "\n\n".join(thoughts)
    return message, bool(refusals)


async def complete(request: ChatRequest, client: ProviderClient, service: ServiceConfig) -> dict[str, Any]:
    """The Response reshaped as a Chat Completions ``chat.completion``, so callers parse one format."""
    http_request = _request(request, service, stream=False)
    answer = await post_json(client, http_request, service, request.api_key)
    if not isinstance(answer, dict) or not isinstance(answer.get("output"), list):
        if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
            raise _error(answer["error"], "", request.api_key)
        details = scrub(json.dumps(answer)[:500], request.api_key)
        raise ProviderError("The provider sent an answer that is not a response", details=details)
    if answer.get("status") == "failed":
        raise _error(answer.get("error"), "The provider reported that the response failed", request.api_key)
    message, refused = _message(answer["output"], request.include_reasoning)
    created = answer.get("created_at")
    return {
        "id": answer.get("id"),
        "object": "chat.completion",
        "created": int(created) if isinstance(created, int | float) else int(time.time()),
        "model": answer.get("model") or request.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(answer, "tool_calls" in message, refused),
            }
        ],
        "usage": usage_of(answer.get("usage")),
    }
