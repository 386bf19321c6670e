"""Channel modes: a user's browser publish in a ``listen`` channel reaches the channel and the app's
webhook, in a ``receive`` channel only the webhook; ``ignore``, anonymous connections and
channels the user was not added to never call the webhook. Deliveries never hold up the publisher."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import Server, WSClient
from tests.fakes.webhook_server import WebhookReceiver
from tests.services import until

pytestmark = pytest.mark.anyio

MESSAGE = {"actions": [{"action": "showAlert", "options": {"text": "hi"}}]}


class Backend(WebhookReceiver):
    """The app's back end: answers with the next of ``statuses`` (then 200) after ``delay`` seconds;
    ``accepted`` holds the deliveries it took (signature checked by ``WebhookReceiver``, answered 200)."""

    def __init__(self, statuses: tuple[int, ...] = (), delay: float = 0.0) -> None:
        super().__init__(answer=self._scripted)
        self._script = list(statuses)
        self._delay = delay
        self.accepted: list[dict[str, Any]] = []

    async def _scripted(self, body: dict[str, Any]) -> tuple[int, Any]:
        await asyncio.sleep(self._delay)
        status = self._script.pop(0) if self._script else 200
        if status == 200:
            self.accepted.append(body)
        return status, None

    def check(self) -> None:
        for delivery in self.received:
            assert delivery.verified and delivery.headers["x-bfstream-event"] == "message", delivery


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    async with Backend() as hook:
        yield hook
        hook.check()


async def use_webhook(server: Server, url: str, receiver: WebhookReceiver | None = None) -> None:
    """As ``bfstream apps update APP --webhook URL`` would; the receiver learns the secret it prints."""
    secrets: list[str | None] = []

    async def change(store: Any) -> None:
        secrets.append(await store.set_webhook(server.app_id, url))

    await server.change_app(change)
    if receiver is not None:
        assert secrets[0]
        receiver.secret = secrets[0]


async def add_user(server: Server, user_id: str, **modes: str) -> WSClient:
    """Add the user to each channel in its mode, then connect as them (they join those channels)."""
    channels = [{"name": name, "mode": mode} for name, mode in modes.items()]
    response = await server.post(
        "/message/adduser", {"apiKey": server.api_key, "users": [{"id": user_id, "channels": channels}]}
    )
    assert response.status_code == 201, response.text
    client = await server.ws_user(await server.token(user_id, f"{user_id}@example.com"))
    for _ in modes:
        assert (await client.recv())["op"] == "joined"
    return client


async def publish(client: WSClient, channel: str, request_id: str) -> tuple[dict[str, Any], float]:
    """The reply to a publish, and how long it took."""
    started = time.perf_counter()
    reply = await client.request({"op": "publish", "channel": channel, "message": MESSAGE, "id": request_id})
    return reply, time.perf_counter() - started


async def test_listen_reaches_the_channel_and_the_webhook(server: Server, backend: Backend) -> None:
    await server.allow_browser_publish()
    await use_webhook(server, backend.url, backend)
    alice = await add_user(server, "alice", room="listen")
    bob = await add_user(server, "bob", room="ignore")

    reply, _ = await publish(alice, "room", "p1")
    assert reply["op"] == "published"
    frame = await bob.recv()
    assert frame["op"] == "message" and frame["message"] == MESSAGE
    assert frame["from"] == {
        "kind": "browser",
        "connectionId": alice.hello["connectionId"],
        "user": {"id": "alice", "email": "alice@example.com"},
    }

    await until(lambda: len(backend.accepted) == 1)
    (payload,) = backend.accepted
    assert payload.pop("sentAt") == pytest.approx(time.time(), abs=5)
    assert payload == {
        "type": "message",
        "appId": server.app_id,
        "channel": "room",
        "mode": "listen",
        "from": frame["from"],
        "message": MESSAGE,
        "offset": reply["offset"],
        "epoch": reply["epoch"],
    }


async def test_receive_goes_to_the_webhook_only(server: Server, backend: Backend) -> None:
    await server.allow_browser_publish()
    await use_webhook(server, backend.url, backend)
    alice = await add_user(server, "alice", room="receive")
    bob = await add_user(server, "bob", room="ignore")

    reply, _ = await publish(alice, "room", "p1")
    assert reply == {"op": "forwarded", "channel": "room", "id": "p1"}
    await until(lambda: len(backend.accepted) == 1)
    assert backend.accepted[0]["mode"] == "receive" and backend.accepted[0]["message"] == MESSAGE
    assert "offset" not in backend.accepted[0]  # it is in no channel

    # Had the channel carried alice's message, it would come before this one.
    await server.send("room", {"actions": [{"action": "fromBackEnd"}]})
    frame = await bob.recv()
    assert frame["from"] == {"kind": "api"} and frame["offset"] == 1
    assert [f["op"] for f in await alice.messages_so_far()] == ["message"]  # only the back end's, not her own


async def test_ignore_and_anonymous_publishes_never_reach_the_webhook(server: Server, backend: Backend) -> None:
    await server.allow_browser_publish()
    await use_webhook(server, backend.url, backend)
    alice = await add_user(server, "alice", quiet="ignore", loud="listen")
    await alice.join("lobby")  # an anonymous channel: she was never added to it
    anonymous = await server.ws(channels=("lobby",))

    for client, channel in (
        (alice, "quiet"),
        (alice, "lobby"),
        (anonymous, "lobby"),
        (alice, alice.hello["channels"][0]),
    ):
        reply, _ = await publish(client, channel, channel)
        assert reply["op"] == "published", reply
    reply, _ = await publish(alice, "loud", "loud")
    assert reply["op"] == "published"
    # Deliveries start in the order of the publishes: any of the others would have come first.
    await until(lambda: len(backend.received) >= 1)
    assert [r.body["channel"] for r in backend.received] == ["loud"]


async def test_without_a_webhook(server: Server) -> None:
    """listen is then ignore; receive cannot deliver, and says so instead of dropping the message."""
    await server.allow_browser_publish()
    alice = await add_user(server, "alice", chat="listen", inbox="receive")
    reply, _ = await publish(alice, "chat", "p1")
    assert reply["op"] == "published"
    reply, _ = await publish(alice, "inbox", "p2")
    assert reply["op"] == "error" and reply["error"]["code"] == 409, reply
    assert "no webhook" in reply["error"]["message"]


async def test_a_dead_webhook_does_not_slow_the_publisher(server: Server) -> None:
    await server.allow_browser_publish()
    with socket.socket() as probe:  # a port nothing listens on: every delivery is refused and retried
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/hook"
    await use_webhook(server, closed)
    alice = await add_user(server, "alice", chat="listen", inbox="receive")
    bob = await add_user(server, "bob", chat="ignore")
    for i in range(5):
        for channel in ("chat", "inbox"):
            reply, took = await publish(alice, channel, f"{channel}-{i}")
            assert reply["op"] in ("published", "forwarded") and took < 0.5, (reply, took)
    assert [f["offset"] for f in await bob.messages_so_far()] == [1, 2, 3, 4, 5]


async def test_a_slow_webhook_does_not_slow_the_publisher(server: Server) -> None:
    async with Backend(delay=1.0) as hook:
        await server.allow_browser_publish()
        await use_webhook(server, hook.url, hook)
        alice = await add_user(server, "alice", chat="listen")
        for i in range(5):
            reply, took = await publish(alice, "chat", f"p{i}")
            assert reply["op"] == "published" and took < 0.5, (reply, took)
        await until(lambda: len(hook.accepted) == 5)
        hook.check()


async def test_a_failing_webhook_gets_the_message_once_retried(server: Server) -> None:
    async with Backend(statuses=(500, 503)) as hook:
        await server.allow_browser_publish()
        await use_webhook(server, hook.url, hook)
        alice = await add_user(server, "alice", inbox="receive")
        reply, took = await publish(alice, "inbox", "p1")
        assert reply["op"] == "forwarded" and took < 0.5
        await until(lambda: len(hook.accepted) == 1)  # after 0.5 s and 1 s of backoff
        assert len(hook.received) == 3
        # One delivery, tried three times: the receiver can tell a retry from a new message.
        assert len({r.headers["x-bfstream-delivery"] for r in hook.received}) == 1
        hook.check()


async def test_the_mode_is_read_on_every_publish(server: Server, backend: Backend) -> None:
    """adduser changes a mode on open connections too: the next publish goes the new way."""
    await server.allow_browser_publish()
    await use_webhook(server, backend.url, backend)
    alice = await add_user(server, "alice", room="ignore")
    reply, _ = await publish(alice, "room", "p1")
    assert reply["op"] == "published"
    body = {"apiKey": server.api_key, "users": [{"id": "alice", "channels": [{"name": "room", "mode": "receive"}]}]}
    assert (await server.post("/message/adduser", body)).status_code == 201
    reply, _ = await publish(alice, "room", "p2")
    assert reply["op"] == "forwarded"
    await until(lambda: len(backend.accepted) == 1)
    assert len(backend.received) == 1
