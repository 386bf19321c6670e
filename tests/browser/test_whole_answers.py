"""Issue 17's acceptance with ``bfstream.js`` in Chromium: an answer of 20,000 deltas ends whole, each
event once, on every page, whenever it joined, over WebSocket and over SSE.

One tab holds several clients, each with its own log (``conftest.SETUP``): per transport, one joins
(with catch-up) at the answer's start and one in its middle; three are joined from the start through
a relay of their own (``tests/services.Proxy``) that is cut mid-answer and let through again after
the history has moved on past them, just after the answer's end, and once the stream's log has
expired (``streams.log_ttl`` shortened: the record stands in, "50 minutes later"). A page that
*opens* after the end does not run the ended answer again, by design (docs/client.md, catchUp), so
"joining after the end" is, for ``bfstream.js``, a page that was away and comes back then.

Each client's handler appends what it gets; the check runs in the page: the deltas (a snapshot comes
as one delta marked ``snapshot``), ``client.text(streamId)`` and ``end.text`` are the answer, every
seq from 0 to the end's is there once (the events a snapshot is handed out as share its seq), and
no stream gap is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.browser.conftest import SETUP, OpenPage, wait_in_page
from tests.browser.test_client import ACTION
from tests.conftest import Server, ServerFactory
from tests.raw_pages import WSPage, echo_words, last_seq
from tests.services import Proxy, until

pytestmark = pytest.mark.anyio

LOG_TTL = 10.0
TRANSPORTS = ("websocket", "sse")

# What a client made of the stream, checked in the page: a 20,000-event log stays in the browser.
CHECK = """({ name, streamId }) => {
  const log = window.logs[name];
  const events = log.events.filter((e) => e.streamId === streamId);
  const problems = [];
  const ends = events.filter((e) => e.type === "end");
  if (ends.length !== 1 || events.at(-1) !== ends[0]) problems.push(`${ends.length} ends, or not last`);
  const end = ends[0] ?? { seq: -1, text: null };
  let last = -1, covered = -1, snapshotSeq = null;
  for (const e of events) {
    if (e.snapshot) {
      if (e.seq <= last && e.seq !== snapshotSeq) problems.push(`snapshot seq ${e.seq} after ${last}`);
      snapshotSeq = e.seq;
      last = Math.max(last, e.seq);
      covered = Math.max(covered, e.seq);
      continue;
    }
    if (e.seq !== covered + 1) problems.push(`seq ${e.seq} (${e.type}) after ${covered}`);
    last = covered = e.seq;
  }
  if (covered !== end.seq) problems.push(`ends at seq ${covered}, the end is ${end.seq}`);
  const deltas = events.filter((e) => e.type === "delta").map((e) => e.content).join("");
  const streamGaps = log.gaps.filter((g) => g.reason === "stream");
  if (streamGaps.length) problems.push(`stream gaps ${JSON.stringify(streamGaps)}`);
  if (log.errors.length) problems.push(`errors ${JSON.stringify(log.errors)}`);
  return {
    problems: problems.slice(0, 5),
    deltas,
    text: window.clients[name].text(streamId),
    endText: end.text,
    snapshots: events.filter((e) => e.snapshot).length,
    events: events.length,
  };
}"""


class Relay:
    """A client's own way to the server, to cut and let through again."""

    def __init__(self, server: Server) -> None:
        self.proxy = Proxy(server.url)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}"


@pytest.fixture
async def relays() -> AsyncIterator[list[Relay]]:
    made: list[Relay] = []
    yield made
    for relay in made:
        with contextlib.suppress(Exception):  # stopped already, when the test failed while it was cut
            await relay.proxy.stop()


async def start(page: Any, name: str, url: str, app_id: str, transport: str) -> None:
    setup = {"name": name, "url": url, "appId": app_id, "transport": transport, "channels": ["room"]}
    assert await page.evaluate(SETUP, {**setup, "catchUp": True}) == "open"


async def status(server: Server, stream_id: str) -> dict[str, Any]:
    response = await server.post("/stream/status", {"apiKey": server.api_key, "streamId": stream_id})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def server_past(server: Server, stream_id: str, words: int, timeout: float = 60) -> None:
    """Wait until the server has sent ``words`` words of the answer, as its record says (saved every
    second): the pages and the watcher, on this test's event loop with the server, read behind it."""
    async with asyncio.timeout(timeout):
        while len(((await status(server, stream_id)).get("text") or "").split()) < words:
            await asyncio.sleep(0.05)


async def test_bfstream_js_shows_an_answer_of_20000_deltas_whole_whenever_the_page_joins(
    start_server: ServerFactory, open_page: OpenPage, relays: list[Relay]
) -> None:
    count = 20_000
    answer = echo_words(count)
    # About 1.5 ms a word: ten clients, six relays and the server share this test's event loop, and
    # at a faster pace they fall so far behind that a join waits seconds for its turn.
    server = await start_server(services={"echo": {"delay_ms": 1}}, streams={"log_ttl": LOG_TTL})
    page = await open_page(server.url)
    watcher = WSPage("watcher")
    await watcher.join(server.url, server.app_id, {"offset": 0})
    watching = asyncio.create_task(watcher.read_to_end(1, timeout=120))

    away = {"back mid-answer": 5_000, "back after the end": 8_000, "back once the log expired": 9_000}
    cut: dict[str, Relay] = {}
    for transport in TRANSPORTS:
        for name in away:
            relay = Relay(server)
            await relay.proxy.start()
            relays.append(relay)
            cut[f"{name} ({transport})"] = relay
            await start(page, f"{name} ({transport})", relay.url, server.app_id, transport)

    body = {"apiKey": server.api_key, "channels": ["room"], "actionName": ACTION, "service": "echo"}
    body["payload"] = {"stream": True, "model": "echo", "messages": [{"role": "user", "content": answer}]}
    response = await server.post("/stream/create", body)
    assert response.status_code == 200, response.text
    stream_id = response.json()["streamId"]

    def past(seq: int) -> Any:
        return lambda: last_seq(watcher.answers, stream_id) >= seq

    await until(past(0), 10, "the answer's start")
    for transport in TRANSPORTS:
        await start(page, f"at the start ({transport})", server.url, server.app_id, transport)
    for name, at in sorted(away.items(), key=lambda item: item[1]):
        await server_past(server, stream_id, at)
        for transport in TRANSPORTS:
            await cut[f"{name} ({transport})"].proxy.stop()
    await server_past(server, stream_id, count // 2)
    for transport in TRANSPORTS:
        await start(page, f"in the middle ({transport})", server.url, server.app_id, transport)
    await server_past(server, stream_id, 14_000)  # 5,000 or more past every cut page; the history holds 1,000
    for transport in TRANSPORTS:
        await cut[f"back mid-answer ({transport})"].proxy.start()
    record = await status(server, stream_id)
    assert record["status"] == "running", "the answer ended before the pages came back or joined mid-answer"

    await watching
    ended_at = time.monotonic()
    for transport in TRANSPORTS:
        await cut[f"back after the end ({transport})"].proxy.start()
    await until(lambda: time.monotonic() > ended_at + LOG_TTL, LOG_TTL + 1, "the log's ttl to pass")  # memory broker
    for transport in TRANSPORTS:
        await cut[f"back once the log expired ({transport})"].proxy.start()

    names = [f"{name} ({transport})" for transport in TRANSPORTS for name in (*away, "at the start", "in the middle")]
    for name in names:
        await wait_in_page(page, "log.events.some((e) => e.type === 'end')", name, timeout=60)
    assert watcher.answers.whole(stream_id) == answer
    for name in names:
        seen = await page.evaluate(CHECK, {"name": name, "streamId": stream_id})
        assert seen["problems"] == [], f"{name}: {seen['problems']}"
        assert seen["deltas"] == seen["text"] == seen["endText"] == answer, name
        if name.startswith(("back", "in the middle")):
            assert seen["snapshots"] >= 1, f"{name}: made whole without a snapshot?"
    assert page.failures == []
