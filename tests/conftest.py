"""One real server per test: the real app on uvicorn, on a free port, with a fake OpenAI beside it.

Clients are real: httpx over TCP and ``websockets`` for the browser side. Only the LLM provider
is fake, and it speaks OpenAI's wire format byte for byte (``tests/fakes/openai_server.py``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from bfstream.api.app import create_app
from bfstream.config import load_settings
from bfstream.store.sqlite import Store
from tests.fakes.openai_server import FakeOpenAI

PROVIDER_KEY = "sk-test-SuperSecretProviderKey-1234"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class WSClient:
    """A browser tab: a real WebSocket connection, read frame by frame."""

    def __init__(self, conn: ClientConnection, hello: dict[str, Any]) -> None:
        self.conn = conn
        self.hello = hello
        self.frames: list[dict[str, Any]] = [hello]

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.conn.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        frame = json.loads(await asyncio.wait_for(self.conn.recv(), timeout))
        self.frames.append(frame)
        return frame

    async def request(self, frame: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send and return the reply that echoes this request's id (frames before it stay in ``frames``)."""
        await self.send(frame)
        while True:
            reply = await self.recv(timeout)
            if reply.get("op") != "message" and reply.get("id") == frame.get("id"):
                return reply

    async def join(self, channel: str) -> None:
        reply = await self.request({"op": "join", "channel": channel, "id": f"join-{channel}"})
        assert reply["op"] == "joined", reply

    async def stream_events(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Read until an ``end`` event; return every stream event (the named action's options)."""
        events = []
        while True:
            frame = await self.recv(timeout)
            if frame["op"] != "message":
                continue
            (action,) = frame["message"]["actions"]
            events.append(action["options"])
            if action["options"]["type"] == "end":
                return events

    async def messages_so_far(self) -> list[dict[str, Any]]:
        """Every message frame received until now: a ping round trip flushes what the server queued."""
        await self.request({"op": "ping", "id": "flush"})
        return [f for f in self.frames if f.get("op") == "message"]


@dataclass
class Server:
    url: str
    app_id: str
    api_key: str
    other_app_id: str
    other_api_key: str
    http: httpx.AsyncClient

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/message/ws"

    async def ws(self, app_id: str | None = None, channels: tuple[str, ...] = ()) -> WSClient:
        conn = await connect(f"{self.ws_url}?app={app_id or self.app_id}")
        client = WSClient(conn, json.loads(await asyncio.wait_for(conn.recv(), 5)))
        for channel in channels:
            await client.join(channel)
        return client

    async def post(self, path: str, body: Any) -> httpx.Response:
        return await self.http.post(self.url + path, json=body)


ServerFactory = Callable[..., Awaitable[Server]]


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def start_server(
    tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ServerFactory]:
    """Start servers with settings overrides; all are shut down at the end of the test."""
    # The documented way to point the OpenAI adapter elsewhere, as users of the official SDK do.
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    running: list[tuple[uvicorn.Server, asyncio.Task[None], httpx.AsyncClient]] = []

    async def start(**overrides: Any) -> Server:
        overrides.setdefault("services", {"echo": {"delay_ms": 1}})
        settings = load_settings(data_dir=tmp_path / f"data{len(running)}", **overrides)
        store = Store(settings.database_path)
        app, key = store.create_app("test")
        other, other_key = store.create_app("other")
        store.close()
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.005)
        port = server.servers[0].sockets[0].getsockname()[1]
        http = httpx.AsyncClient(timeout=10)
        running.append((server, task, http))
        return Server(f"http://127.0.0.1:{port}", app.id, key, other.id, other_key, http)

    yield start
    for server, task, http in running:
        await http.aclose()
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def server(start_server: ServerFactory) -> Server:
    return await start_server()


def seed_body(server: Server, **payload: Any) -> dict[str, Any]:
    """The example body of the BetterForms Streaming API page, verbatim but for the keys."""
    return {
        "apiKey": server.api_key,
        "channels": ["anonymous"],
        "actionName": "assistantReceiveResultsStream",
        "service": "openAI",
        "payload": {
            "apiKey": PROVIDER_KEY,
            "stream": True,
            "functions": [],
            "max_tokens": 4000,
            "seed": 1,
            "messages": [
                {"content": "You are a Chuck Norris Joke teller.", "role": "system"},
                {"content": "create a joke about software developers", "role": "user"},
            ],
            "model": "gpt-4-turbo-preview",
            "temperature": 0,
            **payload,
        },
    }
