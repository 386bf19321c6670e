"""Google Gemini API (v1beta ``generateContent`` / ``streamGenerateContent?alt=sse``).

Wire format: every SSE event is a whole ``GenerateContentResponse`` (no deltas of a response, no
``[DONE]``); the stream simply ends. Text is in ``candidates[0].content.parts[].text``; parts with
``thought: true`` are the model's thinking (summaries of it), which Gemini sends only when
``generationConfig.thinkingConfig.includeThoughts`` is set: bfstream sets it when the request asks
for reasoning, and relays them as such. Grounding with Google Search puts the web pages the
answer used in ``candidates[0].groundingMetadata.groundingChunks[].web`` (``uri``, ``title``):
those are its sources. Function calls arrive whole, with
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
from collections.abc import AsyncGenerator
from typing import Any

from bfstream.config import ServiceConfig
from bfstream.errors import ProviderError, ValidationFailed
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
from bfstream.providers.gemini_payload import build_body
from bfstream.providers.http import Outbound, ProviderClient, error_message, iter_sse, open_stream, outbound, post_json
from bfstream.providers.translation import merged, with_provider_args
from bfstream.scrub import scrub
from bfstream.text import provider_json

API_VERSION = "v1beta"

# providerArgs may name sampling settings at the top, in Gemini's words or OpenAI's: they go into
# generationConfig, where Gemini reads them.
_GENERATION = (
    "generationConfig",
    frozenset(
        {
            "temperature", "topP", "topK", "maxOutputTokens", "candidateCount", "stopSequences", "seed",
            "presencePenalty", "frequencyPenalty", "responseMimeType", "responseSchema", "responseJsonSchema",
            "responseModalities", "responseLogprobs", "logprobs", "thinkingConfig", "speechConfig", "mediaResolution",
        }
    ),
)  # fmt: skip
_ARG_ALIASES = {
    "top_p": "topP",
    "top_k": "topK",
    "max_tokens": "maxOutputTokens",
    "max_completion_tokens": "maxOutputTokens",
    "max_output_tokens": "maxOutputTokens",
    "stop": "stopSequences",
    "candidate_count": "candidateCount",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
    "response_mime_type": "responseMimeType",
    "thinking_config": "thinkingConfig",
}

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

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def model_path(model: str) -> str:
    """``models/{id}`` (or ``tunedModels/{id}``) for the URL; ``models/`` may be given or not."""
    kind, _, name = model.partition("/") if model.startswith(("models/", "tunedModels/")) else ("models", "", model)
    if not _MODEL_NAME.fullmatch(name):
        raise ValidationFailed(
            "The model name is invalid", details=[{"field": "payload.model", "message": f"not a model id: {model!r}"}]
        )
    return f"{kind}/{name}"


def _request(request: ChatRequest, service: ServiceConfig, stream: bool) -> Outbound:
    body = with_provider_args(build_body(request.payload), request.provider_args, _ARG_ALIASES, _GENERATION)
    if request.include_reasoning:  # unless the caller said otherwise, in the payload or providerArgs
        body = merged({"generationConfig": {"thinkingConfig": {"includeThoughts": True}}}, body)
    base = (service.base_url or "").rstrip("/")
    root = base if base.endswith("/" + API_VERSION) else f"{base}/{API_VERSION}"
    method = "streamGenerateContent" if stream else "generateContent"
    url = f"{root}/{model_path(request.model)}:{method}"
    headers = {"Accept": "text/event-stream" if stream else "application/json", **service.headers}
    if request.api_key:
        headers["x-goog-api-key"] = request.api_key
    params = {"alt": "sse"} if stream else None
    return outbound(url, headers, body, service.timeouts.connect, params)


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


def _thought(part: dict[str, Any]) -> str:
    text = part.get("text")
    return text if isinstance(text, str) and part.get("thought") is True else ""


def _grounding(candidate: dict[str, Any]) -> Sources | None:
    metadata = candidate.get("groundingMetadata")
    chunks = metadata.get("groundingChunks") if isinstance(metadata, dict) else None
    found = [
        source
        for chunk in (chunks if isinstance(chunks, list) else [])
        if isinstance(chunk, dict) and isinstance(web := chunk.get("web"), dict)
        and (source := source_of(web.get("uri"), web.get("title"))) is not None
    ]  # fmt: skip
    return Sources(found) if found else None


def _function_call(part: dict[str, Any], number: int) -> ToolCall | None:
    call = part.get("functionCall")
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else f"call_{number}"
    args = call.get("args") if isinstance(call.get("args"), dict) else {}
    signature = part.get("thoughtSignature")
    signature = signature if isinstance(signature, str) and signature else None
    # Where Google's own OpenAI-compatible endpoint puts it, and where gemini_payload reads it back.
    extra = {"extra_content": {"google": {"thought_signature": signature}}} if signature is not None else None
    return ToolCall(id=call_id, name=call["name"], arguments=json.dumps(args, ensure_ascii=False), extra=extra)


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
    request: ChatRequest, client: ProviderClient, service: ServiceConfig
) -> AsyncGenerator[ProviderEvent, None]:
    http_request = _request(request, service, stream=True)
    async with open_stream(client, http_request, service.timeouts, request.api_key) as chunks:
        yield Started(model=model_path(request.model).partition("/")[2])
        calls: list[ToolCall] = []
        usage: dict[str, int] | None = None
        finish: str | None = None
        events = iter_sse(chunks, service)
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
                response = provider_json(event.data)
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
                elif thought := _thought(part):
                    yield Reasoning(thought)
                elif (call := _function_call(part, len(calls) + 1)) is not None:
                    calls.append(call)
            if (sources := _grounding(candidate)) is not None:
                yield sources
            if candidate.get("finishReason"):
                finish = _finish(candidate, bool(calls))
        if finish is None:
            raise ProviderError("The provider closed the stream before it was complete", details="no finishReason")
        if calls:
            yield ToolCalls(calls)
        yield Finished(finish, usage)


def _choice(candidate: dict[str, Any], position: int, reasoning: bool) -> dict[str, Any]:
    texts: list[str] = []
    thoughts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for part in _parts(candidate):
        if text := _visible_text(part):
            texts.append(text)
        elif thought := _thought(part):
            thoughts.append(thought)
        elif (call := _function_call(part, len(tool_calls) + 1)) is not None:
            entry: dict[str, Any] = {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            if call.extra is not None:
                entry.update(call.extra)
            tool_calls.append(entry)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if reasoning and thoughts:
        message["reasoning_content"] = "".join(thoughts)
    index = candidate.get("index")
    return {
        "index": index if isinstance(index, int) else position,
        "message": message,
        "logprobs": None,
        "finish_reason": _finish(candidate, bool(tool_calls)),
    }


async def complete(request: ChatRequest, client: ProviderClient, service: ServiceConfig) -> dict[str, Any]:
    """Gemini's answer as an OpenAI ``chat.completion``, so callers need one shape whatever the service."""
    http_request = _request(request, service, stream=False)
    response = await post_json(client, http_request, service, request.api_key)
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
        "choices": [_choice(candidate, i, request.include_reasoning) for i, candidate in enumerate(candidates)],
        "usage": usage_of(response.get("usageMetadata")),
    }
