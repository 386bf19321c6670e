"""Anthropic Messages API (``POST /v1/messages``), spoken to with an OpenAI-style payload.

Wire format (streaming): named SSE events, ``event: <type>`` then ``data: <JSON with the same type>``:
``message_start`` (the message skeleton: model, ``usage.input_tokens`` and the cache counts), then per
content block ``content_block_start`` / ``content_block_delta``\\* / ``content_block_stop`` (blocks carry an
``index``; text comes as ``text_delta``, a ``tool_use`` block's input as ``input_json_delta`` fragments of one
JSON document, extended thinking as ``thinking_delta``/``signature_delta``), then ``message_delta``
(``stop_reason`` and *cumulative* ``usage.output_tokens``) and ``message_stop``, the end marker. ``ping``
events may come anywhere; an ``error`` event (``{"type": "error", "error": {"type", "message"}}``, e.g.
``overloaded_error``) ends a stream that already answered 200. Anthropic may add event types and says
clients must ignore those they do not know.

Request translation (``build_body``), OpenAI field → Anthropic field:

- ``system``/``developer`` messages → top-level ``system`` (after a ``system`` the payload already has);
- ``user``/``assistant`` content strings and ``text`` parts → text blocks (empty texts are left out, as
  Anthropic rejects empty text blocks); ``image_url`` parts → ``image`` blocks, base64 for ``data:`` URIs
  and ``url`` for http(s) URLs;
- assistant ``tool_calls`` (and the legacy ``function_call``) → ``tool_use`` blocks, ``input`` being the
  parsed ``arguments``; ``tool`` (and legacy ``function``) messages → ``tool_result`` blocks in a user
  turn. Consecutive turns of one role are merged into one, so tool results of parallel calls share a
  user message and come before any text that follows them, as Anthropic requires;
- ``tools`` (and legacy ``functions``) → ``{name, description, input_schema}``; ``tool_choice`` (and legacy
  ``function_call``) ``auto``/``none``/``required``/a named function → ``auto``/``none``/``any``/``tool``;
  ``parallel_tool_calls: false`` → ``disable_parallel_tool_use``. Without tools, no tool_choice is sent;
- ``max_completion_tokens`` or ``max_tokens`` → ``max_tokens`` (else the service's configured default, as
  Anthropic requires it); ``stop`` → ``stop_sequences``; ``user`` → ``metadata.user_id``;
  ``response_format`` ``json_schema`` → ``output_config.format``.

Passed through untouched: ``model``, ``temperature``, ``top_p``, and every field this module does not
name, so Anthropic-native ones (``top_k``, ``metadata``, ``thinking``, ``system``, ``stop_sequences``,
``output_config``, ``cache_control``, ``container``, ``mcp_servers``, ``service_tier`` ``auto`` or
``standard_only``...) work, and a misspelt one gets Anthropic's own 400. Content parts and tools that
are not OpenAI-shaped are taken for Anthropic blocks and pass through too.

Dropped, being OpenAI-only (Anthropic rejects unknown fields): see ``OPENAI_ONLY``.

Refused with ``ValidationFailed`` (nothing is sent): ``n`` above 1, ``response_format`` ``json_object``,
audio and file parts, image URLs that are neither http(s) nor base64 ``data:`` URIs of JPEG, PNG, GIF
or WebP, tool-call arguments that are not a JSON object, tool messages without ``tool_call_id``,
unknown roles.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from bfstream.config import ServiceConfig
from bfstream.errors import ProviderError
from bfstream.providers.events import ChatRequest, Delta, Finished, ProviderEvent, Started, ToolCall, ToolCalls
from bfstream.providers.http import error_message, iter_sse, open_stream, post_json, scrub
from bfstream.providers.translation import Problems, data_uri, tool_arguments

ANTHROPIC_VERSION = "2023-06-01"

OPENAI_ONLY = frozenset(
    {
        # bfstream's own fields, taken out by the API already; dropped again so no key can leak.
        "apiKey",
        "provider",
        "stream",
        # OpenAI sampling and output options Anthropic has no field for.
        "stream_options",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "seed",
        "store",
        "modalities",
        "audio",
        "prediction",
        "reasoning_effort",
        "verbosity",
        "web_search_options",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
    }
)

# Fields this module translates; everything else not in OPENAI_ONLY passes through.
_TRANSLATED = frozenset(
    {
        "messages",
        "tools",
        "functions",
        "tool_choice",
        "function_call",
        "parallel_tool_calls",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "user",
        "response_format",
        "n",
        "service_tier",
    }
)

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

_IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
_ANTHROPIC_TOOL_CHOICES = {"auto", "any", "tool", "none"}


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


# ---- request translation ------------------------------------------------------------------------------


def _text_block(text: str, part: dict[str, Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text}
    if part is not None and "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _image_block(url: Any, where: str, problems: Problems) -> dict[str, Any] | None:
    if not isinstance(url, str) or not url:
        problems.add(where, "an image_url part needs a url")
        return None
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    parsed = data_uri(url)
    if parsed is None:
        problems.add(where, "Anthropic takes images as http(s) URLs or base64 data: URIs")
        return None
    media_type, data = parsed
    media_type = "image/jpeg" if media_type == "image/jpg" else media_type
    if media_type not in _IMAGE_TYPES:
        problems.add(where, f"Anthropic accepts {', '.join(sorted(_IMAGE_TYPES))} images, not {media_type}")
        return None
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _content_blocks(content: Any, where: str, problems: Problems, *, images: bool = True) -> list[dict[str, Any]]:
    """A message's content (a string or OpenAI parts) as Anthropic content blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [_text_block(content)] if content else []
    if not isinstance(content, list):
        problems.add(where, "content must be a string or a list of parts")
        return []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}.{j}"
        if not isinstance(part, dict):
            problems.add(at, "a content part must be an object")
            continue
        kind = part.get("type")
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if isinstance(text, str) and text:
                blocks.append(_text_block(text, part))
            elif not isinstance(text, str):
                problems.add(f"{at}.{kind}", "must be a string")
        elif kind == "image_url" and images:
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if (block := _image_block(url, f"{at}.image_url", problems)) is not None:
                blocks.append(block)
        elif kind in ("image_url", "input_audio", "file"):
            problems.add(at, f"Anthropic cannot take {kind} parts here")
        else:
            blocks.append(part)  # an Anthropic block (image, document, ...) sent as such
    return blocks


class _LegacyCalls:
    """The deprecated functions API has no call ids; Anthropic pairs tool_use and tool_result by id.

    Each assistant ``function_call`` gets a made-up id, and the next ``function`` message naming that
    function answers it."""

    def __init__(self) -> None:
        self._open: list[tuple[str, str]] = []
        self._count = 0

    def call(self, name: str) -> str:
        self._count += 1
        call_id = f"toolu_legacy_{self._count}"
        self._open.append((call_id, name))
        return call_id

    def answer(self, name: Any) -> str | None:
        for i, (call_id, called) in enumerate(self._open):
            if called == name:
                del self._open[i]
                return call_id
        return None


def _assistant_blocks(message: dict[str, Any], where: str, problems: Problems, legacy: _LegacyCalls) -> list[Any]:
    blocks = _content_blocks(message.get("content"), f"{where}.content", problems, images=False)
    tool_calls = message.get("tool_calls") or []
    if not isinstance(tool_calls, list):
        problems.add(f"{where}.tool_calls", "must be a list")
        tool_calls = []
    for k, call in enumerate(tool_calls):
        at = f"{where}.tool_calls.{k}"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            problems.add(at, "a tool call needs function.name")
            continue
        if not isinstance(call.get("id"), str) or not call["id"]:
            problems.add(f"{at}.id", "a tool call needs its id, which Anthropic pairs with the tool result")
            continue
        arguments = tool_arguments(function.get("arguments"), f"{at}.function.arguments", problems)
        blocks.append({"type": "tool_use", "id": call["id"], "name": function["name"], "input": arguments})
    function_call = message.get("function_call")
    if isinstance(function_call, dict) and isinstance(function_call.get("name"), str):
        arguments = tool_arguments(function_call.get("arguments"), f"{where}.function_call.arguments", problems)
        call_id = legacy.call(function_call["name"])
        blocks.append({"type": "tool_use", "id": call_id, "name": function_call["name"], "input": arguments})
    return blocks


def _tool_result(tool_use_id: str, content: Any, where: str, problems: Problems) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id}
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content is not None:
        if parts := _content_blocks(content, f"{where}.content", problems):
            block["content"] = parts
    return block


def _translate_messages(messages: Any, problems: Problems) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, alternating turns) from OpenAI's message list."""
    system: list[dict[str, Any]] = []
    turns: list[tuple[str, list[Any]]] = []
    legacy = _LegacyCalls()
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        where = f"payload.messages.{i}"
        if not isinstance(message, dict):
            problems.add(where, "a message must be an object")
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            system += _content_blocks(message.get("content"), f"{where}.content", problems, images=False)
            continue
        if role == "user":
            blocks = _content_blocks(message.get("content"), f"{where}.content", problems)
        elif role == "assistant":
            blocks = _assistant_blocks(message, where, problems, legacy)
        elif role == "tool":
            tool_call_id = message.get("tool_call_id")
            if not isinstance(tool_call_id, str) or not tool_call_id:
                problems.add(f"{where}.tool_call_id", "a tool message needs the tool_call_id it answers")
                continue
            role, blocks = "user", [_tool_result(tool_call_id, message.get("content"), where, problems)]
        elif role == "function":
            call_id = legacy.answer(message.get("name"))
            if call_id is None:
                problems.add(f"{where}.name", "no earlier assistant function_call names this function")
                continue
            role, blocks = "user", [_tool_result(call_id, message.get("content"), where, problems)]
        else:
            problems.add(f"{where}.role", f"unknown role {role!r}")
            continue
        if not blocks:
            continue  # Anthropic rejects empty turns; an empty one says nothing anyway
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    out = []
    for role, blocks in turns:
        plain = len(blocks) == 1 and blocks[0].keys() == {"type", "text"} and blocks[0]["type"] == "text"
        out.append({"role": role, "content": blocks[0]["text"] if plain else blocks})
    return system, out


def _tool_definition(function: dict[str, Any], where: str, problems: Problems) -> dict[str, Any] | None:
    name = function.get("name")
    if not isinstance(name, str) or not name:
        problems.add(f"{where}.name", "a tool needs a name")
        return None
    tool: dict[str, Any] = {"name": name}
    if isinstance(function.get("description"), str):
        tool["description"] = function["description"]
    schema = function.get("parameters")
    tool["input_schema"] = schema if isinstance(schema, dict) and schema else {"type": "object", "properties": {}}
    if isinstance(function.get("strict"), bool):
        tool["strict"] = function["strict"]
    return tool


def _translate_tools(payload: dict[str, Any], problems: Problems) -> list[Any]:
    tools: list[Any] = []
    for key in ("tools", "functions"):
        given = payload.get(key)
        if given is None:
            continue
        if not isinstance(given, list):
            problems.add(f"payload.{key}", "must be a list")
            continue
        for i, tool in enumerate(given):
            where = f"payload.{key}.{i}"
            if key == "functions" and isinstance(tool, dict):
                definition = _tool_definition(tool, where, problems)
            elif isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("function"), dict):
                definition = _tool_definition(tool["function"], f"{where}.function", problems)
            else:
                definition = tool  # an Anthropic tool (custom or server tool) sent as such
            if definition is not None:
                tools.append(definition)
    return tools


def _translate_tool_choice(payload: dict[str, Any], problems: Problems) -> dict[str, Any] | None:
    key = "tool_choice" if payload.get("tool_choice") is not None else "function_call"
    choice = payload.get(key)
    where = f"payload.{key}"
    result: dict[str, Any] | None
    if choice is None:
        result = None
    elif choice in ("auto", "none"):
        result = {"type": choice}
    elif choice in ("required", "any"):
        result = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict) and choice["function"].get("name"):
        result = {"type": "tool", "name": choice["function"]["name"]}
    elif isinstance(choice, dict) and key == "function_call" and isinstance(choice.get("name"), str):
        result = {"type": "tool", "name": choice["name"]}
    elif isinstance(choice, dict) and choice.get("type") in _ANTHROPIC_TOOL_CHOICES:
        result = dict(choice)
    else:
        problems.add(where, "must be auto, none, required or a named function")
        return None
    if payload.get("parallel_tool_calls") is False:
        result = result or {"type": "auto"}
        if result["type"] != "none":
            result["disable_parallel_tool_use"] = True
    return result


def _translate_response_format(body: dict[str, Any], value: Any, problems: Problems) -> None:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return
    if kind == "json_schema" and isinstance(value.get("json_schema"), dict):
        schema = value["json_schema"].get("schema")
        if isinstance(schema, dict):
            config = body.get("output_config")
            config = dict(config) if isinstance(config, dict) else {}
            config["format"] = {"type": "json_schema", "schema": schema}
            body["output_config"] = config
            return
    problems.add(
        "payload.response_format", "Anthropic only supports json_schema (with a schema) or text response formats"
    )


def _system_blocks(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [_text_block(value)] if value else []
    return list(value) if isinstance(value, list) else []


def build_body(payload: dict[str, Any], *, stream: bool, max_tokens: int) -> dict[str, Any]:
    """The Messages API body for an OpenAI-style payload; raises ``ValidationFailed`` for what cannot map.

    ``max_tokens`` is the configured default, sent when the payload has no limit (Anthropic requires one)."""
    problems = Problems("Anthropic")
    body = {k: v for k, v in payload.items() if k not in OPENAI_ONLY and k not in _TRANSLATED}

    system, messages = _translate_messages(payload.get("messages"), problems)
    system = _system_blocks(payload.get("system")) + system
    body.pop("system", None)
    if system:
        first = system[0]
        plain = len(system) == 1 and isinstance(first, dict) and first.keys() == {"type", "text"}
        body["system"] = first["text"] if plain else system
    body["messages"] = messages

    limit = payload.get("max_completion_tokens")
    limit = payload.get("max_tokens") if limit is None else limit
    body["max_tokens"] = max_tokens if limit is None else limit

    stop = payload.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if isinstance(stops, list) and all(isinstance(s, str) for s in stops):
            native = body.get("stop_sequences")
            body["stop_sequences"] = list(dict.fromkeys([*(native if isinstance(native, list) else []), *stops]))
        else:
            problems.add("payload.stop", "must be a string or a list of strings")

    user = payload.get("user")
    if isinstance(user, str) and user:
        metadata = body.get("metadata")
        metadata = dict(metadata) if isinstance(metadata, dict) else {}
        metadata.setdefault("user_id", user)
        body["metadata"] = metadata

    if payload.get("service_tier") in ("auto", "standard_only"):
        body["service_tier"] = payload["service_tier"]  # OpenAI's other tiers mean nothing to Anthropic

    n = payload.get("n")
    if n is not None and n != 1:
        problems.add("payload.n", "Anthropic returns one answer per request")

    if payload.get("response_format") is not None:
        _translate_response_format(body, payload["response_format"], problems)

    tools = _translate_tools(payload, problems)
    choice = _translate_tool_choice(payload, problems)
    if tools:
        body["tools"] = tools
        if choice is not None:
            body["tool_choice"] = choice

    problems.raise_if_any()
    body["stream"] = stream
    return body


# ---- the HTTP calls -----------------------------------------------------------------------------------


def _request(client: httpx.AsyncClient, request: ChatRequest, service: ServiceConfig, stream: bool) -> httpx.Request:
    body = build_body(request.payload, stream=stream, max_tokens=service.max_tokens)
    headers = httpx.Headers(
        {
            "anthropic-version": ANTHROPIC_VERSION,
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
        }
    )
    headers.update(service.headers)  # e.g. anthropic-beta, or a newer anthropic-version
    if request.api_key:
        headers["x-api-key"] = request.api_key
    url = (service.base_url or "").rstrip("/") + "/v1/messages"
    timeout = httpx.Timeout(None, connect=service.timeouts.connect)
    return client.build_request("POST", url, json=body, headers=headers, timeout=timeout)


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


def _index(data: dict[str, Any]) -> int:
    index = data.get("index")
    return index if isinstance(index, int) else -1


async def stream_chat(
    request: ChatRequest, client: httpx.AsyncClient, service: ServiceConfig
) -> AsyncIterator[ProviderEvent]:
    http_request = _request(client, request, service, stream=True)
    async with open_stream(client, http_request, service.timeouts, request.api_key) as chunks:
        yield Started(model=request.model)
        tools = _ToolUses()
        usage: dict[str, Any] = {}
        stop_reason: Any = None
        async for event in iter_sse(chunks):
            try:
                data = json.loads(event.data)
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
                # thinking_delta, signature_delta, citations_delta: not answer text
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
                    yield ToolCalls(tools.done)
                yield Finished(finish_reason(stop_reason), usage_of(usage) if usage else None)
                return
            # ping and event types added after this was written: nothing to do
    raise ProviderError("The provider closed the stream before it was complete", details="no message_stop event")


async def complete(request: ChatRequest, client: httpx.AsyncClient, service: ServiceConfig) -> dict[str, Any]:
    """Anthropic's Message reshaped as an OpenAI chat.completion, so callers parse one format."""
    http_request = _request(client, request, service, stream=False)
    answer = await post_json(client, http_request, service.timeouts, request.api_key)
    if not isinstance(answer, dict) or not isinstance(answer.get("content"), list):
        if isinstance(answer, dict) and answer.get("type") == "error":
            raise _stream_error(answer, "", request.api_key)
        raise ProviderError(
            "The provider sent an answer that is not a message",
            details=scrub(json.dumps(answer)[:500], request.api_key),
        )
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in answer["content"]:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            arguments = block.get("input") if isinstance(block.get("input"), dict) else {}
            function = {"name": block.get("name"), "arguments": json.dumps(arguments, ensure_ascii=False)}
            tool_calls.append({"id": block.get("id"), "type": "function", "function": function})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
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
