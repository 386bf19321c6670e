"""Request bodies: refuse oversized ones with 413 before any parsing, refuse those holding text that
is not Unicode (lone surrogates, see ``bfstream/text.py``) with 400, and read every POST body as
JSON whatever its Content-Type says (``curl -d`` and FileMaker's Insert from URL send form types
by default, and the JSON they carry is what the caller meant).

Parsing happens on the event loop, at some 40 ns a byte, before any key is checked: so each client
address has a budget of body bytes (``limits.body_bytes_per_address``), past which it gets 429
instead of the loop's time."""

from __future__ import annotations

import json
import math

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bfstream.api.errors import error_body
from bfstream.config import Rate
from bfstream.fleet.ratelimits import TokenBucket
from bfstream.nesting import nesting_problem
from bfstream.text import body_problem

_MAX_ADDRESSES = 10_000  # budgets kept before the full (idle) ones are forgotten
_SLOW_DOWN = "Too many request bytes from this address: slow down (limits.body_bytes_per_address)"

# Endpoints whose bodies are a key and an id or two: a big body there is an attack, not a request,
# and parsing even a valid 8 MB one costs the event loop a third of a second.
SMALL_BODY_BYTES = 64 * 1024
SMALL_BODY_PATHS = frozenset(
    {
        "/stream/stop",
        "/llm/query/stop",
        "/stream/status",
        "/message/token",
        "/message/channels",
        "/message/users",
        "/message/allusers",
    }
)


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, per_address: Rate) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self._drain_budget = 8 * max_bytes
        self._per_address = per_address
        self._budgets: dict[str, TokenBucket] = {}  # client address -> its body bytes; full ones are dropped

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = min(SMALL_BODY_BYTES, self.max_bytes) if scope["path"] in SMALL_BODY_PATHS else self.max_bytes
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self._drain_budget):
            await self._too_large(send, limit)  # too large to be worth reading even to answer politely
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit or (declared is not None and int(declared) > limit):
                await self._drain(receive, message)
                await self._too_large(send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if wait := self._budget(scope).take(len(body)):
            await _refuse(send, 429, _SLOW_DOWN, "rate_limited", wait)
            return
        if (problem := nesting_problem(body)) is not None:
            await _refuse(send, 400, problem, "validation_error")
            return
        if body and (refusal := body_problem(body)) is not None:
            await _refuse(send, 400, *refusal)
            return
        # Every other header as sent, repeats included (two Idempotency-Key headers must be seen as two).
        kept = [(name, value) for name, value in scope["headers"] if name != b"content-type"]
        scope = {**scope, "headers": [*kept, (b"content-type", b"application/json")]}
        pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)

    def _budget(self, scope: Scope) -> TokenBucket:
        address = scope["client"][0] if scope.get("client") else ""
        bucket = self._budgets.get(address)
        if bucket is None:
            if len(self._budgets) >= _MAX_ADDRESSES:  # forget the addresses that are quiet again
                self._budgets = {a: b for a, b in self._budgets.items() if not b.full}
                if len(self._budgets) >= _MAX_ADDRESSES:  # all busy: start over rather than grow
                    self._budgets.clear()
            rate = self._per_address
            bucket = self._budgets[address] = TokenBucket(rate.rate, max(rate.burst, self.max_bytes))
        return bucket

    async def _drain(self, receive: Receive, message: Message) -> None:
        """Read (and drop) a bit more of an oversized body, so a client that writes it all before reading
        the answer sees the 413 instead of a broken pipe. Bounded, so a bottomless body cannot hold us."""
        budget = self._drain_budget
        while message.get("more_body", False) and budget > 0:
            message = await receive()
            budget -= len(message.get("body", b""))

    async def _too_large(self, send: Send, limit: int) -> None:
        await _refuse(send, 413, f"The request body is larger than {limit} bytes", "payload_too_large")


async def _refuse(send: Send, status: int, message: str, type_: str, retry_after: float | None = None) -> None:
    body = json.dumps(error_body(message, status, type_)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
