"""A reasoning model's answer is whole for a page that joins late, thinking included.

A compatible server (the fake speaks DeepSeek's ``reasoning_content``) thinks in 2,500 pieces, cites
a source, then answers in 600. The stream's log is kept to ``log_bytes`` (4 KiB: folded again and
again) and the channel's history holds 200 messages, so a page that joins in the middle, after the
end or once the log has expired can only be made whole by snapshots, which must carry the reasoning
and the sources as well as the text. Each page, over WebSocket and over SSE, must end with exactly
``end.reasoning``, ``end.sources`` and ``end.text`` (``tests/raw_pages.py`` checks each event).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import Server
from tests.fakes.openai_server import FakeOpenAI, StreamReply, _stream
from tests.messaging.test_whole_answers import LOG_TTL, Broker, running, start_watched
from tests.raw_pages import Pages, last_seq
from tests.services import until

pytestmark = pytest.mark.anyio

THOUGHTS = [f"t{i} " for i in range(2_500)]
ANSWER = [f"a{i} " for i in range(600)]
SOURCE = {"url": "https://example.org/paper", "title": "The paper"}


def thinking_answer() -> list[bytes]:
    """One SSE event per TCP write, so the answer takes a while and pages can join mid-way."""
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": None, "reasoning_content": ""}]
    deltas += [{"content": None, "reasoning_content": piece} for piece in THOUGHTS]
    cite = {"type": "url_citation", "url_citation": {**SOURCE, "start_index": 0, "end_index": 3}}
    deltas += [{"content": piece} for piece in ANSWER[:1]] + [{"annotations": [cite]}]
    deltas += [{"content": piece} for piece in ANSWER[1:]]
    body = _stream(deltas, "stop", "deepseek-reasoner", None, True)
    return [event + b"\n\n" for event in body.split(b"\n\n") if event]


async def test_late_pages_get_the_reasoning_whole(
    start_server: Callable[..., Awaitable[Server]], fake_openai: FakeOpenAI
) -> None:
    broker = Broker("memory", {})  # the log holds stream events whatever they carry: one broker shows it
    settings = {"streams": {"log_ttl": LOG_TTL, "log_bytes": 4096}, "messaging": {"history_size": 200}}
    server = await start_server(**settings, **broker.settings)
    fake_openai.enqueue(StreamReply(thinking_answer(), delay=0.0005))
    watcher, watching = await start_watched(server, 1)
    pages = Pages(server, watcher.joined[0]["epoch"])
    body = {
        "apiKey": server.api_key, "channels": ["room"], "actionName": "onStream", "includeReasoning": True,
        "payload": {"model": "deepseek-reasoner", "messages": [{"role": "user", "content": "Think."}]},
    }  # fmt: skip
    response = await server.post("/stream/create", body)
    assert response.status_code == 200, response.text
    stream_id = response.json()["streamId"]

    def past(seq: int) -> Callable[[], bool]:
        return lambda: last_seq(watcher.answers, stream_id) >= seq

    await pages.open("at the start", 1)
    await until(past(1_200), 60, "the middle of the thinking")
    late = await pages.open("while it thinks", 1)
    await until(past(2_700), 60, "the answer's middle")
    late += await pages.open("while it answers", 1)
    assert await running(server, stream_id), "the answer ended before the late pages joined"
    await watching
    ended_at = time.monotonic()
    late += await pages.open("just after the end", 1)
    await pages.finish()
    await broker.log_gone(server.app_id, stream_id, ended_at)
    late += await pages.open("once the log expired", 1)
    await pages.finish()

    end = watcher.answers.streams[stream_id].end
    assert end is not None
    assert end["reasoning"] == "".join(THOUGHTS) and end["sources"] == [SOURCE]
    assert watcher.answers.whole(stream_id) == "".join(ANSWER)
    for page in pages.answers:
        assert page.whole(stream_id) == "".join(ANSWER), page.name  # and the reasoning and sources, as end says
    for page in late:
        assert page.streams[stream_id].snapshots >= 1, page.name
