"""A fake Gemini API (v1beta): Google's headers and the builders of its real wire shapes.

The HTTP machinery is ``tests.fakes.http_server``; this module only knows Gemini. What it mimics:
every SSE event is a whole ``GenerateContentResponse`` framed as ``data: <JSON>\\r\\n\\r\\n`` (Google
ends events with CRLF pairs, which its own JS SDK matches with ``\\r\\n\\r\\n``); there is no
``[DONE]``; every chunk repeats the prompt's ``usageMetadata`` and the last one carries
``finishReason`` and the complete counts; function calls come whole, args as an object.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any, Literal

from tests.fakes.http_server import FakeProvider, JsonReply, RecordedRequest, StreamReply
from tests.fakes.openai_server import split_every, split_inside

__all__ = [
    "FakeGemini",
    "JsonReply",
    "RecordedRequest",
    "StreamReply",
    "split_every",
    "split_inside",
]

MODEL = "gemini-2.0-flash"
PROMPT_TOKENS = 11
Usage = dict[str, Any] | Literal["auto"] | None  # "auto": counts derived from the scripted content

_JSON = {"content-type": "application/json; charset=UTF-8"}
_CATEGORIES = (
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
)


class FakeGemini(FakeProvider):
    base_path = ""  # GEMINI_BASE_URL is the API root; the adapter adds /v1beta

    def response_headers(self) -> dict[str, str]:
        return {
            "vary": "Origin, X-Origin, Referer",
            "server": "scaffolding on HTTPServer2",
            "x-xss-protection": "0",
            "x-frame-options": "SAMEORIGIN",
            "x-content-type-options": "nosniff",
            "server-timing": "gfet4t7; dur=412",
            "alt-svc": 'h3=":443"; ma=2592000,h3-29=":443"; ma=2592000',
        }

    def unscripted(self, method: str, path: str) -> JsonReply:
        message = f"Fake Gemini server: no reply was scripted for {method} {path}."
        return error_reply(500, message, "INTERNAL")


def stream_reply(pieces: list[bytes], **kwargs: Any) -> StreamReply:
    """A 200 SSE reply with the content type Google sends (no charset parameter)."""
    return StreamReply(pieces, headers={"content-type": "text/event-stream"}, **kwargs)


# ---- builders of Gemini's real shapes ---------------------------------------------------------------------


def sse(data: dict[str, Any]) -> bytes:
    """One event as Google frames it: one line of JSON, raw UTF-8, CRLF CRLF."""
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\r\n\r\n"


def usage(candidates: int | None = None, *, prompt: int = PROMPT_TOKENS, thoughts: int = 0) -> dict[str, Any]:
    """usageMetadata; mid-stream chunks have no candidatesTokenCount yet."""
    meta: dict[str, Any] = {"promptTokenCount": prompt}
    if candidates is not None:
        meta["candidatesTokenCount"] = candidates
    meta["totalTokenCount"] = prompt + (candidates or 0) + thoughts
    meta["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if thoughts:
        meta["thoughtsTokenCount"] = thoughts
    return meta


def safety_ratings(blocked: str | None = None) -> list[dict[str, Any]]:
    ratings = []
    for category in _CATEGORIES:
        rating: dict[str, Any] = {"category": category, "probability": "NEGLIGIBLE"}
        if category == blocked:
            rating = {"category": category, "probability": "HIGH", "blocked": True}
        ratings.append(rating)
    return ratings


def chunk(
    parts: list[dict[str, Any]] | None,
    *,
    finish_reason: str | None = None,
    usage_metadata: dict[str, Any] | None = None,
    model: str = MODEL,
    response_id: str = "fake-response-1",
    ratings: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One GenerateContentResponse with a single candidate; parts=None gives a candidate without content."""
    candidate: dict[str, Any] = {}
    if parts is not None:
        candidate["content"] = {"parts": parts, "role": "model"}
    if finish_reason is not None:
        candidate["finishReason"] = finish_reason
    if ratings is not None:
        candidate["safetyRatings"] = ratings
    candidate["index"] = 0
    response: dict[str, Any] = {"candidates": [candidate]}
    response["usageMetadata"] = usage_metadata or usage()
    response["modelVersion"] = model
    response["responseId"] = response_id
    return response


def _final_usage(given: Usage, candidates: int, thoughts: int = 0) -> dict[str, Any] | None:
    return usage(candidates, thoughts=thoughts) if given == "auto" else given


def text_stream(
    parts: list[str],
    *,
    model: str = MODEL,
    final_usage: Usage = "auto",
    finish_reason: str | None = "STOP",
    thoughts: Sequence[str] = (),
) -> bytes:
    """A text answer: one chunk per part, the last also carrying finishReason and the complete usage.

    ``thoughts`` come first as ``thought: true`` parts (what includeThoughts returns);
    ``finish_reason=None`` gives a stream that just stops."""
    out = [sse(chunk([{"text": t, "thought": True}], model=model)) for t in thoughts]
    for i, text in enumerate(parts):
        last = i == len(parts) - 1 and finish_reason is not None
        meta = _final_usage(final_usage, len(parts), 7 * len(thoughts)) if last else usage()
        out.append(sse(chunk([{"text": text}], finish_reason=finish_reason if last else None, usage_metadata=meta)))
    return b"".join(out)


def function_call_stream(calls: list[tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], str]]) -> bytes:
    """Parallel function calls as Gemini streams them: all whole, in one final chunk, finishReason STOP.

    Each call is (name, args) or (name, args, id); the first part carries a thoughtSignature as
    Gemini 2.5+ sends it."""
    parts: list[dict[str, Any]] = []
    for i, call in enumerate(calls):
        function: dict[str, Any] = {"name": call[0], "args": call[1]}
        if len(call) == 3:
            function = {"id": call[2], **function}
        part: dict[str, Any] = {"functionCall": function}
        if i == 0:
            part["thoughtSignature"] = "CiQB0e2Kb3FakeSignature+Zm9vYmFy"
        parts.append(part)
    return sse(chunk(parts, finish_reason="STOP", usage_metadata=usage(12 * len(calls))))


def safety_stop(parts: list[str], category: str = "HARM_CATEGORY_HARASSMENT", reason: str = "SAFETY") -> bytes:
    """Some text, then a candidate cut off by a filter: no content, finishReason SAFETY, the blocking rating."""
    out = [sse(chunk([{"text": t}], ratings=safety_ratings())) for t in parts]
    out.append(sse(chunk(None, finish_reason=reason, ratings=safety_ratings(category), usage_metadata=usage(9))))
    return b"".join(out)


def blocked_prompt(reason: str = "SAFETY", category: str = "HARM_CATEGORY_DANGEROUS_CONTENT") -> dict[str, Any]:
    """A refused prompt: HTTP 200, no candidates, promptFeedback.blockReason (a stream's only event)."""
    return {
        "promptFeedback": {"blockReason": reason, "safetyRatings": safety_ratings(category)},
        "usageMetadata": {"promptTokenCount": PROMPT_TOKENS, "totalTokenCount": PROMPT_TOKENS},
        "modelVersion": MODEL,
        "responseId": "fake-response-blocked",
    }


def response(
    text: str | None = None,
    *,
    calls: Sequence[tuple[str, dict[str, Any]]] = (),
    finish_reason: str = "STOP",
    model: str = MODEL,
    response_id: str | None = None,
) -> dict[str, Any]:
    """A whole generateContent answer."""
    parts: list[dict[str, Any]] = [{"text": text}] if text is not None else []
    parts += [{"functionCall": {"name": name, "args": args}} for name, args in calls]
    meta = usage(max(1, len(text or "") // 4) + 10 * len(calls))
    return chunk(
        parts, finish_reason=finish_reason, usage_metadata=meta, model=model, response_id=response_id or _new_id()
    )


def _new_id() -> str:
    return secrets.token_urlsafe(16)


def error_body(code: int, message: str, status: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return {"error": error}


def error_reply(code: int, message: str, status: str, details: list[dict[str, Any]] | None = None) -> JsonReply:
    """An API refusal: Google's error object, pretty-printed, with the HTTP status it names."""
    return JsonReply(code, error_body(code, message, status, details), headers=_JSON)


def invalid_key_reply() -> JsonReply:
    """What Google answers to a wrong key: 400 (not 401), INVALID_ARGUMENT, reason API_KEY_INVALID."""
    info = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    }
    return error_reply(400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT", [info])


def quota_reply() -> JsonReply:
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more information on "
        "this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
    )
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}
    return error_reply(429, message, "RESOURCE_EXHAUSTED", [retry])


def stream_error(code: int = 500, message: str = "An internal error has occurred.", status: str = "INTERNAL") -> bytes:
    """An error event inside an already-started 200 stream."""
    return sse(error_body(code, message, status))


def json_reply(body: dict[str, Any]) -> JsonReply:
    return JsonReply(200, body, headers=_JSON)
