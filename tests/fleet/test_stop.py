"""Issue 16, finding 1: in a fleet, ``/stream/stop`` answered ``stopped`` while the stream ran on to
its natural end in 2 to 5 of 16 tries. A ``stopped`` answer now means the stream ended stopped."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import WSClient
from tests.fleet.conftest import Fleet, echo_body

pytestmark = pytest.mark.anyio

LONG = " ".join(f"w{i}" for i in range(400))  # 8 s at 20 ms a word: still running when stopped


async def ends(listener: WSClient, wanted: set[str], timeout: float = 20) -> dict[str, dict[str, Any]]:
    """The ``end`` event of every stream in ``wanted``, as the channel delivers them."""
    found: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(timeout):
        while set(found) != wanted:
            frame = await listener.recv(timeout)
            if frame["op"] != "message":
                continue
            options = frame["message"]["actions"][0]["options"]
            if options["type"] == "end" and options["streamId"] in wanted:
                assert options["streamId"] not in found, "two ends for one stream"
                found[options["streamId"]] = options
    return found


async def test_every_stopped_answer_is_followed_by_a_stopped_end_on_the_owner_or_another_instance(
    fleet: Fleet,
) -> None:
    generous = {"BFSTREAM_LIMITS__STREAMS__RATE": "1000", "BFSTREAM_LIMITS__STREAMS__BURST": "1000"}
    owner, other = await fleet.start(**generous), await fleet.start(**generous)
    listener = await other.ws(fleet.app_id, "room")
    for round_ in range(5):
        body = echo_body(fleet.api_key, words=LONG)
        created = await asyncio.gather(*(fleet.post(owner, "/stream/create", body) for _ in range(20)))
        assert all(r.status_code == 200 for r in created), [r.text for r in created]
        ids = [r.json()["streamId"] for r in created]
        # Half are stopped where they run, half through the instance that does not run them, all at once.
        answers = await asyncio.gather(
            *(fleet.post(owner if i % 2 else other, "/stream/stop", {"streamId": s}) for i, s in enumerate(ids))
        )
        statuses = {s: a.json()["status"] for s, a in zip(ids, answers, strict=True)}
        assert set(statuses.values()) == {"stopped"}, (round_, statuses)
        for stream_id, end in (await ends(listener, set(ids))).items():
            assert end["finish_reason"] == "stopped", (round_, stream_id, end["finish_reason"])
            assert LONG.startswith(end["text"]) and len(end["text"]) < len(LONG)
