"""``GET /stream/{id}/events`` on a fleet: any instance reads a stream that another runs, live, and
an instance shutting down ends its readers' SSE answers, which then resume from their offset on
another instance."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.fleet.conftest import Fleet, echo_body

pytestmark = pytest.mark.anyio

WORDS = " ".join(f"w{i}" for i in range(150))  # at 20 ms a word (the fleet's echo), 3 seconds


async def test_a_reader_on_another_instance_follows_live_and_resumes_after_a_shutdown(fleet: Fleet) -> None:
    owner = await fleet.start()
    other = await fleet.start()
    stream_id = await fleet.create(owner, **echo_body(fleet.api_key, words=WORDS))
    url = f"{other.url}/stream/{stream_id}/events"

    got: list[dict[str, Any]] = []
    controls: list[dict[str, Any]] = []
    stopping: asyncio.Task[int] | None = None
    async with asyncio.timeout(30):
        async with fleet.http.stream("GET", url, params={"offset": "-1", "live": "sse"}) as response:
            assert response.status_code == 200
            name = "message"
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    name = line[len("event: ") :]
                elif line.startswith("data: "):
                    data = json.loads(line[len("data: ") :])
                    if name == "data":
                        got += data
                    else:
                        controls.append(data)
                    if len(got) > 20 and stopping is None:
                        stopping = asyncio.ensure_future(other.stop())  # SIGTERM: it has no stream to drain
    assert stopping is not None and await stopping == 0
    assert "streamClosed" not in controls[-1] and got[-1]["type"] != "end"  # cut short, not finished

    # The reader resumes from its last offset on the owner, and misses nothing.
    offset = controls[-1]["streamNextOffset"]
    assert offset == f"{got[-1]['seq'] + 1:016d}"
    while True:
        response = await fleet.http.get(
            f"{owner.url}/stream/{stream_id}/events", params={"offset": offset, "live": "long-poll"}
        )
        offset = response.headers["stream-next-offset"]
        if response.status_code == 200:
            got += response.json()
        if response.headers.get("stream-closed") == "true":
            break
    assert [e["seq"] for e in got] == list(range(len(got)))
    assert got[-1]["type"] == "end" and got[-1]["text"] == WORDS
    assert "".join(e["content"] for e in got if e["type"] == "delta") == WORDS
