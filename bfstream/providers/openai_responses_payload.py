"""The Chat Completions payload rewritten for OpenAI's Responses API (what maps where: ``docs/providers.md``).

``system``/``developer`` messages become ``instructions`` and the rest ``input`` items: messages,
``function_call`` and ``function_call_output`` items, and the ``reasoning`` items a tool round carries
back (first in the assistant message's ``content``, as ``ToolCalls.thinking`` put them there). Function
tools are flattened, ``max_tokens`` is ``max_output_tokens``, ``response_format`` is ``text.format``.
Fields the Responses API has and Chat Completions lacks (``reasoning``, ``text``, ``include``, ``store``,
``previous_response_id``, ``truncation``, ...) pass through, as does every field this module does not
name, so a misspelt one gets OpenAI's own 400.
"""

from __future__ import annotations

import json
from typing import Any

from bfstream.providers.translation import (
    LegacyCalls,
    Problems,
    answered_call,
    assistant_calls,
    each_message,
    each_object,
    merged,
    translate_tools,
    with_provider_args,
)

# Chat Completions fields the Responses API has no use for: dropped, since sending them is a 400.
# The first three are bfstream's own, taken out by the API already (dropped again so no key can leak);
# the rest only tune sampling or ask for what bfstream does not relay (logprobs).
DROPPED = frozenset(
    {
        "apiKey",
        "provider",
        "stream",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "logprobs",
        "prediction",
    }
)

# Fields this module translates (or refuses); everything else not in DROPPED passes through.
_TRANSLATED = frozenset(
    {
        "messages",
        "input",
        "instructions",
        "tools",
        "functions",
        "web_search_options",
        "tool_choice",
        "function_call",
        "max_tokens",
        "max_completion_tokens",
        "response_format",
        "verbosity",
        "reasoning_effort",
        "stream_options",
        "stop",
        "n",
        "modalities",
        "audio",
    }
)

# providerArgs may use Chat Completions' words for these.
_ARG_ALIASES = {"max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens"}

ENCRYPTED_REASONING = "reasoning.encrypted_content"

# The tool-call key under which a streamed call keeps its ``function_call`` item id (``fc_...``): OpenAI
# pairs a reasoning item sent back with the item that followed it by that id (see ``_assistant_items``).
ITEM_ID_KEY = "extra_content"


def item_id_extra(item_id: Any) -> dict[str, Any] | None:
    """What a ``ToolCall`` carries to be sent back as its ``function_call`` item's ``id``."""
    return {ITEM_ID_KEY: {"openai": {"item_id": item_id}}} if isinstance(item_id, str) and item_id else None


def _item_id(call: dict[str, Any]) -> str | None:
    extra = call.get(ITEM_ID_KEY)
    openai = extra.get("openai") if isinstance(extra, dict) else None
    item_id = openai.get("item_id") if isinstance(openai, dict) else None
    return item_id if isinstance(item_id, str) and item_id else None


# ---- content ------------------------------------------------------------------------------------------


def _image(part: dict[str, Any], where: str, problems: Problems) -> dict[str, Any] | None:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url.startswith(("https://", "http://", "data:")):
        problems.add(f"{where}.image_url", "an image is an http(s) URL or a data: URI")
        return None
    detail = image.get("detail") if isinstance(image, dict) else None
    return {"type": "input_image", "image_url": url, "detail": detail if isinstance(detail, str) else "auto"}


def _file(part: dict[str, Any], where: str, problems: Problems) -> dict[str, Any] | None:
    given = part.get("file")
    if not isinstance(given, dict) or not any(isinstance(given.get(k), str) for k in ("file_id", "file_data")):
        problems.add(f"{where}.file", "a file part needs file_id or file_data")
        return None
    return {"type": "input_file", **{k: v for k, v in given.items() if k in ("file_id", "file_data", "filename")}}


def _parts(
    content: Any, where: str, problems: Problems, *, assistant: bool = False, reasoning: list[Any] | None = None
) -> str | list[Any] | None:
    """A message's content in the Responses shape: a string stays one; Chat Completions parts become
    ``input_*`` parts (``output_text``/``refusal`` in an assistant message, whose ``reasoning`` items are
    moved to ``reasoning``). Parts already in the Responses shape pass."""
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        problems.add(where, "content must be a string or a list of parts")
        return None
    out: list[Any] = []
    for at, part in each_object(content, where, problems, "a content part"):
        kind = part.get("type")
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if not isinstance(text, str):
                problems.add(f"{at}.{kind}", "must be a string")
            elif kind == "refusal" and not assistant:
                problems.add(at, "only an assistant message can hold a refusal")
            elif kind == "refusal":
                out.append({"type": "refusal", "refusal": text})
            else:
                out.append({"type": "output_text" if assistant else "input_text", "text": text})
        elif kind == "reasoning" and reasoning is not None:
            reasoning.append(part)
        elif kind in ("image_url", "file", "input_audio") and assistant:
            problems.add(at, f"an assistant message cannot hold {kind} parts")
        elif kind == "image_url":
            if (image := _image(part, at, problems)) is not None:
                out.append(image)
        elif kind == "file":
            if (file := _file(part, at, problems)) is not None:
                out.append(file)
        elif kind == "input_audio":
            problems.add(at, "the Responses API takes no audio input")
        else:
            out.append(part)
    return out


def _instructions(content: Any, where: str, problems: Problems) -> str:
    """A system message's text: ``instructions`` is one string."""
    parts = _parts(content, where, problems)
    if not isinstance(parts, list):
        return parts or ""
    texts = []
    for j, part in enumerate(parts):
        if isinstance(part, dict) and part.get("type") == "input_text":
            texts.append(part["text"])
        else:
            problems.add(f"{where}.{j}", "instructions take text only")
    return "".join(texts)


def _arguments(raw: Any, where: str, problems: Problems) -> str:
    """A call's arguments as the JSON string the Responses API keeps them in."""
    if isinstance(raw, str):
        return raw or "{}"
    if raw is None:
        return "{}"
    if isinstance(raw, dict):
        return json.dumps(raw, ensure_ascii=False)
    problems.add(where, "tool call arguments must be a JSON object")
    return "{}"


def _assistant_items(message: dict[str, Any], where: str, problems: Problems, legacy: LegacyCalls) -> list[Any]:
    """Reasoning items first, then the text, then the calls: the order the model made them in.

    A call keeps its item id only beside the reasoning it came with: OpenAI refuses a
    ``function_call`` id whose reasoning item is missing, and a reasoning item whose following item
    is."""
    reasoning: list[Any] = []
    content = _parts(message.get("content"), f"{where}.content", problems, assistant=True, reasoning=reasoning)
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        text = [{"type": "output_text", "text": content}] if isinstance(content, str) and content else []
        content = [*(content if isinstance(content, list) else text), {"type": "refusal", "refusal": refusal}]
    items: list[Any] = list(reasoning)
    if content:
        items.append({"type": "message", "role": "assistant", "content": content})
    for call in assistant_calls(message, where, problems, legacy):
        arguments = _arguments(call.arguments, call.where, problems)
        item = {"type": "function_call", "call_id": call.id, "name": call.name, "arguments": arguments}
        if reasoning and (item_id := _item_id(call.entry)) is not None:
            item["id"] = item_id
        items.append(item)
    return items


def _output(content: Any, where: str, problems: Problems) -> str | list[Any]:
    """A tool's result: a string, or input parts (text alone is joined into a string)."""
    parts = _parts(content, where, problems)
    if not isinstance(parts, list):
        return parts or ""
    if all(isinstance(p, dict) and p.get("type") == "input_text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _translate_messages(messages: Any, problems: Problems) -> tuple[list[str], list[Any]]:
    """(instruction texts, input items) from Chat Completions' message list."""
    instructions: list[str] = []
    items: list[Any] = []
    legacy = LegacyCalls("call_legacy_")
    if not isinstance(messages, list):
        if messages is not None:
            problems.add("payload.messages", "must be a list")
        return instructions, items
    for where, message in each_message(messages, problems):
        role = message.get("role")
        if role in ("system", "developer"):
            if text := _instructions(message.get("content"), f"{where}.content", problems):
                instructions.append(text)
        elif role == "user":
            content = _parts(message.get("content"), f"{where}.content", problems)
            if content:
                items.append({"type": "message", "role": "user", "content": content})
        elif role == "assistant":
            items += _assistant_items(message, where, problems, legacy)
        elif role in ("tool", "function"):
            if (call_id := answered_call(message, where, problems, legacy)) is None:
                continue
            output = _output(message.get("content"), f"{where}.content", problems)
            items.append({"type": "function_call_output", "call_id": call_id, "output": output})
        else:
            problems.add(f"{where}.role", f"unknown role {role!r}")
    return instructions, items


# ---- tools and formats --------------------------------------------------------------------------------


def _function_tool(function: dict[str, Any], where: str, problems: Problems) -> dict[str, Any] | None:
    if not isinstance(function.get("name"), str) or not function["name"]:
        problems.add(f"{where}.name", "a tool needs a name")
        return None
    tool = {"type": "function", **function}
    if not isinstance(tool.get("parameters"), dict):
        tool["parameters"] = {"type": "object", "properties": {}}
    # Responses makes a function strict unless told otherwise, which can refuse a schema Chat
    # Completions took (optional fields); written the Chat Completions way, it keeps that default.
    tool.setdefault("strict", False)
    return tool


def _web_search(options: Any, problems: Problems) -> dict[str, Any] | None:
    """Chat Completions' ``web_search_options`` as the Responses ``web_search`` tool."""
    if not isinstance(options, dict):
        problems.add("payload.web_search_options", "must be an object")
        return None
    tool: dict[str, Any] = {"type": "web_search"}
    if "search_context_size" in options:
        tool["search_context_size"] = options["search_context_size"]
    location = options.get("user_location")
    if isinstance(location, dict):
        approximate = location.get("approximate")
        tool["user_location"] = {"type": "approximate", **(approximate if isinstance(approximate, dict) else {})}
    return tool


def _translate_tools(payload: dict[str, Any], problems: Problems) -> list[Any]:
    # Built-in tools (web_search, file_search, mcp, ...) pass as they are.
    tools = translate_tools(payload, problems, lambda function, where: _function_tool(function, where, problems))
    if payload.get("web_search_options") is not None:
        if (search := _web_search(payload["web_search_options"], problems)) is not None:
            tools.append(search)
    return tools


def _translate_tool_choice(payload: dict[str, Any], problems: Problems) -> Any:
    key = "tool_choice" if payload.get("tool_choice") is not None else "function_call"
    choice = payload.get(key)
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return {"type": "function", "name": function["name"]}
        if key == "function_call" and isinstance(choice.get("name"), str):
            return {"type": "function", "name": choice["name"]}
        if key == "tool_choice" and isinstance(choice.get("type"), str):
            return choice  # a Responses choice ({"type": "web_search"}, allowed_tools, ...) sent as such
    problems.add(f"payload.{key}", "must be auto, none, required or a named function")
    return None


def _text_config(payload: dict[str, Any], problems: Problems) -> dict[str, Any]:
    """``response_format`` and ``verbosity`` as the ``text`` object (under any ``text`` the payload has)."""
    text: dict[str, Any] = {}
    value = payload.get("response_format")
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in ("text", "json_object"):
        text["format"] = {"type": kind}
    elif kind == "json_schema" and isinstance(value.get("json_schema"), dict):
        text["format"] = {"type": "json_schema", **value["json_schema"]}
    elif value is not None:
        problems.add("payload.response_format", "must be text, json_object or json_schema")
    if payload.get("verbosity") is not None:
        text["verbosity"] = payload["verbosity"]
    native = payload.get("text")
    if native is not None and not isinstance(native, dict):
        problems.add("payload.text", "must be an object (the Responses API's text configuration)")
    return merged(text, native) if isinstance(native, dict) else text


def _refuse_the_untranslatable(payload: dict[str, Any], problems: Problems) -> None:
    if payload.get("input") is not None:
        problems.add("payload.input", "write the conversation as messages: bfstream builds input from them")
    if payload.get("stop") is not None:
        problems.add("payload.stop", "the Responses API has no stop sequences")
    n = payload.get("n")
    if n is not None and n != 1:
        problems.add("payload.n", "the Responses API returns one answer per request")
    if payload.get("audio") is not None:
        problems.add("payload.audio", "the Responses API answers in text, not audio")
    modalities = payload.get("modalities")
    if modalities is not None and modalities != ["text"]:
        problems.add("payload.modalities", "the Responses API answers in text only")


# ---- the body -----------------------------------------------------------------------------------------


def build_body(
    payload: dict[str, Any], *, stream: bool, include_reasoning: bool, provider_args: dict[str, Any] | None
) -> dict[str, Any]:
    """The ``POST /responses`` body; raises ``ValidationFailed`` listing everything that cannot map.

    ``providerArgs`` are merged after the translation, and the asks below after them, so a
    ``providerArgs.store: false`` gets its reasoning back too: with ``include_reasoning``,
    ``reasoning.summary: "auto"`` unless the caller chose a summary; with ``store: false`` and a
    reasoning configuration, the encrypted reasoning (OpenAI keeps nothing, so a tool round must send
    the reasoning back whole)."""
    problems = Problems("the OpenAI Responses API")
    body = {k: v for k, v in payload.items() if k not in DROPPED and k not in _TRANSLATED}
    _refuse_the_untranslatable(payload, problems)
    if provider_args and provider_args.get("input") is not None:
        problems.add("payload.providerArgs.input", "set by bfstream: use payload.messages")

    system, body["input"] = _translate_messages(payload.get("messages"), problems)
    given = payload.get("instructions")
    if given is not None and not isinstance(given, str):
        problems.add("payload.instructions", "must be a string")
    elif instructions := "\n\n".join(t for t in (given, *system) if t):
        body["instructions"] = instructions

    tools = _translate_tools(payload, problems)
    choice = _translate_tool_choice(payload, problems)
    if tools:
        body["tools"] = tools
        if choice is not None:
            body["tool_choice"] = choice

    limit = payload.get("max_completion_tokens")
    limit = payload.get("max_tokens") if limit is None else limit
    if limit is not None:
        body.setdefault("max_output_tokens", limit)
    if text := _text_config(payload, problems):
        body["text"] = text
    if payload.get("reasoning_effort") is not None:
        native = body.get("reasoning")
        body["reasoning"] = merged({"effort": payload["reasoning_effort"]}, native if isinstance(native, dict) else {})
    options = payload.get("stream_options")
    if stream and isinstance(options, dict) and (kept := {k: v for k, v in options.items() if k != "include_usage"}):
        body["stream_options"] = kept  # include_usage means nothing here: usage comes with every answer
    problems.raise_if_any()

    body = with_provider_args(body, provider_args, _ARG_ALIASES)
    # The asks below never replace what the caller wrote: a malformed value goes as it is, for OpenAI's own 400.
    if include_reasoning and isinstance(body.get("reasoning"), dict | None):
        reasoning = dict(body.get("reasoning") or {})
        if "summary" not in reasoning and "generate_summary" not in reasoning:
            reasoning["summary"] = "auto"
        body["reasoning"] = reasoning
    # Only for a request that configures reasoning: OpenAI refuses the include on models that do not
    # reason (gpt-4o, gpt-4.1: "Encrypted content is not supported with this model"), and those have
    # no reasoning items to send back anyway.
    if (
        body.get("store") is False
        and isinstance(body.get("reasoning"), dict)
        and isinstance(body.get("include"), list | None)
    ):
        include = list(body.get("include") or [])
        if ENCRYPTED_REASONING not in include:
            include.append(ENCRYPTED_REASONING)
        body["include"] = include
    body["stream"] = stream
    return body
