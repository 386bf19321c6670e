"""History and recovery: a client that drops and comes back ends up with every message exactly once."""

from __future__ import annotations

import asyncio

import pytest

from bfstream.messaging.protocol import encode_positions
from tests.conftest import Server, WSClient, seed_body, sse_connect

pytestmark = pytest.mark.anyio

WORDS = [f"w{i}" for i in range(500)]


def echo_stream(server: Server) -> dict:
    body = seed_body(server, messages=[{"role": "user", "content": " ".join(WORDS)}])
    body["service"] = "echo"
    return body


def stream_text(frames: list[dict]) -> str:
    options = [f["message"]["actions"][0]["options"] for f in frames]
    return "".join(o["content"] for o in options if o["type"] == "delta")


def assert_each_offset_once_in_order(frames: list[dict]) -> None:
    offsets = [f["offset"] for f in frames]
    assert offsets == list(range(1, len(offsets) + 1))
    assert len({f["epoch"] for f in frames}) == 1


async def read_messages(client: WSClient, count: int) -> list[dict]:
    frames = []
    while len(frames) < count:
        frame = await client.recv()
        if frame["op"] == "message":
            frames.append(frame)
    return frames


async def read_until_end(client: WSClient) -> list[dict]:
    frames = []
    while True:
        frame = await client.recv()
        if frame["op"] == "message":
            frames.append(frame)
            if frame["message"]["actions"][0]["options"]["type"] == "end":
                return frames


async def test_websocket_rejoin_with_since_gets_exactly_the_rest(start_server) -> None:
    server = await start_server(services={"echo": {"delay_ms": 2}})
    client = await server.ws(channels=("anonymous",))
    assert (await server.post("/stream/create", echo_stream(server))).status_code == 200
    before = await read_messages(client, 120)
    await client.conn.close()  # the phone enters a tunnel mid-answer

    await asyncio.sleep(0.2)  # the stream goes on meanwhile
    back = await server.ws()
    last = before[-1]
    joined = await back.request(
        {"op": "join", "channel": "anonymous", "since": {"offset": last["offset"], "epoch": last["epoch"]}, "id": "r"}
    )
    assert joined["recovered"] is True and joined["epoch"] == last["epoch"]
    after = await read_until_end(back)

    frames = before + after
    assert_each_offset_once_in_order(frames)
    assert stream_text(frames) == " ".join(WORDS)
    assert frames[-1]["message"]["actions"][0]["options"]["text"] == " ".join(WORDS)


async def test_sse_resumes_from_last_event_id(start_server) -> None:
    server = await start_server(services={"echo": {"delay_ms": 2}})
    frames: list[dict] = []
    async with sse_connect(server, ["anonymous"]) as sse:
        hello = await sse.next()
        assert hello.event == "hello" and hello.id is None
        joined = await sse.next()
        assert joined.event == "joined" and joined.id is not None
        assert (await server.post("/stream/create", echo_stream(server))).status_code == 200
        while len(frames) < 150:
            event = await sse.next()
            assert event.event == "message" and event.id
            frames.append(event.data)
        resume_from = sse.last_event_id
    await asyncio.sleep(0.2)
    async with sse_connect(server, ["anonymous"], last_event_id=resume_from) as sse:
        assert (await sse.next()).event == "hello"
        joined = await sse.next()
        assert joined.event == "joined" and joined.data["recovered"] is True
        while True:
            event = await sse.next()
            frames.append(event.data)
            if event.data["message"]["actions"][0]["options"]["type"] == "end":
                break
    assert_each_offset_once_in_order(frames)
    assert stream_text(frames) == " ".join(WORDS)


async def test_late_joiner_catches_up_from_offset_zero(server: Server) -> None:
    watcher = await server.ws(channels=("anonymous",))
    await server.post("/stream/create", echo_stream(server))
    live = await read_until_end(watcher)

    late = await server.ws()
    joined = await late.request({"op": "join", "channel": "anonymous", "since": {"offset": 0}, "id": "late"})
    assert joined["recovered"] is True and joined["offset"] == 0  # where the replay starts from
    replay = await read_messages(late, len(live))
    assert replay == live


async def test_epoch_change_after_restart_is_reported(start_server) -> None:
    server = await start_server()
    await server.send("room", {"actions": [{"action": "one"}]})
    first = await server.ws()
    joined = await first.request({"op": "join", "channel": "room", "since": {"offset": 0}, "id": 1})
    assert joined["offset"] == 0 and joined["recovered"] is True
    (replayed,) = await read_messages(first, 1)
    assert replayed["offset"] == 1
    await first.conn.close()
    await server.stop()

    restarted = await start_server(data_dir=server.data_dir)  # the in-memory history is gone
    client = await restarted.ws()
    again = await client.request(
        {"op": "join", "channel": "room", "since": {"offset": 1, "epoch": joined["epoch"]}, "id": 2}
    )
    assert again["recovered"] is False and again["epoch"] != joined["epoch"]
    assert await client.messages_so_far() == []


async def test_history_limit_makes_old_positions_unrecoverable(start_server) -> None:
    server = await start_server(messaging={"history_size": 5})
    for i in range(8):
        await server.send("room", {"actions": [{"action": "n", "options": {"i": i}}]})
    client = await server.ws()
    joined = await client.request({"op": "join", "channel": "room", "since": {"offset": 1}, "id": 1})
    assert joined["recovered"] is False and joined["offset"] == 1
    # What is still retained is replayed; recovered: false says something before it is gone.
    replay = await read_messages(client, 5)
    assert [f["offset"] for f in replay] == [4, 5, 6, 7, 8]
    fresh = await client.request({"op": "join", "channel": "room", "since": {"offset": 6}, "id": 2})
    assert fresh["recovered"] is True


async def test_join_with_since_while_publishing_has_no_gap_and_no_duplicate(server: Server) -> None:
    total = 300
    watcher = await server.ws(channels=("busy",))

    async def publish_all() -> None:
        for i in range(total):
            await server.send("busy", {"actions": [{"action": "n", "options": {"i": i}}]})

    publisher = asyncio.create_task(publish_all())
    seen = await read_messages(watcher, 40)
    resume = seen[-1]
    joiner = await server.ws()
    # Join while the publisher is still going: replayed history and live messages meet here.
    joined = await joiner.request(
        {"op": "join", "channel": "busy", "since": {"offset": resume["offset"], "epoch": resume["epoch"]}, "id": 1}
    )
    assert joined["recovered"] is True
    assert not publisher.done(), "the join has to happen while messages are still being published"
    await publisher
    rest = await read_messages(joiner, total - resume["offset"])
    assert [f["offset"] for f in rest] == list(range(resume["offset"] + 1, total + 1))
    assert [f["message"]["actions"][0]["options"]["i"] for f in rest] == list(range(resume["offset"], total))
    assert await joiner.messages_so_far() == rest  # and nothing after the last one


async def test_bad_since_is_an_error(server: Server) -> None:
    client = await server.ws()
    reply = await client.request({"op": "join", "channel": "x", "since": {"offset": "3"}, "id": 1})
    assert reply["op"] == "error" and reply["error"]["code"] == 400


async def test_a_position_past_the_channel_is_not_recovered(server: Server) -> None:
    """After a restart offsets start over; a client from before must hear that, even without an epoch."""
    await server.send("fresh", {"actions": [{"action": "one"}]})
    client = await server.ws()
    joined = await client.request({"op": "join", "channel": "fresh", "since": {"offset": 5}, "id": 1})
    assert joined["recovered"] is False and joined["offset"] == 1


async def test_dropping_right_after_joined_loses_nothing(server: Server) -> None:
    """The joined reply's position is where the replay starts, so it is a safe place to resume from."""
    for i in range(10):
        await server.send("lost", {"actions": [{"action": "n", "options": {"i": i}}]})
    first = await server.ws()
    joined = await first.request({"op": "join", "channel": "lost", "since": {"offset": 3}, "id": 1})
    await first.conn.close()  # gone before reading the replay
    again = await server.ws()
    rejoined = await again.request(
        {"op": "join", "channel": "lost", "since": {"offset": joined["offset"], "epoch": joined["epoch"]}, "id": 2}
    )
    assert rejoined["recovered"] is True
    assert [f["offset"] for f in await read_messages(again, 7)] == list(range(4, 11))


async def test_sse_id_of_joined_is_a_safe_resume_point(server: Server) -> None:
    for i in range(10):
        await server.send("lost", {"actions": [{"action": "n", "options": {"i": i}}]})
    first = await server.ws()
    joined = await first.request({"op": "join", "channel": "lost", "since": {"offset": 3}, "id": 1})
    last_id = None
    async with sse_connect(server, ["lost"], lastEventId=encode_positions({"lost": (3, joined["epoch"])})) as sse:
        await sse.next()  # hello
        event = await sse.next()
        assert event.event == "joined"
        last_id = sse.last_event_id  # the browser drops here, before any replayed message
    async with sse_connect(server, ["lost"], last_event_id=last_id) as sse:
        await sse.next()
        assert (await sse.next()).data["recovered"] is True
        offsets = [(await sse.next()).data["offset"] for _ in range(7)]
    assert offsets == list(range(4, 11))


async def test_sse_resume_survives_a_second_drop_during_the_replay(server: Server) -> None:
    """Until a channel's joined event goes out, event ids keep the position the client resumed from."""
    for i in range(6):
        await server.send("qA", {"actions": [{"action": "a", "options": {"i": i}}]})
        await server.send("qB", {"actions": [{"action": "b", "options": {"i": i}}]})
    async with sse_connect(server, ["qA", "qB"]) as sse:
        await sse.next()  # hello
        joined_a, joined_b = await sse.next(), await sse.next()
    start = encode_positions({"qA": (1, joined_a.data["epoch"]), "qB": (1, joined_b.data["epoch"])})
    async with sse_connect(server, ["qA", "qB"], last_event_id=start) as sse:
        await sse.next()  # hello
        assert (await sse.next()).data["channel"] == "qA"  # joined qA, then its replay
        assert (await sse.next()).data["offset"] == 2
        second_drop = sse.last_event_id  # gone before qB's joined went out
    received: dict[str, list[int]] = {"qA": [], "qB": []}
    async with sse_connect(server, ["qA", "qB"], last_event_id=second_drop) as sse:
        await sse.next()
        for _ in range(2 + 4 + 5):  # two joined events, qA 3..6, qB 2..6
            event = await sse.next()
            if event.event == "joined":
                assert event.data["recovered"] is True
            else:
                received[event.data["channel"]].append(event.data["offset"])
    assert received == {"qA": [3, 4, 5, 6], "qB": [2, 3, 4, 5, 6]}
