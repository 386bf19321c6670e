"""An app's back end, as a test's webhook receiver: a real HTTP server on a free port that checks
every request's signature the way docs/tools.md tells receivers to, records what it got, and
answers with what the test's ``answer`` function returns (a tool's result)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bfstream.webhooks import verify

Answer = Callable[[dict[str, Any]], Awaitable[tuple[int, Any]]]


@dataclass
class Received:
    body: dict[str, Any]
    headers: dict[str, str]
    verified: bool
    at: float
    raw: bytes = b""  # the body as it came, for a receiver's own signature check


async def _ok(body: dict[str, Any]) -> tuple[int, Any]:
    return 200, {"success": True, "message": "done"}


class WebhookReceiver:
    def __init__(self, secret: str = "", answer: Answer = _ok) -> None:
        self.secret = secret  # set once bfstream made it (apps update --webhook prints it)
        self.answer = answer
        self.received: list[Received] = []
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def _hook(self, request: Request) -> Response:
        raw = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified = verify(
            self.secret, headers.get("x-bfstream-timestamp", ""), raw, headers.get("x-bfstream-signature", "")
        )
        body = json.loads(raw)
        self.received.append(Received(body, headers, verified, asyncio.get_running_loop().time(), raw))
        if not verified:
            return JSONResponse({"error": "bad signature"}, status_code=401)
        status, answer = await self.answer(body)
        return JSONResponse(answer, status_code=status)

    async def __aenter__(self) -> WebhookReceiver:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        async with asyncio.timeout(10):
            while not self._server.started:
                await asyncio.sleep(0.005)
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        await asyncio.wait_for(self._task, 10)
