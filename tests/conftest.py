"""One real server per test: the real app on uvicorn, on a free port, with a fake OpenAI beside it.

Clients are real: httpx over TCP and ``websockets`` for the browser side. Only the LLM provider
is fake, and it speaks OpenAI's wire format byte for byte (``tests/fakes/openai_server.py``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
import hypothesis
import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from bfstream.api.app import DrainingServer, server_config
from bfstream.config import load_settings
from bfstream.store.store import open_store
from tests.fakes.openai_server import FakeOpenAI
from tests.secret_scan import PROVIDER_KEY, Scan
from tests.wire import check_server_frame

GENEROUS_RATES = ("streams", "messages", "publishes")


# Hypothesis keeps caches (character tables, constants it collects) in its home directory: a
# temporary one, so that no test run writes into the checkout.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="bfstream-hypothesis-")
hypothesis.configuration.set_hypothesis_home_dir(Path(_HYPOTHESIS_HOME))
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, True)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def secret_scan(request: pytest.FixtureRequest) -> Iterator[Scan]:
    """Every test is also a secret-scan scenario (``tests/secret_scan.py``): a key found in what it
    captured fails the test at teardown."""
    scan = Scan()
    scan.start()
    yield scan
    tmp_path = request.node.funcargs.get("tmp_path")
    scan.stop([tmp_path] if isinstance(tmp_path, Path) else [])
    if leaks := scan.captured.leaks():
        pytest.fail("a key left bfstream:\n" + "\n".join(leaks[:10]), pytrace=False)


# uvicorn's ERROR for a response the application left unfinished: a bug of ours unless the client
# is gone, which uvicorn checks first.
INCOMPLETE = "ASGI callable returned without completing response"


class _TracebackWatch(logging.Handler):
    """Every log record of the test's in-process servers that carries a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a record that cannot be formatted is the logging module's to report
            self.handleError(record)
            return
        if _cancelled_handler(record):
            return
        if record.exc_info or "Traceback" in text or INCOMPLETE in text:
            self.found.append(f"{record.name} {record.levelname}: {text}")


def _cancelled_handler(record: logging.LogRecord) -> bool:
    """Python 3.11's asyncio.start_server logs a connection handler cancelled before it finished (the
    test's loop closing under a fake server) as "Exception in callback" with a CancelledError; 3.12
    no longer does. Not a server's log, and nothing a test can prevent from inside the handler."""
    exc = record.exc_info[1] if record.exc_info else None
    return record.name == "asyncio" and isinstance(exc, asyncio.CancelledError) and "connection_made" in str(record.msg)


@pytest.fixture(autouse=True)
def quiet_log(request: pytest.FixtureRequest) -> Iterator[None]:
    """Issue 16's quiet log, checked on every test: a server log holding a traceback fails the test.
    A client's bad input is one INFO or WARNING line and an outage one WARNING line with its cause,
    so a traceback means a bug, unless the test crashed something inside on purpose and says so
    with ``@pytest.mark.traceback_expected("why")``.

    Watched: the records of this process (the ``server`` and ``start_server`` fixtures' uvicorn),
    on the root logger and on ``uvicorn``, which does not propagate to it; and the whole output of
    every ``ServeProcess`` the test started."""
    watch = _TracebackWatch()
    root, server_logger = logging.getLogger(), logging.getLogger("uvicorn")
    configure_logging = uvicorn.Config.configure_logging

    def configure_then_watch(config: uvicorn.Config) -> None:
        configure_logging(config)
        server_logger.addHandler(watch)  # uvicorn's logging set-up drops the handlers it did not make

    root.addHandler(watch)
    server_logger.addHandler(watch)
    uvicorn.Config.configure_logging = configure_then_watch  # type: ignore[method-assign]
    ServeProcess.started = []
    try:
        yield
    finally:
        uvicorn.Config.configure_logging = configure_logging  # type: ignore[method-assign]
        root.removeHandler(watch)
        server_logger.removeHandler(watch)
        found = watch.found
        for instance in ServeProcess.started:
            found += [f"bfstream serve on port {instance.port}:\n{instance.output}"] if instance.tracebacks() else []
            instance.discard()
        ServeProcess.started = []
    if found and request.node.get_closest_marker("traceback_expected") is None:
        shown = "\n---\n".join(text[-4000:] for text in found[:3])
        pytest.fail(f"{len(found)} traceback(s) in the server log:\n{shown}", pytrace=False)


class WSClient:
    """A browser tab: a real WebSocket connection, read frame by frame."""

    def __init__(self, conn: ClientConnection, hello: dict[str, Any]) -> None:
        self.conn = conn
        self.hello = hello
        check_server_frame(hello)
        self.frames: list[dict[str, Any]] = [hello]

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.conn.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        frame = json.loads(await asyncio.wait_for(self.conn.recv(), timeout))
        self.frames.append(frame)
        check_server_frame(frame)
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
    data_dir: Path
    stop: Callable[[], Awaitable[None]]

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/message/ws"

    async def ws(self, app_id: str | None = None, channels: tuple[str, ...] = ()) -> WSClient:
        conn = await connect(f"{self.ws_url}?app={app_id or self.app_id}")
        client = WSClient(conn, json.loads(await asyncio.wait_for(conn.recv(), 5)))
        for channel in channels:
            await client.join(channel)
        return client

    async def ws_user(self, token: str) -> WSClient:
        conn = await connect(f"{self.ws_url}?app={self.app_id}&token={token}")
        return WSClient(conn, json.loads(await asyncio.wait_for(conn.recv(), 5)))

    async def post(self, path: str, body: Any) -> httpx.Response:
        return await self.http.post(self.url + path, json=body)

    async def send(self, channel: str, message: dict[str, Any], api_key: str | None = None) -> None:
        body = {"apiKey": api_key or self.api_key, "channels": [channel], "message": message}
        response = await self.post("/message/sendmessage", body)
        assert response.status_code == 201, response.text

    async def allow_browser_publish(self) -> None:
        """Browser publish is off for new apps; tests of it turn it on, as an operator would."""
        await self.change_app(lambda store: store.set_browser_publish(self.app_id, True))

    async def make_tool_arguments_public(self) -> None:
        """``apps update --tool-arguments public``: function_call events then carry backend tools'
        arguments, which tests of how a call's fragments are put together read."""
        await self.change_app(lambda store: store.set_tool_arguments_public(self.app_id, True))

    async def change_app(self, change: Callable[[Any], Awaitable[None]]) -> None:
        """Change the test app in the server's store, as the CLI would; the server reads it on use."""
        settings = load_settings(data_dir=self.data_dir)
        store = await open_store(settings.database_url, settings.data_dir)
        try:
            await change(store)
        finally:
            await store.close()

    async def token(self, user_id: str, email: str | None = None, **extra: Any) -> str:
        response = await self.post(
            "/message/token", {"apiKey": self.api_key, "userId": user_id, "email": email, **extra}
        )
        assert response.status_code == 200, response.text
        return response.json()["token"]


class StalledClient:
    """A WebSocket client that stops reading, as a phone in a tunnel does: raw socket, the websockets
    library's sans-I/O protocol for the framing, and no flow control of its own that could hide the stall."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: ClientProtocol) -> None:
        self.reader, self.writer, self.protocol = reader, writer, protocol
        self.texts: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, url: str) -> StalledClient:
        uri = parse_uri(url)
        reader, writer = await asyncio.open_connection(uri.host, uri.port)
        protocol = ClientProtocol(uri)
        protocol.send_request(protocol.connect())
        client = cls(reader, writer, protocol)
        client._flush()
        while not protocol.handshake_exc and protocol.state is not State.OPEN:
            await client._read_some()
        return client

    def _flush(self) -> None:
        self.writer.write(b"".join(self.protocol.data_to_send()))

    async def _read_some(self) -> bool:
        data = await self.reader.read(65536)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        for event in self.protocol.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self.texts.append(json.loads(event.data))
        self._flush()  # pongs and the closing handshake
        return bool(data)

    async def send(self, frame: dict[str, Any]) -> None:
        self.protocol.send_text(json.dumps(frame).encode())
        self._flush()
        await self.writer.drain()

    def stall(self) -> None:
        self.writer.transport.pause_reading()

    async def read_to_close(self, timeout: float = 20) -> int | None:
        """Resume reading, take everything buffered, return the close code the server sent (None: none)."""
        self.writer.transport.resume_reading()
        async with asyncio.timeout(timeout):
            while await self._read_some():
                pass
        return self.protocol.close_rcvd.code if self.protocol.close_rcvd else None


@dataclass
class SSEEvent:
    id: str | None
    event: str
    data: Any


class SSEClient:
    """An EventSource stand-in: a real streaming HTTP request, parsed here independently of bfstream's own
    parser, remembering the last event id as a browser does."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.last_event_id: str | None = None
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 5.0) -> SSEEvent:
        event_id, name, data = None, "message", []
        async with asyncio.timeout(timeout):
            while True:
                line = await anext(self._lines)
                if line == "":
                    if data:
                        if event_id is not None:
                            self.last_event_id = event_id
                        frame = json.loads("\n".join(data))
                        check_server_frame(frame)
                        return SSEEvent(event_id, name, frame)
                    continue
                if line.startswith(":"):
                    continue
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "id":
                    event_id = value
                elif field == "event":
                    name = value
                elif field == "data":
                    data.append(value)


@asynccontextmanager
async def sse_connect(
    server: Server, channels: list[str], last_event_id: str | None = None, **params: str
) -> AsyncIterator[SSEClient]:
    query = {"app": server.app_id, "channel": channels, **params}
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    async with server.http.stream("GET", server.url + "/message/sse", params=query, headers=headers) as response:
        yield SSEClient(response)


ServerFactory = Callable[..., Awaitable[Server]]


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def start_server(
    tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ServerFactory]:
    """Start servers with settings overrides; all are shut down at the end of the test.

    ``data_dir`` restarts on an existing data directory, with the same apps and keys."""
    # The documented way to point the OpenAI adapter elsewhere, as users of the official SDK do.
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    running: list[tuple[uvicorn.Server, asyncio.Task[None], httpx.AsyncClient]] = []
    apps: dict[Path, tuple[str, str, str, str]] = {}

    async def start(data_dir: Path | None = None, **overrides: Any) -> Server:
        overrides.setdefault("services", {"echo": {"delay_ms": 1}})
        # Tests publish and start streams as fast as they can; tests/api/test_limits.py sets its own.
        overrides.setdefault("limits", {name: {"rate": 1e6, "burst": 10**6} for name in GENEROUS_RATES})
        # The tests' webhook receivers listen on loopback, which a real deployment's may not.
        overrides.setdefault("tools", {"allow_private_webhooks": True})
        data_dir = data_dir or tmp_path / f"data{len(running)}"
        settings = load_settings(data_dir=data_dir, **overrides)
        if data_dir not in apps:
            store = await open_store(settings.database_url, settings.data_dir)
            app, key = await store.create_app("test")
            other, other_key = await store.create_app("other")
            await store.close()
            apps[data_dir] = (app.id, key, other.id, other_key)
        server = DrainingServer(server_config(settings, host="127.0.0.1", port=0, log_level="warning"))
        task = asyncio.create_task(server.serve())
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.005)
        port = server.servers[0].sockets[0].getsockname()[1]
        http = httpx.AsyncClient(timeout=10)
        running.append((server, task, http))

        async def stop() -> None:
            server.should_exit = True
            await asyncio.wait_for(task, 10)

        return Server(f"http://127.0.0.1:{port}", *apps[data_dir], http, data_dir, stop)

    yield start
    for server, task, http in running:
        await http.aclose()
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def server(start_server: ServerFactory) -> Server:
    return await start_server()


def assert_well_formed(events: list[dict[str, Any]], stream_id: str | None = None) -> None:
    """Every stream, whatever the provider: threadInfo first, end last and once, seq 0..n-1, one stream id."""
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "threadInfo" and events[-1]["type"] == "end"
    assert [e["type"] for e in events].count("end") == 1
    assert len({e["streamId"] for e in events}) == 1
    if stream_id is not None:
        assert events[0]["streamId"] == stream_id


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


class ServeProcess:
    """``bfstream serve`` as users run it: a separate process on a free port, for tests of signals.

    What it prints (stdout and stderr, as one stream) goes to a file outside the checkout, read
    back as ``output``: nothing has to keep reading it for the server not to block on a full pipe,
    and the whole of it is there for ``quiet_log`` once the test is over."""

    # The app of each data directory, made as an operator would (serve shows the first app's key
    # only on a terminal), and the same again when a test restarts a server on it.
    _apps: dict[Path, tuple[str, str]] = {}  # noqa: RUF012
    started: ClassVar[list[ServeProcess]] = []  # by the running test, for ``quiet_log``

    def __init__(self, proc: asyncio.subprocess.Process, port: int, log: Path, app: tuple[str, str] | None) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.app_id, self.api_key = app if app else (None, None)

    @property
    def output(self) -> str:
        """Everything it has printed so far."""
        return self.log.read_bytes().decode(errors="replace")

    @classmethod
    async def start(cls, data_dir: Path, **env: str) -> ServeProcess:
        app = None
        if "BFSTREAM_DATABASE_URL" not in env:  # a fleet's tests bring their own app
            if data_dir not in cls._apps:
                store = await open_store(None, data_dir)
                made, key = await store.create_app("default")
                await store.close()
                cls._apps[data_dir] = (made.id, key)
            app = cls._apps[data_dir]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        fd, name = tempfile.mkstemp(prefix="bfstream-serve-", suffix=".out")
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bfstream.cli", "serve", "--port", str(port), "--data-dir", str(data_dir),
                stdout=fd, stderr=asyncio.subprocess.STDOUT, env={**os.environ, **env},
            )  # fmt: skip
        except BaseException:
            os.close(fd)
            os.unlink(name)
            raise
        os.close(fd)
        instance = cls(proc, port, Path(name), app)
        cls.started.append(instance)
        try:
            async with asyncio.timeout(20):
                while "Uvicorn running on" not in instance.output:
                    assert proc.returncode is None, instance.output
                    await asyncio.sleep(0.01)
        except BaseException:  # a server that did not come up must not outlive the test
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        return instance

    def tracebacks(self) -> bool:
        output = self.output
        return "Traceback" in output or INCOMPLETE in output

    def discard(self) -> None:
        """At the end of the test: the process goes if it is still running, then its output file."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it ended since the loop last looked
                os.kill(self.proc.pid, signal.SIGKILL)
        self.log.unlink(missing_ok=True)

    async def ws(self, app_id: str, channel: str) -> WSClient:
        conn = await connect(f"ws://127.0.0.1:{self.port}/message/ws?app={app_id}")
        client = WSClient(conn, json.loads(await asyncio.wait_for(conn.recv(), 5)))
        await client.join(channel)
        return client

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.terminate()
        return await asyncio.wait_for(self.proc.wait(), 30)
