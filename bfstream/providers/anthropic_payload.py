"""The OpenAI-style payload rewritten for Anthropic's Messages API.

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

``temperature`` above 1 (OpenAI allows up to 2, Anthropic up to 1) is capped at 1.

Passed through untouched: ``model``, ``temperature`` up to 1, ``top_p``, and every field this module does not
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

from typing import Any

from bfstream.providers.translation import (
    LegacyCalls,
    Problems,
    answered_call,
    assistant_calls,
    data_uri,
    each_message,
    each_object,
    tool_arguments,
    translate_tools,
)

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

_IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
_ANTHROPIC_TOOL_CHOICES = {"auto", "any", "tool", "none"}


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
    for at, part in each_object(content, where, problems, "a content part"):
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


def _assistant_blocks(message: dict[str, Any], where: str, problems: Problems, legacy: LegacyCalls) -> list[Any]:
    blocks = _content_blocks(message.get("content"), f"{where}.content", problems, images=False)
    for call in assistant_calls(message, where, problems, legacy):
        arguments = tool_arguments(call.arguments, call.where, problems)
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
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
    legacy = LegacyCalls("toolu_legacy_")
    listed = messages if isinstance(messages, list) else []
    for where, message in each_message(listed, problems):
        role = message.get("role")
        if role in ("system", "developer"):
            system += _content_blocks(message.get("content"), f"{where}.content", problems, images=False)
            continue
        if role == "user":
            blocks = _content_blocks(message.get("content"), f"{where}.content", problems)
        elif role == "assistant":
            blocks = _assistant_blocks(message, where, problems, legacy)
        elif role in ("tool", "function"):
            if (call_id := answered_call(message, where, problems, legacy)) is None:
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

    temperature = payload.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool) and temperature > 1:
        # OpenAI's scale runs to 2, Anthropic's to 1: cap rather than have Anthropic refuse the request.
        body["temperature"] = 1.0

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

    # A tool not in OpenAI's shape is taken for Anthropic's own (custom or server tool) and sent as it is.
    tools = translate_tools(payload, problems, lambda function, where: _tool_definition(function, where, problems))
    choice = _translate_tool_choice(payload, problems)
    if tools:
        body["tools"] = tools
        if choice is not None:
            body["tool_choice"] = choice

    problems.raise_if_any()
    body["stream"] = stream
    return body
