"""Whole answers on every join: a stream longer than the channel's history reaches a late page whole.

The channel keeps only its last messages; a join whose history is cut short gets each stream's
missing part from the stream's log (one snapshot, then its error and end if those are gone too),
as frames marked ``log``, before the replay. These tests read the wire as a raw client would: apply
a snapshot by replacing the stream's text, append deltas, and check every (streamId, seq) once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import Server, WSClient, seed_body

pytestmark = pytest.mark.anyio

WORDS = [f"w{i} " for i in range(600)]
ANSWER = "".join(WORDS)


def echo_body(server: Server, words: list[str] = WORDS, channels: list[str] | None = None) -> dict[str, Any]:
    body = seed_body(server, messages=[{"role": "user", "content": "".join(words)}])
    body["service"] = "echo"
    if channels is not None:
        body["channels"] = channels
    return body


class Page:
    """What a raw client keeps of each stream: its text and the seqs it has handled."""

    def __init__(self) -> None:
        self.text: dict[str, str] = {}
        self.seqs: dict[str, list[int]] = {}
        self.ended: dict[str, dict[str, Any]] = {}
        self.log_frames = 0

    def handle(self, frame: dict[str, Any]) -> None:
        if frame.get("log"):
            self.log_frames += 1
        if frame["from"]["kind"] != "server":
            return
        event = frame["message"]["actions"][0]["options"]
        stream, seq = event["streamId"], event["seq"]
        seen = self.seqs.setdefault(stream, [])
        assert not seen or seq > seen[-1], f"{stream}: seq {seq} after {seen[-1]}: out of order or twice"
        seen.append(seq)
        if event["type"] == "snapshot":
            self.text[stream] = event["text"]
        elif event["type"] == "delta":
            self.text[stream] = self.text.get(stream, "") + event["content"]
        elif event["type"] == "end":
            self.ended[stream] = event

    async def read_until_ended(self, client: WSClient, streams: int, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while len(self.ended) < streams:
                frame = await client.recv()
                if frame["op"] == "message":
                    self.handle(frame)


async def join(client: WSClient, channel: str, offset: int = 0, epoch: str | None = None) -> dict[str, Any]:
    since: dict[str, Any] = {"offset": offset} if epoch is None else {"offset": offset, "epoch": epoch}
    return await client.request({"op": "join", "channel": channel, "since": since, "id": "j"})


async def test_a_page_joining_after_a_long_answer_gets_all_of_it(start_server) -> None:
    server = await start_server(services={"echo": {"delay_ms": 0}}, messaging={"history_size": 100})
    watcher = await server.ws(channels=("room",))
    assert (await server.post("/stream/create", echo_body(server, channels=["room"]))).status_code == 200
    await Page().read_until_ended(watcher, 1)

    late = await server.ws()
    joined = await join(late, "room")
    assert joined["recovered"] is False  # the history alone could not give it back
    page = Page()
    await page.read_until_ended(late, 1)
    ((stream, end),) = page.ended.items()
    assert page.text[stream] == end["text"] == ANSWER
    assert page.log_frames == 1  # one snapshot stood for what the history had lost


async def test_pages_joining_mid_answer_end_with_the_whole_text(start_server) -> None:
    server = await start_server(services={"echo": {"delay_ms": 1}}, messaging={"history_size": 50})
    watcher = await server.ws(channels=("room",))
    assert (await server.post("/stream/create", echo_body(server, channels=["room"]))).status_code == 200
    pages = []
    for _ in range(3):
        seen = 0
        while seen < 150:  # let the answer outgrow the history between joins
            if (await watcher.recv())["op"] == "message":
                seen += 1
        client = await server.ws()
        await join(client, "room")
        pages.append((client, Page()))
    for client, page in pages:
        await page.read_until_ended(client, 1)
        ((stream, end),) = page.ended.items()
        assert page.text[stream] == ANSWER
        assert page.seqs[stream][-1] == end["seq"]


async def test_interleaved_streams_and_messages_all_come_back_whole(start_server) -> None:
    server = await start_server(services={"echo": {"delay_ms": 1}}, messaging={"history_size": 40})
    watcher = await server.ws(channels=("room",))
    answers = [[f"s{n}w{i} " for i in range(200)] for n in range(3)]
    for words in answers:
        response = await server.post("/stream/create", echo_body(server, words, channels=["room"]))
        assert response.status_code == 200
    for i in range(60):  # a back end's own messages in between
        await server.send("room", {"actions": [{"action": "noop", "i": i}]})
    await Page().read_until_ended(watcher, 3)

    late = await server.ws()
    await join(late, "room")
    page = Page()
    await page.read_until_ended(late, 3)
    assert sorted(page.text.values()) == sorted("".join(words) for words in answers)
    assert all(page.text[s] == end["text"] for s, end in page.ended.items())


async def test_a_log_folded_past_the_replay_still_gives_each_event_once(start_server) -> None:
    # The log folds every few events (4 KiB), so its snapshot reaches well into what the history
    # replays: the snapshot sent is cut back to end right before the replay, and nothing replayed is dropped.
    server = await start_server(
        services={"echo": {"delay_ms": 0}}, messaging={"history_size": 100}, streams={"log_bytes": 4096}
    )
    watcher = await server.ws(channels=("room",))
    assert (await server.post("/stream/create", echo_body(server, channels=["room"]))).status_code == 200
    await Page().read_until_ended(watcher, 1)

    late = await server.ws()
    await join(late, "room")
    page = Page()
    await page.read_until_ended(late, 1)
    ((stream, end),) = page.ended.items()
    assert page.text[stream] == end["text"] == ANSWER
    seqs = page.seqs[stream]
    assert seqs[1:] == list(range(seqs[1], end["seq"] + 1))  # the snapshot, then every replayed event
    assert len(seqs) - 1 == 100  # the whole replay: none of it dropped
