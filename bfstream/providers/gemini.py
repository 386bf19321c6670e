"""Google Gemini API (v1beta ``generateContent`` / ``streamGenerateContent?alt=sse``).

Wire format: every SSE event is a whole ``GenerateContentResponse`` (no deltas of a response, no
``[DONE]``); the stream simply ends. Text is in ``candidates[0].content.parts[].text``; parts with
``thought: true`` are the model's thinking and are not relayed. Function calls arrive whole, with
``args`` as an object, in ``functionCall`` parts (several at once for parallel calls). The chunk that
ends a candidate carries ``finishReason`` and the final ``usageMetadata``. A prompt Gemini refuses
comes back with HTTP 200, no candidates and ``promptFeedback.blockReason``. Errors are
``{"error": {"code", "message", "status"}}``, as the body of a refusal or as an event mid-stream.

The key goes in the ``x-goog-api-key`` header, never in the ``?key=`` query parameter of Google's
curl examples: URLs end up in access logs and tracebacks.

Finish reasons: ``STOP`` is ``stop`` (``tool_calls`` when the answer holds function calls) and
``MAX_TOKENS`` is ``length``. Every other reason (``SAFETY``, ``RECITATION``, ``LANGUAGE``,
``BLOCKLIST``, ``PROHIBITED_CONTENT``, ``SPII``, ``MALFORMED_FUNCTION_CALL``, ``OTHER``, the image
ones, and any added later) means Gemini withheld or abandoned the answer, so it is raised as a
``ProviderError`` whose ``code`` is the reason and whose ``details`` carry the candidate's
``safetyRatings``: the channels get ``error`` + ``end`` rather than a normal finish.

Usage: ``prompt_tokens`` = ``promptTokenCount`` + ``toolUsePromptTokenCount``;
``completion_tokens`` = ``candidatesTokenCount`` + ``thoughtsTokenCount`` (thinking is billed as
output); ``total_tokens`` = ``totalTokenCount``.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from bfstream.config import ServiceConfig
from bfstream.errors import ProviderError, ValidationFailed
from bfstream.providers.events import ChatRequest, Delta, Finished, ProviderEvent, Started, ToolCall, ToolCalls
from bfstream.providers.http import error_message, iter_sse, open_stream, post_json, scrub
from bfstream.providers.translation import Problems, data_uri, text_of, tool_arguments

API_VERSION = "v1beta"

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

_NORMAL_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}

_WITHHELD = {
    "SAFETY": "the answer was flagged by the safety filters",
    "RECITATION": "the answer recited copyrighted material",
    "LANGUAGE": "the answer was in a language Gemini does not support",
    "BLOCKLIST": "the answer contained blocklisted terms",
    "PROHIBITED_CONTENT": "the answer was flagged as prohibited content",
    "SPII": "the answer may contain sensitive personal information",
    "IMAGE_SAFETY": "a generated image was flagged by the safety filters",
    "MALFORMED_FUNCTION_CALL": "the model produced an invalid function call",
    "OTHER": "the model stopped for an unspecified reason",
}

_BLOCKED = {
    "SAFETY": "the prompt was flagged by the safety filters",
    "BLOCKLIST": "the prompt contained blocklisted terms",
    "PROHIBITED_CONTENT": "the prompt was flagged as prohibited content",
    "IMAGE_SAFETY": "an image in the prompt was flagged by the safety filters",
    "OTHER": "the prompt was blocked for an unspecified reason",
}

# Google's documented stand-in for a function call Gemini 3 did not produce itself (our history is
# rebuilt from OpenAI messages, which lose the real signature): without one, Gemini 3 answers 400.
_FOREIGN_SIGNATURE = "skip_thought_signature_validator"

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MAJOR_VERSION = re.compile(r"gemini-(\d+)")


# ---- request ---------------------------------------------------------------------------------------------


def model_path(model: str) -> str:
    """``models/{id}`` (or ``tunedModels/{id}``) for the URL; ``models/`` may be given or not."""
    kind, _, name = model.partition("/") if model.startswith(("models/", "tunedModels/")) else ("models", "", model)
    if not _MODEL_NAME.fullmatch(name):
        raise ValidationFailed(
            "The model name is invalid", details=[{"field": "payload.model", "message": f"not a model id: {model!r}"}]
        )
    return f"{kind}/{name}"


def _files_api_uri(url: str) -> bool:
    return url.startswith("https://generativelanguage.googleapis.com/") and "/files/" in url


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
        "Gemini cannot fetch this URL: send the file as a base64 data URI (data:<mime>;base64,...) "
        "or as a Gemini Files API URI",
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
    return bool(match) and int(match[1]) >= 3


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
        if role in ("system", "developer"):
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
    ``cachedContent``, ``toolConfig`` (wins over ``tool_choice``), and Gemini Tool objects (entries of
    ``tools`` without a ``type``, e.g. ``{"googleSearch": {}}``).

    Dropped, as Gemini has no such field: ``model`` (it is in the URL), ``stream``,
    ``stream_options``, ``user``, ``logit_bias``, ``logprobs``, ``top_logprobs``,
    ``parallel_tool_calls``, ``reasoning_effort``, ``store``, ``metadata``, ``service_tier``,
    ``modalities``, ``audio``, ``prediction``, ``web_search_options`` and any other key.

    Refused with ``ValidationFailed``: image/file URLs other than base64 data URIs and Gemini
    Files API URIs (Gemini does not fetch them here), content parts, roles and tool types with no
    Gemini equivalent, arguments that are not a JSON object, tool results with no matching call.
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


def _request(client: httpx.AsyncClient, request: ChatRequest, service: ServiceConfig, stream: bool) -> httpx.Request:
    body = build_body(request.payload)
    base = (service.base_url or "").rstrip("/")
    root = base if base.endswith("/" + API_VERSION) else f"{base}/{API_VERSION}"
    method = "streamGenerateContent" if stream else "generateContent"
    url = f"{root}/{model_path(request.model)}:{method}"
    headers = {"Accept": "text/event-stream" if stream else "application/json", **service.headers}
    if request.api_key:
        headers["x-goog-api-key"] = request.api_key
    timeout = httpx.Timeout(None, connect=service.timeouts.connect)
    params = {"alt": "sse"} if stream else None
    return client.build_request("POST", url, params=params, json=body, headers=headers, timeout=timeout)


# ---- response --------------------------------------------------------------------------------------------


def usage_of(metadata: Any) -> dict[str, int] | None:
    """``usageMetadata`` in OpenAI's words (see the module docstring for what is counted where)."""
    if not isinstance(metadata, dict):
        return None

    def count(key: str) -> int:
        value = metadata.get(key)
        return value if isinstance(value, int) else 0

    prompt = count("promptTokenCount") + count("toolUsePromptTokenCount")
    completion = count("candidatesTokenCount") + count("thoughtsTokenCount")
    total = count("totalTokenCount") or prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def _candidate(response: dict[str, Any]) -> dict[str, Any] | None:
    """The first candidate (index 0): the one a stream relays."""
    candidates = response.get("candidates")
    if not isinstance(candidates, list):
        return None
    for candidate in candidates:
        if isinstance(candidate, dict) and candidate.get("index", 0) == 0:
            return candidate
    return None


def _parts(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _visible_text(part: dict[str, Any]) -> str:
    text = part.get("text")
    return text if isinstance(text, str) and not part.get("thought") else ""


def _function_call(part: dict[str, Any], number: int) -> tuple[ToolCall, str | None] | None:
    call = part.get("functionCall")
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else f"call_{number}"
    args = call.get("args") if isinstance(call.get("args"), dict) else {}
    signature = part.get("thoughtSignature")
    tool_call = ToolCall(id=call_id, name=call["name"], arguments=json.dumps(args, ensure_ascii=False))
    return tool_call, signature if isinstance(signature, str) else None


def _blocked(response: dict[str, Any]) -> ProviderError | None:
    feedback = response.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if not reason:
        return None
    why = _BLOCKED.get(reason, "the prompt was blocked")
    return ProviderError(f"Gemini refused the prompt: {why}", code=str(reason), details=feedback)


def _finish(candidate: dict[str, Any], has_calls: bool) -> str:
    """The OpenAI finish reason, or the ``ProviderError`` for an answer Gemini withheld."""
    reason = str(candidate.get("finishReason"))
    if reason == "STOP" and has_calls:
        return "tool_calls"
    if reason in _NORMAL_FINISH:
        return _NORMAL_FINISH[reason]
    details = {"finishReason": reason, "safetyRatings": candidate.get("safetyRatings") or []}
    if isinstance(candidate.get("finishMessage"), str):
        details["finishMessage"] = candidate["finishMessage"]
    why = _WITHHELD.get(reason, f"the model stopped early ({reason})")
    raise ProviderError(f"Gemini withheld the answer: {why}", code=reason, details=details)


def _error_object(body: dict[str, Any], api_key: str | None) -> ProviderError:
    inner = body.get("error")
    code = inner.get("code") if isinstance(inner, dict) else None
    message = scrub(error_message(body) or "Gemini reported an error mid-stream", api_key)
    return ProviderError(
        message,
        code=code if isinstance(code, int | str) else 502,
        details=json.loads(scrub(json.dumps(inner), api_key)),
    )


async def stream_chat(
    request: ChatRequest, client: httpx.AsyncClient, service: ServiceConfig
) -> AsyncIterator[ProviderEvent]:
    http_request = _request(client, request, service, stream=True)
    async with open_stream(client, http_request, service.timeouts, request.api_key) as chunks:
        yield Started(model=model_path(request.model).partition("/")[2])
        calls: list[ToolCall] = []
        usage: dict[str, int] | None = None
        finish: str | None = None
        events = iter_sse(chunks)
        while True:
            try:
                event = await anext(events, None)
            except ProviderError:
                if finish is None:
                    raise
                break  # the answer was already complete; a broken tail changes nothing
            if event is None:
                break
            try:
                response = json.loads(event.data)
            except ValueError:
                continue  # a stray non-JSON line from a proxy is not ours to judge
            if not isinstance(response, dict):
                continue
            if "error" in response:
                raise _error_object(response, request.api_key)
            usage = usage_of(response.get("usageMetadata")) or usage
            if (blocked := _blocked(response)) is not None:
                raise blocked
            candidate = _candidate(response)
            if candidate is None or finish is not None:
                continue
            for part in _parts(candidate):
                if text := _visible_text(part):
                    yield Delta(text)
                elif (found := _function_call(part, len(calls) + 1)) is not None:
                    calls.append(found[0])
            if candidate.get("finishReason"):
                finish = _finish(candidate, bool(calls))
        if finish is None:
            raise ProviderError("The provider closed the stream before it was complete", details="no finishReason")
        if calls:
            yield ToolCalls(calls)
        yield Finished(finish, usage)


def _choice(candidate: dict[str, Any], position: int) -> dict[str, Any]:
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for part in _parts(candidate):
        if text := _visible_text(part):
            texts.append(text)
        elif (found := _function_call(part, len(tool_calls) + 1)) is not None:
            call, signature = found
            entry: dict[str, Any] = {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            if signature is not None:  # where Google's own OpenAI-compatible endpoint puts it
                entry["extra_content"] = {"google": {"thought_signature": signature}}
            tool_calls.append(entry)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    index = candidate.get("index")
    return {
        "index": index if isinstance(index, int) else position,
        "message": message,
        "logprobs": None,
        "finish_reason": _finish(candidate, bool(tool_calls)),
    }


async def complete(request: ChatRequest, client: httpx.AsyncClient, service: ServiceConfig) -> dict[str, Any]:
    """Gemini's answer as an OpenAI ``chat.completion``, so callers need one shape whatever the service."""
    http_request = _request(client, request, service, stream=False)
    response = await post_json(client, http_request, service.timeouts, request.api_key)
    if not isinstance(response, dict):
        raise ProviderError("The provider sent an answer that is not a JSON object")
    if "error" in response:
        raise _error_object(response, request.api_key)
    if (blocked := _blocked(response)) is not None:
        raise blocked
    candidates = [c for c in response.get("candidates") or [] if isinstance(c, dict)]
    if not candidates:
        raise ProviderError("Gemini sent no answer", details="no candidates")
    response_id = response.get("responseId")
    model = response.get("modelVersion")
    return {
        "id": f"chatcmpl-{response_id}" if isinstance(response_id, str) else f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model if isinstance(model, str) else model_path(request.model).partition("/")[2],
        "choices": [_choice(candidate, i) for i, candidate in enumerate(candidates)],
        "usage": usage_of(response.get("usageMetadata")),
    }
