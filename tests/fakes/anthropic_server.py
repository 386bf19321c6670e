"""A fake Anthropic Messages API: Anthropic's headers and the builders of its real wire shapes.

Streams are named SSE events (``event: <type>`` then ``data: <JSON whose type repeats it>``), with a ``ping``
after the first content block starts, input usage in ``message_start`` and cumulative output usage in
``message_delta``, as in Anthropic's streaming documentation. The HTTP machinery is
``tests.fakes.http_server``; this module only knows Anthropic.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.fakes.http_server import FakeProvider, JsonReply, RecordedRequest, StreamReply
from tests.fakes.openai_server import split_every, split_inside

__all__ = [
    "FakeAnthropic",
    "JsonReply",
    "RecordedRequest",
    "StreamReply",
    "split_every",
    "split_inside",
]

MODEL = "claude-sonnet-4-5-20250929"
INPUT_TOKENS = 25


def _request_id() -> str:
    return "req_011C" + uuid.uuid4().hex[:20]


class FakeAnthropic(FakeProvider):
    base_path = ""  # ANTHROPIC_BASE_URL is the host; the API path /v1/messages is the client's to add

    def response_headers(self) -> dict[str, str]:
        reset = (datetime.now(UTC) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "request-id": _request_id(),
            "anthropic-organization-id": "a1b2c3d4-0000-4000-8000-fakeorg00001",
            "anthropic-ratelimit-requests-limit": "4000",
            "anthropic-ratelimit-requests-remaining": "3999",
            "anthropic-ratelimit-requests-reset": reset,
            "anthropic-ratelimit-input-tokens-limit": "2000000",
            "anthropic-ratelimit-input-tokens-remaining": "1999000",
            "anthropic-ratelimit-input-tokens-reset": reset,
            "anthropic-ratelimit-output-tokens-limit": "400000",
            "anthropic-ratelimit-output-tokens-remaining": "400000",
            "anthropic-ratelimit-output-tokens-reset": reset,
        }

    def unscripted(self, method: str, path: str) -> JsonReply:
        return error_reply(500, "api_error", f"Fake Anthropic server: no reply was scripted for {method} {path}.")


# ---- builders of Anthropic's real shapes -------------------------------------------------------------


def sse(event_type: str, data: dict[str, Any]) -> bytes:
    """One event as Anthropic frames it: the event name line, compact JSON with raw UTF-8, a blank line."""
    return f"event: {event_type}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()


def ping() -> bytes:
    return b'event: ping\ndata: {"type": "ping"}\n\n'


def usage(input_tokens: int = INPUT_TOKENS, output_tokens: int = 1, **cache: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache.get("cache_creation_input_tokens", 0),
        "cache_read_input_tokens": cache.get("cache_read_input_tokens", 0),
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def message_start(model: str = MODEL, message_usage: dict[str, Any] | None = None, id: str = "msg_fake01") -> bytes:
    message = {
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": message_usage or usage(),
    }
    return sse("message_start", {"type": "message_start", "message": message})


def block_start(index: int, block: dict[str, Any]) -> bytes:
    return sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def block_delta(index: int, delta: dict[str, Any]) -> bytes:
    return sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def block_stop(index: int) -> bytes:
    return sse("content_block_stop", {"type": "content_block_stop", "index": index})


def text_delta(index: int, text: str) -> bytes:
    return block_delta(index, {"type": "text_delta", "text": text})


def message_delta(stop_reason: str | None, output_tokens: int, **more_usage: int) -> bytes:
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    return sse(
        "message_delta",
        {"type": "message_delta", "delta": delta, "usage": {"output_tokens": output_tokens, **more_usage}},
    )


def message_stop() -> bytes:
    return sse("message_stop", {"type": "message_stop"})


def _text_block(index: int, parts: list[str], with_ping: bool) -> list[bytes]:
    out = [block_start(index, {"type": "text", "text": ""})]
    if with_ping:
        out.append(ping())
    out += [text_delta(index, p) for p in parts]
    out.append(block_stop(index))
    return out


def text_stream(
    parts: list[str],
    *,
    model: str = MODEL,
    input_tokens: int = INPUT_TOKENS,
    output_tokens: int | None = None,
    stop_reason: str = "end_turn",
    stop: bool = True,
) -> bytes:
    """A plain answer: message_start, one text block (ping after its start), message_delta, message_stop.

    ``output_tokens`` defaults to one per part; ``stop=False`` leaves out the message_stop end marker."""
    out = [message_start(model, usage(input_tokens, 1))]
    out += _text_block(0, parts, with_ping=True)
    out.append(message_delta(stop_reason, len(parts) if output_tokens is None else output_tokens))
    if stop:
        out.append(message_stop())
    return b"".join(out)


def fragments(text: str, size: int = 7) -> list[str]:
    """Fixed-size pieces, so keys, values and escapes are cut mid-token as Anthropic's deltas are."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def tool_use_stream(
    calls: list[tuple[str, str, str]],
    *,
    text: list[str] | None = None,
    model: str = MODEL,
    output_tokens: int = 89,
) -> bytes:
    """Optional text block, then one tool_use block per (id, name, arguments JSON): ``input: {}`` at start,
    an empty ``partial_json`` first (as Anthropic sends), then the JSON in fragments; stop_reason tool_use."""
    out = [message_start(model, usage(472, 2))]
    index = 0
    if text:
        out += _text_block(0, text, with_ping=True)
        index = 1
    for call_id, name, arguments in calls:
        out.append(block_start(index, {"type": "tool_use", "id": call_id, "name": name, "input": {}}))
        if index == 0:
            out.append(ping())
        out += [
            block_delta(index, {"type": "input_json_delta", "partial_json": p}) for p in ["", *fragments(arguments)]
        ]
        out.append(block_stop(index))
        index += 1
    out += [message_delta("tool_use", output_tokens), message_stop()]
    return b"".join(out)


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def tool_use_block(call_id: str, name: str, input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": input}


def message(
    content: list[dict[str, Any]],
    *,
    model: str = MODEL,
    stop_reason: str = "end_turn",
    message_usage: dict[str, Any] | None = None,
    id: str = "msg_01XFDUDYJgAACzvnptvVoYEL",
) -> dict[str, Any]:
    """A non-stream Messages API response."""
    return {
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": message_usage or usage(INPUT_TOKENS, 12),
    }


def error_body(type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type, "message": message}, "request_id": _request_id()}


def error_event(type: str, message: str) -> bytes:
    """An error inside a stream that already answered 200 (the documented example: overloaded_error)."""
    return sse("error", {"type": "error", "error": {"type": type, "message": message}})


def error_reply(status: int, type: str, message: str) -> JsonReply:
    """An HTTP error answer, e.g. 401 authentication_error, 429 rate_limit_error, 529 overloaded_error."""
    headers = {"x-should-retry": "true" if status in (408, 409, 429) or status >= 500 else "false"}
    return JsonReply(status, error_body(type, message), headers=headers)
