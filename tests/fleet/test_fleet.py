"""A fleet of real instances on one Redis and one PostgreSQL: whatever instance a request, a
browser or a stop button reaches, it acts as if there were one server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import SSEClient, WSClient, assert_well_formed
from tests.fleet.conftest import WORDS, Fleet, echo_body

pytestmark = pytest.mark.anyio


async def ws(instance: Any, app_id: str, query: str = "") -> WSClient:
    conn = await connect(f"ws://127.0.0.1:{instance.port}/message/ws?app={app_id}{query}")
    return WSClient(conn, json.loads(await asyncio.wait_for(conn.recv(), 5)))


async def test_a_stream_created_on_a_reaches_websocket_and_sse_clients_on_b(fleet: Fleet) -> None:
    a, b = await fleet.start(), await fleet.start()
    client = await b.ws(fleet.app_id, "room")
    params = {"app": fleet.app_id, "channel": "room"}
    async with fleet.http.stream("GET", b.url + "/message/sse", params=params) as response:
        sse = SSEClient(response)
        assert (await sse.next()).event == "hello"
        assert (await sse.next()).event == "joined"
        stream_id = await fleet.create(a)
        events = await client.stream_events()
        sse_events = []
        while not sse_events or sse_events[-1]["type"] != "end":
            event = await sse.next()
            sse_events.append(event.data["message"]["actions"][0]["options"])
    for received in (events, sse_events):
        assert_well_formed(received, stream_id)
        assert "".join(e["content"] for e in received if e["type"] == "delta") == WORDS
        assert received[-1]["text"] == WORDS and received[-1]["finish_reason"] == "stop"


async def test_a_client_that_drops_from_b_resumes_on_a_and_loses_nothing(fleet: Fleet) -> None:
    a, b = await fleet.start(), await fleet.start()
    first = await b.ws(fleet.app_id, "room")
    stream_id = await fleet.create(a)
    seen: list[dict[str, Any]] = []
    position: tuple[int, str] = (0, "")
    while len(seen) < 10:
        frame = await first.recv()
        if frame["op"] == "message":
            seen.append(frame["message"]["actions"][0]["options"])
            position = (frame["offset"], frame["epoch"])
    await first.conn.close()  # the phone enters a tunnel mid-answer
    second = await ws(a, fleet.app_id)
    since = {"offset": position[0], "epoch": position[1]}
    joined = await second.request({"op": "join", "channel": "room", "since": since, "id": 1})
    assert joined["recovered"] is True
    rest = await second.stream_events()
    events = seen + rest
    assert_well_formed(events, stream_id)  # every seq once, in order: nothing lost, nothing twice
    assert events[-1]["text"] == WORDS


async def test_stop_and_status_sent_to_b_act_on_the_stream_running_on_a(fleet: Fleet) -> None:
    a, b = await fleet.start(BFSTREAM_SERVICES__ECHO__DELAY_MS="60"), await fleet.start()  # 2.4 s of answer
    client = await a.ws(fleet.app_id, "room")
    stream_id = await fleet.create(a)
    await until_text(fleet, b, stream_id)
    live = await fleet.status(b, stream_id)
    assert live["status"] == "running" and live["text"] and WORDS.startswith(live["text"])
    stopped = await fleet.post(b, "/stream/stop", {"streamId": stream_id})
    assert stopped.json() == {"status": "stopped", "streamId": stream_id}
    events = await client.stream_events()
    assert events[-1]["finish_reason"] == "stopped" and len(events[-1]["text"]) < len(WORDS)
    record = await fleet.status(b, stream_id)
    assert record["status"] == "stopped" and record["text"] == events[-1]["text"]
    unknown = await fleet.post(b, "/stream/stop", {"streamId": "no-such-stream"})
    assert unknown.json()["status"] == "not_found"


async def until_text(fleet: Fleet, instance: Any, stream_id: str) -> None:
    async with asyncio.timeout(5):
        while not (await fleet.status(instance, stream_id)).get("text"):
            await asyncio.sleep(0.02)


async def test_users_added_on_a_reach_their_open_connection_on_b_at_once(fleet: Fleet) -> None:
    a, b = await fleet.start(), await fleet.start()
    token = (await fleet.post(a, "/message/token", {"apiKey": fleet.api_key, "userId": "u1"})).json()["token"]
    user = await ws(b, fleet.app_id, f"&token={token}")
    await user.join("lounge")  # joined while anonymous, then the user is added to it
    stranger = await b.ws(fleet.app_id, "vip")  # anonymous, in the channel before it becomes authenticated
    body = {"apiKey": fleet.api_key, "users": [{"id": "u1", "channels": [{"name": "vip"}, {"name": "lounge"}]}]}
    assert (await fleet.post(a, "/message/adduser", body)).status_code == 201
    joined = await user.recv()
    assert joined["op"] == "joined" and joined["channel"] == "vip"  # and no second joined for lounge:
    lounge = {"apiKey": fleet.api_key, "channels": ["lounge"], "message": {"actions": [{"action": "lounge"}]}}
    assert (await fleet.post(a, "/message/sendmessage", lounge)).status_code == 201
    assert (await user.recv())["message"] == {"actions": [{"action": "lounge"}]}
    assert (await stranger.recv())["op"] == "left"  # vip is for its users now
    message = {"apiKey": fleet.api_key, "channels": ["vip"], "message": {"actions": [{"action": "hi"}]}}
    assert (await fleet.post(a, "/message/sendmessage", message)).status_code == 201
    assert (await user.recv())["message"] == {"actions": [{"action": "hi"}]}
    assert (await fleet.post(a, "/message/removeuser", body)).status_code == 201
    left = await user.recv()
    assert left["op"] == "left" and left["channel"] == "vip"


async def test_the_listings_on_a_include_connections_on_b(fleet: Fleet) -> None:
    a, b = await fleet.start(), await fleet.start()
    await b.ws(fleet.app_id, "lobby")
    await a.ws(fleet.app_id, "lobby")
    token = (await fleet.post(a, "/message/token", {"apiKey": fleet.api_key, "userId": "u7"})).json()["token"]
    user = await ws(b, fleet.app_id, f"&token={token}")
    private = user.hello["connectionId"]
    channels = (await fleet.post(a, "/message/channels", {"apiKey": fleet.api_key})).json()
    assert channels == {"authenticated": [], "anonymous": ["lobby"]}
    users = (await fleet.post(a, "/message/users", {"apiKey": fleet.api_key})).json()
    assert users["lobby"] == 2 and users[f"tab|{private}"] == {"id": "u7", "email": None}


async def test_concurrent_publishes_through_a_and_b_share_one_gap_free_sequence(fleet: Fleet) -> None:
    a, b = await fleet.start(), await fleet.start()
    client = await a.ws(fleet.app_id, "count")
    start = client.frames[-1]["offset"]

    async def send(i: int) -> int:
        message = {"apiKey": fleet.api_key, "channels": ["count"], "message": {"actions": [{"n": i}]}}
        return (await fleet.post(a if i % 2 else b, "/message/sendmessage", message)).status_code

    assert set(await asyncio.gather(*(send(i) for i in range(120)))) == {201}
    offsets, numbers = [], set()
    while len(offsets) < 120:
        frame = await client.recv()
        if frame["op"] == "message":
            offsets.append(frame["offset"])
            numbers.add(frame["message"]["actions"][0]["n"])
    assert offsets == list(range(start + 1, start + 121)) and numbers == set(range(120))


async def test_an_app_limited_to_3_streams_gets_429_for_the_4th_whichever_instance(fleet: Fleet) -> None:
    limit = {"BFSTREAM_STREAMS__MAX_PER_APP": "3", "BFSTREAM_SERVICES__ECHO__DELAY_MS": "100"}
    a, b = await fleet.start(**limit), await fleet.start(**limit)
    answers = await asyncio.gather(
        *(fleet.post(a if i % 2 else b, "/stream/create", echo_body(fleet.api_key)) for i in range(4))
    )
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 200, 200, 429], [r.text for r in answers]
    refused = next(r for r in answers if r.status_code == 429).json()
    assert refused["success"] is False and refused["error"]["type"] == "rate_limited"
    for instance in (a, b):
        late = await fleet.post(instance, "/stream/create", echo_body(fleet.api_key))
        assert late.status_code == 429
    running = [r.json()["streamId"] for r in answers if r.status_code == 200]
    stopped = await fleet.post(a, "/stream/stop", {"streamId": running[0]})
    assert stopped.json()["status"] == "stopped"
    async with asyncio.timeout(5):  # the stopped stream's slot is free again, for the whole fleet
        while (await fleet.post(b, "/stream/create", echo_body(fleet.api_key))).status_code != 200:
            await asyncio.sleep(0.05)


async def test_rate_and_connection_limits_hold_for_the_fleet_not_per_instance(fleet: Fleet) -> None:
    limits = {
        "BFSTREAM_LIMITS__STREAMS__RATE": "0.01",  # no refill to speak of during the test
        "BFSTREAM_LIMITS__STREAMS__BURST": "4",
        "BFSTREAM_LIMITS__CONNECTIONS_PER_APP": "3",
    }
    a, b = await fleet.start(**limits), await fleet.start(**limits)
    answers = await asyncio.gather(
        *(fleet.post(a if i % 2 else b, "/stream/create", echo_body(fleet.api_key)) for i in range(10))
    )
    assert sorted(r.status_code for r in answers) == [200] * 4 + [429] * 6, [r.text for r in answers]
    assert all(int(r.headers["Retry-After"]) >= 1 for r in answers if r.status_code == 429)

    held = [await ws(a, fleet.app_id), await ws(b, fleet.app_id), await ws(a, fleet.app_id)]
    assert [c.hello["op"] for c in held] == ["hello"] * 3
    for instance in (a, b):  # the fourth is refused on either instance
        async with connect(f"ws://127.0.0.1:{instance.port}/message/ws?app={fleet.app_id}") as extra:
            await extra.wait_closed()
            assert extra.close_code == 4429
    await held[1].conn.close()  # a slot freed on b is free on a
    async with asyncio.timeout(5):
        while True:
            async with connect(f"ws://127.0.0.1:{a.port}/message/ws?app={fleet.app_id}") as again:
                with contextlib.suppress(ConnectionClosed):  # refused while b has not released it yet
                    if json.loads(await again.recv())["op"] == "hello":
                        break
            await asyncio.sleep(0.05)


async def test_sigterm_and_restart_of_a_leave_the_stream_running_on_b_alone(fleet: Fleet) -> None:
    a, b = await fleet.start(), await fleet.start(BFSTREAM_SERVICES__ECHO__DELAY_MS="60")
    client = await b.ws(fleet.app_id, "room")
    stream_id = await fleet.create(b)
    a.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(a.proc.wait(), 15) == 0
    restarted = await fleet.start()
    events = await client.stream_events(timeout=10)
    assert events[-1]["finish_reason"] == "stop" and events[-1]["text"] == WORDS
    assert "error" not in [e["type"] for e in events]
    record = await fleet.status(restarted, stream_id)
    assert record["status"] == "completed" and record["text"] == WORDS


async def test_sigkill_of_a_mid_stream_ends_it_for_bs_clients_within_10_s(fleet: Fleet) -> None:
    a, b = await fleet.start(BFSTREAM_SERVICES__ECHO__DELAY_MS="250"), await fleet.start()
    client = await b.ws(fleet.app_id, "room")
    await a.ws(fleet.app_id, "room")  # a connection that dies with A
    listed = await fleet.post(b, "/message/users", {"apiKey": fleet.api_key})
    assert listed.json()["room"] == 2
    stream_id = await fleet.create(a)
    events: list[dict[str, Any]] = []

    async def read_stream(count: int | None = None) -> None:
        """The stream's own events (from the server), until ``count`` of them or its end."""
        while (count is None or len(events) < count) and not (events and events[-1]["type"] == "end"):
            frame = await client.recv(timeout=12)
            if frame["op"] == "message" and frame["from"] == {"kind": "server"}:
                events.append(frame["message"]["actions"][0]["options"])

    await read_stream(4)
    # A browser's look-alike of the stream's next delta, far ahead in numbering: whoever ends the
    # stream for the dead instance must not take it for the stream's own.
    look_alike = {"type": "delta", "streamId": stream_id, "seq": 999, "content": "forged"}
    action = {"action": "namedAction", "name": "onStream", "options": look_alike}
    forged = await client.request({"op": "publish", "channel": "room", "message": {"actions": [action]}, "id": "f"})
    assert forged["op"] == "published"
    a.proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    # Before its lease lapses the stream exists but its instance is silent: a stop is told so.
    stop = await fleet.post(b, "/stream/stop", {"streamId": stream_id})
    assert stop.status_code == 503 and stop.json()["error"]["type"] == "unavailable"
    await read_stream()
    assert time.monotonic() - killed_at < 10
    assert_well_formed(events, stream_id)  # the numbering goes on where the dead instance left it
    assert [e["type"] for e in events][-2:] == ["error", "end"]
    assert "interrupted" in events[-2]["error"]["message"] and events[-2]["error"]["code"] == 503
    end = events[-1]
    assert end["finish_reason"] == "error"
    assert end["text"] == "".join(e["content"] for e in events if e["type"] == "delta")  # the text so far
    record = await fleet.status(b, stream_id)
    assert record["status"] == "interrupted" and record["finishReason"] == "error"
    # and the dead instance's connections leave the listings by themselves
    async with asyncio.timeout(10):
        while (await fleet.post(b, "/message/users", {"apiKey": fleet.api_key})).json().get("room") != 1:
            await asyncio.sleep(0.1)


async def test_an_app_made_with_the_cli_is_known_to_every_instance(fleet: Fleet) -> None:
    a, b = await fleet.start(), await fleet.start()
    made = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bfstream.cli", "apps", "create", "shop", "--json",
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "BFSTREAM_DATABASE_URL": fleet.env["BFSTREAM_DATABASE_URL"]},
    )  # fmt: skip
    out, _ = await made.communicate()
    assert made.returncode == 0
    shop = json.loads(out)
    for instance in (a, b):
        body = {"apiKey": shop["apiKey"], "channels": ["c"], "message": {"actions": []}}
        assert (await fleet.post(instance, "/message/sendmessage", body)).status_code == 201
    listing = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bfstream.cli", "apps", "list", "--json", "--database-url",
        fleet.env["BFSTREAM_DATABASE_URL"], stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    names = {app["name"] for app in json.loads((await listing.communicate())[0])}
    assert names == {"fleet", "shop"}


async def test_a_burst_of_joins_on_one_instance_queues_for_redis_instead_of_failing(fleet: Fleet) -> None:
    """More connections and joins at once than the Redis pool has connections: they wait for one,
    none gets a 503."""
    a = await fleet.start()

    async def connect_and_join(i: int) -> tuple[WSClient, dict[str, Any]]:
        client = await ws(a, fleet.app_id)
        return client, await client.request({"op": "join", "channel": "burst", "id": i})

    joined = await asyncio.gather(*(connect_and_join(i) for i in range(300)))
    replies = [reply for _, reply in joined]
    assert [r["op"] for r in replies] == ["joined"] * 300, [r for r in replies if r["op"] != "joined"][:3]
    for client, _ in joined:
        await client.conn.close()


async def test_an_owner_frozen_past_its_lease_and_fence_stops_its_stream_when_it_thaws(fleet: Fleet) -> None:
    """A process suspended longer than its lease (and, here, than the fence, which lasts history_ttl)
    is taken for dead; when it wakes it must find its stream ended and publish nothing more of it."""
    short = {"BFSTREAM_MESSAGING__HISTORY_TTL": "2"}
    a = await fleet.start(BFSTREAM_SERVICES__ECHO__DELAY_MS="100", **short)
    b = await fleet.start(**short)
    client = await b.ws(fleet.app_id, "room")
    stream_id = await fleet.create(a)
    while len([f for f in client.frames if f.get("op") == "message"]) < 4:
        await client.recv()
    a.proc.send_signal(signal.SIGSTOP)
    try:
        events = await client.stream_events(timeout=15)  # ended for it by B
        assert [e["type"] for e in events][-2:] == ["error", "end"]
        from redis.asyncio import Redis

        redis = Redis.from_url(fleet.env["BFSTREAM_BROKER_URL"])
        fence = f"{fleet.env['BFSTREAM_BROKER_PREFIX']}:{{{fleet.app_id}/room}}:fence:{stream_id}"
        async with asyncio.timeout(10):  # the fence is gone too: only the owner's own check is left
            while await redis.exists(fence):
                await asyncio.sleep(0.1)
        await redis.aclose()
    finally:
        a.proc.send_signal(signal.SIGCONT)
    async with asyncio.timeout(10):
        while "ended by another instance" not in a.output:
            await asyncio.sleep(0.05)
    sentinel = {"apiKey": fleet.api_key, "channels": ["room"], "message": {"actions": [{"n": "next"}]}}
    assert (await fleet.post(b, "/message/sendmessage", sentinel)).status_code == 201
    while (frame := await client.recv())["op"] != "message":
        pass
    assert frame["message"] == {"actions": [{"n": "next"}]}  # nothing of A's stream came first
    record = await fleet.status(b, stream_id)
    assert record["status"] == "interrupted" and record["finishReason"] == "error"
