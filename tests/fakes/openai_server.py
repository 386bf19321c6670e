"""A fake OpenAI Chat Completions server: OpenAI's headers and the builders of its real wire shapes.

The HTTP machinery is ``tests.fakes.http_server``; this module only knows OpenAI.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from typing import Any, Literal

from tests.fakes.http_server import FakeProvider, JsonReply, RecordedRequest, StreamReply

__all__ = ["FakeOpenAI", "JsonReply", "RecordedRequest", "StreamReply"]

MODEL = "gpt-4-turbo-2024-04-09"
Usage = dict[str, Any] | Literal["auto"] | None  # "auto": token counts derived from the scripted content


class FakeOpenAI(FakeProvider):
    base_path = "/v1"

    def response_headers(self) -> dict[str, str]:
        return {
            "openai-organization": "user-fakeorg",
            "openai-version": "2020-10-01",
            "x-request-id": f"req_{uuid.uuid4().hex}",
        }

    def unscripted(self, method: str, path: str) -> JsonReply:
        message = f"Fake OpenAI server: no reply was scripted for {method} {path}."
        return JsonReply(500, error_body(message, type="server_error"))


# ---- builders of OpenAI's real shapes -------------------------------------------------------------------


def _usage(usage: Usage, completion_tokens: int) -> dict[str, Any] | None:
    if usage != "auto":
        return usage
    return dict(prompt_tokens=12, completion_tokens=completion_tokens, total_tokens=12 + completion_tokens)


def chunk(
    delta: dict[str, Any] | None = None,
    *,
    finish_reason: str | None = None,
    model: str = MODEL,
    usage: dict[str, Any] | None = None,
    empty_choices: bool = False,
    id: str = "chatcmpl-fake123",
    created: int | None = None,
    index: int = 0,
) -> dict[str, Any]:
    """A chat.completion.chunk; empty_choices=True gives the final usage-only chunk of include_usage.
    With n > 1 each chunk carries one choice, whose ``index`` says which answer it belongs to."""
    choice = {"index": index, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}
    return {
        "id": id,
        "object": "chat.completion.chunk",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "system_fingerprint": "fp_5f1c9e3a7b",
        "choices": [] if empty_choices else [choice],
        "usage": usage,
    }


def sse(data: dict[str, Any] | str) -> bytes:
    """One SSE event the way OpenAI frames it: compact JSON, raw UTF-8, blank-line terminated."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"data: {text}\n\n".encode()


def _stream(deltas: list[dict[str, Any]], finish: str, model: str, usage: dict[str, Any] | None, done: bool) -> bytes:
    created = int(time.time())  # OpenAI repeats one timestamp on every chunk of a stream
    out = [sse(chunk(d, model=model, created=created)) for d in deltas]
    out.append(sse(chunk({}, finish_reason=finish, model=model, created=created)))
    if usage is not None:
        out.append(sse(chunk(model=model, usage=usage, empty_choices=True, created=created)))
    if done:
        out.append(sse("[DONE]"))
    return b"".join(out)


def text_stream(
    parts: list[str],
    *,
    model: str = MODEL,
    usage: Usage = "auto",
    finish_reason: str = "stop",
    done: bool = True,
) -> bytes:
    """Body of a plain text stream: role chunk, one chunk per part, finish chunk, usage chunk, [DONE]."""
    deltas = [{"role": "assistant", "content": "", "refusal": None}] + [{"content": p} for p in parts]
    return _stream(deltas, finish_reason, model, _usage(usage, len(parts)), done)


def _fragments(text: str, size: int = 5) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def tool_call_stream(calls: list[tuple[str, str, str]], *, model: str = MODEL, usage: Usage = "auto") -> bytes:
    """Tool calls as OpenAI streams them: id/name first per index, then arguments in small fragments."""
    deltas: list[dict[str, Any]] = []
    for i, (call_id, name, arguments) in enumerate(calls):
        head = {"index": i, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        first: dict[str, Any] = {"tool_calls": [head]}
        deltas.append({"role": "assistant", "content": None, **first, "refusal": None} if i == 0 else first)
        deltas += [{"tool_calls": [{"index": i, "function": {"arguments": a}}]} for a in _fragments(arguments)]
    return _stream(deltas, "tool_calls", model, _usage(usage, max(1, len(deltas))), True)


def legacy_function_call_stream(name: str, arguments_json: str, *, model: str = MODEL) -> bytes:
    """The deprecated `functions` API: delta.function_call fragments, finish_reason "function_call"."""
    deltas = [{"role": "assistant", "content": None, "function_call": {"name": name, "arguments": ""}}]
    deltas += [{"function_call": {"arguments": a}} for a in _fragments(arguments_json)]
    return _stream(deltas, "function_call", model, None, True)


def completion(text: str, *, model: str = MODEL, usage: Usage = "auto") -> dict[str, Any]:
    """A full non-stream chat.completion object."""
    message = {"role": "assistant", "content": text, "refusal": None}
    return {
        "id": "chatcmpl-fake123",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_5f1c9e3a7b",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": _usage(usage, max(1, len(text) // 4)),
    }


def error_body(
    message: str, *, type: str = "invalid_request_error", code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def invalid_key_reply(api_key: str) -> JsonReply:
    """OpenAI's 401: the key keeps its first 8 and last 4 characters, the rest starred."""
    masked = api_key if len(api_key) <= 12 else api_key[:8] + "*" * (len(api_key) - 12) + api_key[-4:]
    message = (
        f"Incorrect API key provided: {masked}. "
        "You can find your API key at https://platform.openai.com/account/api-keys."
    )
    return JsonReply(401, error_body(message, code="invalid_api_key"))


def stream_error(message: str, type: str = "server_error") -> bytes:
    """An error event as OpenAI sends it inside an already-started 200 stream."""
    return sse({"error": {"message": message, "type": type, "param": None, "code": None}})


def split_every(body: bytes, n: int) -> list[bytes]:
    """n-byte pieces, cutting SSE lines and UTF-8 characters wherever they fall."""
    return [body[i : i + n] for i in range(0, len(body), n)]


def split_randomly(body: bytes, seed: int, largest: int = 9) -> list[bytes]:
    """Pieces of 1 to ``largest`` bytes, cut at seeded random places: a run is repeatable, and each
    seed cuts lines, JSON and UTF-8 characters differently."""
    draw = random.Random(seed)
    pieces, at = [], 0
    while at < len(body):
        size = draw.randint(1, largest)
        pieces.append(body[at : at + size])
        at += size
    return pieces


def split_inside(body: bytes, marker: str) -> list[bytes]:
    """Two pieces, cut inside the UTF-8 encoding of the first `marker` (which must be multibyte)."""
    encoded = marker.encode()
    at = body.find(encoded)
    if at < 0 or len(encoded) < 2:
        raise ValueError(f"{marker!r} is not a multibyte sequence present in the body")
    cut = at + len(encoded) // 2
    return [body[:cut], body[cut:]]


def keepalive() -> bytes:
    """An SSE comment line, as OpenAI-compatible servers (e.g. OpenRouter) send while the model thinks."""
    return b": keep-alive\n\n"


def crlf(body: bytes) -> bytes:
    """The same stream with CRLF line endings (legal SSE, sent by some proxies)."""
    return body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
