"""Request bodies: refuse oversized ones with 413 before any parsing, refuse those holding text that
is not Unicode (lone surrogates, see ``bfstream/text.py``) with 400, and read every POST body as
JSON whatever its Content-Type says (``curl -d`` and FileMaker's Insert from URL send form types
by default, and the JSON they carry is what the caller meant)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bfstream.api.errors import error_body
from bfstream.nesting import nesting_problem
from bfstream.text import body_problem


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self._drain_budget = 8 * max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self._drain_budget):
            await self._too_large(send)  # too large to be worth reading even to answer politely
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes or (declared is not None and int(declared) > self.max_bytes):
                await self._drain(receive, message)
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if (problem := nesting_problem(body)) is not None:
            await _refuse(send, 400, problem, "validation_error")
            return
        if body and (refusal := body_problem(body)) is not None:
            await _refuse(send, 400, *refusal)
            return
        headers[b"content-type"] = b"application/json"
        scope = {**scope, "headers": list(headers.items())}
        pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)

    async def _drain(self, receive: Receive, message: Message) -> None:
        """Read (and drop) a bit more of an oversized body, so a client that writes it all before reading
        the answer sees the 413 instead of a broken pipe. Bounded, so a bottomless body cannot hold us."""
        budget = self._drain_budget
        while message.get("more_body", False) and budget > 0:
            message = await receive()
            budget -= len(message.get("body", b""))

    async def _too_large(self, send: Send) -> None:
        await _refuse(send, 413, f"The request body is larger than {self.max_bytes} bytes", "payload_too_large")


async def _refuse(send: Send, status: int, message: str, type_: str) -> None:
    body = json.dumps(error_body(message, status, type_)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
