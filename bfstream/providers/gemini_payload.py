"""The OpenAI-style payload rewritten for the Gemini API (what maps where: ``docs/providers.md``)."""

from __future__ import annotations

import json
import re
from typing import Any

from bfstream.providers.translation import Problems, data_uri, text_of, tool_arguments

# The v1beta ``Schema`` object (a subset of OpenAPI 3.0). Gemini answers 400 "Unknown name ... Cannot
# find field" to any other key, e.g. ``additionalProperties``, ``$schema``, ``$ref``, ``const``.
_SCHEMA_KEYS = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
        "propertyOrdering",
        "default",
        "items",
        "minimum",
        "maximum",
    }
)

# OpenAI request field -> GenerationConfig field, copied as given.
_GENERATION_FIELDS = {
    "max_completion_tokens": "maxOutputTokens",
    "max_tokens": "maxOutputTokens",
    "temperature": "temperature",
    "top_p": "topP",
    "seed": "seed",
    "n": "candidateCount",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}

# Gemini request fields a caller may send as they are.
_PASSTHROUGH = ("safetySettings", "cachedContent")

_TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY", "any": "ANY"}

# Google's documented stand-in for a function call Gemini 3 did not produce itself (our history is
# rebuilt from OpenAI messages, which lose the real signature): without one, Gemini 3 answers 400.
_FOREIGN_SIGNATURE = "skip_thought_signature_validator"

_MAJOR_VERSION = re.compile(r"gemini-(\d+)")


# Roles of a message given in Gemini's own shape, with ``parts`` (the reference's /llm/query page
# documents images so), and the Gemini role each becomes.
_NATIVE_ROLES = {"user": "user", "model": "model", "assistant": "model"}


def _files_api_uri(url: str) -> bool:
    return url.startswith("https://generativelanguage.googleapis.com/") and "/files/" in url


def fetched_by_bfstream(url: str) -> bool:
    """Whether bfstream must fetch an http(s) image URL and send its bytes (``providers/images.py``):
    Gemini reads no URL but those of its own Files API."""
    return not _files_api_uri(url)


def _media_part(url: Any, where: str, problems: Problems) -> dict[str, Any] | None:
    if not isinstance(url, str):
        problems.add(where, "must be a string")
        return None
    if parsed := data_uri(url):
        return {"inlineData": {"mimeType": parsed[0], "data": parsed[1]}}
    if url.startswith("data:"):
        problems.add(where, "only base64 data URIs (data:<mime>;base64,...) can be sent to Gemini")
        return None
    if _files_api_uri(url):
        return {"fileData": {"fileUri": url}}  # a file uploaded with Gemini's Files API
    problems.add(
        where,
        "Gemini cannot read this URL: send a base64 data URI (data:<mime>;base64,...), a Gemini Files API "
        "URI or, for an image, its http(s) URL (bfstream fetches it)",
    )
    return None


def _user_parts(content: Any, where: str, problems: Problems) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if content is None:
        return []
    if not isinstance(content, list):
        problems.add(where, "must be a string or a list of content parts")
        return []
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        at = f"{where}.{i}"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if isinstance(part.get("text"), str) and part["text"]:
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if (media := _media_part(url, f"{at}.image_url.url", problems)) is not None:
                parts.append(media)
        elif kind == "input_audio":
            audio = part.get("input_audio") if isinstance(part.get("input_audio"), dict) else {}
            if isinstance(audio.get("data"), str) and audio.get("format") in ("wav", "mp3"):
                parts.append({"inlineData": {"mimeType": f"audio/{audio['format']}", "data": audio["data"]}})
            else:
                problems.add(f"{at}.input_audio", "needs base64 data and a format of wav or mp3")
        elif kind == "file":
            file = part.get("file") if isinstance(part.get("file"), dict) else {}
            if (media := _media_part(file.get("file_data"), f"{at}.file.file_data", problems)) is not None:
                parts.append(media)
        elif isinstance(part, dict) and part and "type" not in part:
            parts.append(part)  # a Gemini Part already ({"inlineData": ...}, {"fileData": ...}), sent as such
        else:
            problems.add(at, f"content part type {kind!r} cannot be sent to Gemini")
    return parts


def _tool_response(content: Any) -> dict[str, Any]:
    """Gemini wants an object; JSON objects go as they are, anything else under ``output`` (its documented key)."""
    text = text_of(content) if not isinstance(content, dict) else None
    if text is None:
        return content
    try:
        parsed = json.loads(text)
    except ValueError:
        return {"output": text}
    return parsed if isinstance(parsed, dict) else {"output": parsed}


def _signature_of(call: dict[str, Any]) -> str | None:
    """A thought signature carried where Google's OpenAI-compatible endpoint puts it."""
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) and signature else None


def _needs_foreign_signature(model: Any) -> bool:
    match = _MAJOR_VERSION.search(model) if isinstance(model, str) else None
    return match is not None and int(match[1]) >= 3


def _native_parts(message: dict[str, Any], where: str, problems: Problems) -> list[dict[str, Any]] | None:
    """The ``parts`` of a message given in Gemini's shape, sent as they are; None when unusable."""
    parts = message["parts"]
    if message.get("content") is not None:
        problems.add(where, "give content or parts, not both")
    elif not isinstance(parts, list) or not parts or not all(isinstance(p, dict) and p for p in parts):
        problems.add(f"{where}.parts", "must be a non-empty list of Gemini Part objects")
    elif message.get("role") not in (*_NATIVE_ROLES, "system", "developer"):
        problems.add(f"{where}.role", f"role {message.get('role')!r} cannot be sent to Gemini")
    else:
        return parts
    return None


def _contents(payload: dict[str, Any], problems: Problems) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The conversation as Gemini ``contents``, plus the system text parts."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    sign_calls = _needs_foreign_signature(payload.get("model"))
    messages = payload.get("messages") or []
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            problems.add(where, "must be an object")
            continue
        role, content = message.get("role"), message.get("content")
        if "parts" in message:
            if (native := _native_parts(message, where, problems)) is None:
                continue
            if role in ("system", "developer"):
                system.extend(native)
            else:
                contents.append({"role": _NATIVE_ROLES[role], "parts": native})
        elif role in ("system", "developer"):
            if text := text_of(content):
                system.append({"text": text})
        elif role == "user":
            if parts := _user_parts(content, f"{where}.content", problems):
                contents.append({"role": "user", "parts": parts})
        elif role == "assistant":
            parts = [{"text": text}] if (text := text_of(content)) else []
            calls = message.get("tool_calls") or []
            if isinstance(message.get("function_call"), dict):  # the deprecated `functions` API
                calls = [*calls, {"function": message["function_call"]}]
            for j, call in enumerate(calls):
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    problems.add(f"{where}.tool_calls.{j}", "needs function.name")
                    continue
                args = tool_arguments(function.get("arguments"), f"{where}.tool_calls.{j}.function.arguments", problems)
                fc: dict[str, Any] = {"name": function["name"], "args": args}
                part: dict[str, Any] = {"functionCall": fc}
                if isinstance(call.get("id"), str) and call["id"]:
                    fc["id"] = call["id"]
                    call_names[call["id"]] = function["name"]
                if signature := _signature_of(call):
                    part["thoughtSignature"] = signature
                parts.append(part)
            calls_made = [p for p in parts if "functionCall" in p]
            if sign_calls and calls_made and not any("thoughtSignature" in p for p in calls_made):
                calls_made[0]["thoughtSignature"] = _FOREIGN_SIGNATURE
            if parts:
                contents.append({"role": "model", "parts": parts})
        elif role in ("tool", "function"):
            call_id = message.get("tool_call_id")
            name = call_names.get(call_id) if isinstance(call_id, str) else None
            name = name or message.get("name")
            if not isinstance(name, str) or not name:
                problems.add(f"{where}.tool_call_id", "does not match a tool call of an earlier assistant message")
                continue
            fr: dict[str, Any] = {"name": name, "response": _tool_response(content)}
            if isinstance(call_id, str) and call_id:
                fr["id"] = call_id
            part = {"functionResponse": fr}
            last = contents[-1] if contents else None
            if last is not None and last["role"] == "user" and all("functionResponse" in p for p in last["parts"]):
                last["parts"].append(part)  # parallel calls: every response in one turn, in order
            else:
                contents.append({"role": "user", "parts": [part]})
        else:
            problems.add(f"{where}.role", f"role {role!r} cannot be sent to Gemini")
    return contents, system


def _schema(node: Any) -> Any:
    """A JSON schema reduced to what Gemini's ``Schema`` accepts (see ``_SCHEMA_KEYS``).

    ``type: [x, "null"]`` becomes ``type: x, nullable: true``; enum values become strings, as the
    ``Schema.enum`` field is a list of strings."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _SCHEMA_KEYS:
            continue
        if key == "properties" and isinstance(value, dict):
            value = {name: _schema(sub) for name, sub in value.items()}
        elif key == "items":
            if not isinstance(value, dict):
                continue  # tuple-style items have no Gemini equivalent
            value = _schema(value)
        elif key == "anyOf" and isinstance(value, list):
            value = [_schema(sub) for sub in value]
        elif key == "enum" and isinstance(value, list):
            value = [v if isinstance(v, str) else json.dumps(v) for v in value if v is not None]
        out[key] = value
    if isinstance(out.get("type"), list):
        types = [t for t in out.pop("type") if t != "null"]
        if len(types) < len(node["type"]):
            out["nullable"] = True
        if len(types) == 1:
            out["type"] = types[0]
        elif types:
            out["anyOf"] = [{"type": t} for t in types]
    return out


def _declaration(function: Any, where: str, problems: Problems) -> dict[str, Any] | None:
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        problems.add(where, "needs a name")
        return None
    declaration: dict[str, Any] = {"name": function["name"]}
    if isinstance(function.get("description"), str):
        declaration["description"] = function["description"]
    parameters = function.get("parameters")
    # A function without parameters leaves the field out: Gemini refuses an OBJECT schema without properties.
    if isinstance(parameters, dict) and (parameters.get("properties") or parameters.get("type") != "object"):
        declaration["parameters"] = _schema(parameters)
    return declaration


def _tools(payload: dict[str, Any], problems: Problems) -> list[dict[str, Any]]:
    declarations: list[dict[str, Any]] = []
    native: list[dict[str, Any]] = []
    for i, tool in enumerate(payload.get("tools") or []):
        if not isinstance(tool, dict):
            problems.add(f"tools.{i}", "must be an object")
        elif tool.get("type") == "function":
            if (d := _declaration(tool.get("function"), f"tools.{i}.function", problems)) is not None:
                declarations.append(d)
        elif "type" not in tool:
            native.append(tool)  # a Gemini Tool object, e.g. {"googleSearch": {}} or {"codeExecution": {}}
        else:
            problems.add(f"tools.{i}.type", f"tool type {tool['type']!r} has no Gemini equivalent")
    for i, function in enumerate(payload.get("functions") or []):  # the deprecated `functions` API
        if (d := _declaration(function, f"functions.{i}", problems)) is not None:
            declarations.append(d)
    return ([{"functionDeclarations": declarations}] if declarations else []) + native


def _tool_config(choice: Any, problems: Problems, field: str) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str) and choice in _TOOL_MODES:
        return {"functionCallingConfig": {"mode": _TOOL_MODES[choice]}}
    name = None
    if isinstance(choice, dict):
        function = choice.get("function") if choice.get("type") == "function" else choice
        name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        problems.add(field, "must be auto, none, required or a named function")
        return None
    return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}


def _generation_config(payload: dict[str, Any], problems: Problems) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for field, target in _GENERATION_FIELDS.items():
        if payload.get(field) is not None and target not in config:
            config[target] = payload[field]
    stop = payload.get("stop")
    if isinstance(stop, str):
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        config["stopSequences"] = stop
    response_format = payload.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else response_format
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
    elif kind == "json_schema":
        spec = response_format.get("json_schema") if isinstance(response_format, dict) else None
        config["responseMimeType"] = "application/json"
        if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            config["responseSchema"] = _schema(spec["schema"])
    elif kind not in (None, "text"):
        problems.add("response_format.type", f"{kind!r} has no Gemini equivalent")
    given = payload.get("generationConfig")
    if isinstance(given, dict):
        config.update(given)  # the caller's Gemini-native settings win over translated ones
    return config


def build_body(payload: dict[str, Any]) -> dict[str, Any]:
    """A ``GenerateContentRequest`` from an OpenAI-style chat payload.

    Translated: ``messages`` (roles user → ``user``, assistant → ``model``, system/developer →
    ``system_instruction``, tool/function results → ``functionResponse`` parts, consecutive ones in
    one turn), ``tools``/``functions`` → ``functionDeclarations`` (parameters reduced to Gemini's
    Schema subset), ``tool_choice``/``function_call`` → ``toolConfig.functionCallingConfig``, and
    ``max_tokens``, ``max_completion_tokens``, ``temperature``, ``top_p``, ``seed``, ``n``,
    ``presence_penalty``, ``frequency_penalty``, ``stop``, ``response_format`` → ``generationConfig``.

    Passed as given: ``generationConfig`` (wins over the translated fields), ``safetySettings``,
    ``cachedContent``, ``toolConfig`` (wins over ``tool_choice``), Gemini Tool objects (entries of
    ``tools`` without a ``type``, e.g. ``{"googleSearch": {}}``), messages in Gemini's shape
    (``{"role": "user" | "model" | "system", "parts": [...]}``, ``assistant`` meaning ``model``),
    and Gemini Part objects (without a ``type``) among a user message's content parts.

    Dropped, as Gemini has no such field: ``model`` (it is in the URL), ``stream``,
    ``stream_options``, ``user``, ``logit_bias``, ``logprobs``, ``top_logprobs``,
    ``parallel_tool_calls``, ``reasoning_effort``, ``store``, ``metadata``, ``service_tier``,
    ``modalities``, ``audio``, ``prediction``, ``web_search_options`` and any other key.

    Refused with ``ValidationFailed``: image/file URLs other than base64 data URIs and Gemini
    Files API URIs (the stream has already replaced an http(s) image URL by its bytes:
    ``providers/images.py``), content parts, roles and tool types with no Gemini equivalent, a
    message with both ``content`` and ``parts``, arguments that are not a JSON object, tool
    results with no matching call.
    """
    problems = Problems("Gemini")
    contents, system = _contents(payload, problems)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["system_instruction"] = {"parts": system}
    if tools := _tools(payload, problems):
        body["tools"] = tools
    if isinstance(payload.get("toolConfig"), dict):
        body["toolConfig"] = payload["toolConfig"]
    elif tools:
        choice_field = "tool_choice" if "tool_choice" in payload else "function_call"
        if (config := _tool_config(payload.get(choice_field), problems, choice_field)) is not None:
            body["toolConfig"] = config
    if generation := _generation_config(payload, problems):
        body["generationConfig"] = generation
    for key in _PASSTHROUGH:
        if payload.get(key) is not None:
            body[key] = payload[key]
    if not contents:
        problems.add("messages", "needs at least one user, assistant or tool message")
    problems.raise_if_any()
    return body
