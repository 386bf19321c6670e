"""A fake OpenAI Chat Completions server on raw asyncio sockets.

Tests script each reply down to how its bytes are cut into HTTP chunks, so bfstream's SSE parsing, UTF-8
reassembly, error handling and cancellation meet OpenAI's real wire format rather than a framework's.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Literal

MODEL = "gpt-4-turbo-2024-04-09"
Usage = dict[str, Any] | Literal["auto"] | None  # "auto": token counts derived from the scripted content
_PHRASES = {s.value: s.phrase for s in HTTPStatus}


@dataclass
class RecordedRequest:
    """One request as received, so tests can assert on what bfstream sent upstream."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class StreamReply:
    """200 text/event-stream reply sent as HTTP/1.1 chunked encoding, one HTTP chunk per item of `pieces`."""

    pieces: list[bytes]
    delay: float = 0.002
    disconnect: bool = False
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class JsonReply:
    """A whole JSON answer (non-stream completion or API error) with a Content-Length body."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class _Conn:
    """One accepted socket; a single pump task owns the reader so a client close is seen even mid-response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buf = bytearray()
        self.eof = False
        self.changed = asyncio.Event()
        self.closed = asyncio.Event()  # set only when the *client* went away
        self.closed_at = 0.0
        self.server_closing = False

    def mark_closed(self) -> None:
        if not self.closed.is_set() and not self.server_closing:
            self.closed_at = time.perf_counter()
            self.closed.set()

    async def pump(self) -> None:
        try:
            while data := await self.reader.read(65536):
                self.buf += data
                self.changed.set()
        except (ConnectionError, OSError):
            pass
        finally:
            self.eof = True
            self.mark_closed()
            self.changed.set()

    async def take(self, sep: bytes = b"", n: int = 0) -> bytes | None:
        """Bytes up to `sep` (which is dropped) or exactly `n` bytes; None if the client hung up first."""
        while (end := self.buf.find(sep) if sep else (n if len(self.buf) >= n else -1)) < 0:
            if self.eof:
                return None
            self.changed.clear()
            await self.changed.wait()
        data = bytes(self.buf[:end])
        del self.buf[: end + len(sep)]
        return data


class FakeOpenAI:
    """HTTP/1.1 keep-alive server that answers each request with the next scripted reply (FIFO)."""

    def __init__(self) -> None:
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self.first_byte_at: list[float] = []
        self._replies: deque[StreamReply | JsonReply] = deque()
        self._conns: list[_Conn] = []
        self._accepted = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def enqueue(self, *replies: StreamReply | JsonReply) -> None:
        self._replies.extend(replies)

    async def wait_closed(self, timeout: float = 5.0) -> float:
        """perf_counter() at which the client closed the most recent connection (raises TimeoutError)."""
        async with asyncio.timeout(timeout):
            await self._accepted.wait()
            conn = self._conns[-1]
            await conn.closed.wait()
        return conn.closed_at

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(reader, writer)
        self._conns.append(conn)
        self._accepted.set()
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        pump = asyncio.create_task(conn.pump())
        try:
            while (head := await conn.take(b"\r\n\r\n")) is not None:
                started = time.perf_counter()
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, path, _version = request_line.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
                body = await conn.take(n=int(headers.get("content-length", "0")))  # httpx never chunks JSON
                if body is None:
                    break
                self.requests.append(RecordedRequest(method, path, headers, body))
                reply = self._replies.popleft() if self._replies else self._unscripted(method, path)
                if isinstance(reply, StreamReply):
                    keep = await self._send_stream(conn, reply, started)
                else:
                    keep = await self._send_json(conn, reply, started)
                if not keep or headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, OSError):
            conn.mark_closed()  # a failed write means the client is gone
        except (ValueError, asyncio.CancelledError):
            pass  # malformed request, or stop(): drop the connection; a raising handler would only be logged
        finally:
            conn.server_closing = True
            writer.close()
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            self._tasks.discard(task)

    @staticmethod
    def _unscripted(method: str, path: str) -> JsonReply:
        message = f"Fake OpenAI server: no reply was scripted for {method} {path}."
        return JsonReply(500, error_body(message, type="server_error"))

    @staticmethod
    def _head(status: int, started: float, headers: dict[str, str]) -> bytes:
        fields = {
            "date": formatdate(usegmt=True),
            "connection": "keep-alive",
            "openai-organization": "user-fakeorg",
            "openai-processing-ms": str(round((time.perf_counter() - started) * 1000)),
            "openai-version": "2020-10-01",
            "x-request-id": f"req_{uuid.uuid4().hex}",
            **headers,
        }
        lines = [
            f"HTTP/1.1 {status} {_PHRASES.get(status, 'Unknown')}",
            *(f"{k}: {v}" for k, v in fields.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send_json(self, conn: _Conn, reply: JsonReply, started: float) -> bool:
        await asyncio.sleep(reply.delay)
        if conn.closed.is_set():
            return False
        body = json.dumps(reply.body, indent=2, ensure_ascii=False).encode()  # OpenAI pretty-prints these
        ctype = {"content-type": "application/json", "content-length": str(len(body))}
        conn.writer.write(self._head(reply.status, started, {**ctype, **reply.headers}) + body)
        await conn.writer.drain()
        return True

    async def _send_stream(self, conn: _Conn, reply: StreamReply, started: float) -> bool:
        ctype = {"content-type": "text/event-stream; charset=utf-8", "transfer-encoding": "chunked"}
        writer = conn.writer
        writer.write(self._head(reply.status, started, {**ctype, **reply.headers}))
        await writer.drain()
        first = True
        for piece in reply.pieces:
            if conn.closed.is_set() or writer.is_closing():
                return False
            if not piece:
                continue  # a zero-length HTTP chunk would end the body
            if first:
                self.first_byte_at.append(time.perf_counter())
                first = False
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(reply.delay)
        if reply.disconnect:
            conn.server_closing = True
            writer.transport.abort()
            return False
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


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
) -> dict[str, Any]:
    """A chat.completion.chunk; empty_choices=True gives the final usage-only chunk of include_usage."""
    choice = {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}
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
