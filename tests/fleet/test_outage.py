"""Redis goes away for one instance (it talks to Redis through a TCP proxy the test cuts) and
comes back: that instance refuses what it cannot do with the documented 503, keeps its browsers
connected, and recovers by itself, with nothing lost that history holds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.fleet.conftest import WORDS, Fleet, echo_body
from tests.services import REDIS_URL, Proxy

pytestmark = pytest.mark.anyio


async def until_health(fleet: Fleet, instance: Any, code: int, timeout: float = 10) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while (health := await fleet.http.get(instance.url + "/healthz")).status_code != code:
            await asyncio.sleep(0.05)
    return health.json()


async def next_message(client: Any) -> dict[str, Any]:
    while (frame := await client.recv(timeout=10))["op"] != "message":
        pass
    return frame


async def test_a_redis_outage_answers_503_keeps_connections_and_recovers_by_itself(fleet: Fleet) -> None:
    proxy = Proxy(REDIS_URL)
    await proxy.start()
    try:
        a = await fleet.start()
        await fleet.start()
        c = await fleet.start(redis_url=proxy.proxied_url, BFSTREAM_SERVICES__ECHO__DELAY_MS="200")
        watcher = await c.ws(fleet.app_id, "news")  # opened before the outage, kept through it
        listener = await a.ws(fleet.app_id, "room")
        stream_id = await fleet.create(c)
        assert (await next_message(listener))["message"]["actions"][0]["options"]["type"] == "threadInfo"

        await proxy.stop()
        health = await until_health(fleet, c, 503)
        assert health["broker"] == "down" and health["status"] == "broker_down"
        for path, body in (
            ("/stream/create", echo_body(fleet.api_key)),
            ("/message/sendmessage", {"apiKey": fleet.api_key, "channels": ["news"], "message": {"actions": []}}),
        ):
            refused = await fleet.post(c, path, body)
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            assert refused.json()["success"] is False and error["type"] == "broker_unavailable"
            assert "broker" in error["message"] and "127.0.0.1" not in refused.text  # no internal address
        assert (await watcher.request({"op": "ping", "id": "still-there"}))["op"] == "pong"
        # A new connection cannot join anything meanwhile, and is told why.
        async with connect(f"ws://127.0.0.1:{c.port}/message/ws?app={fleet.app_id}") as refused_ws:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(refused_ws.recv(), 5)
            assert refused_ws.close_code == 4503
        refused_sse = await fleet.http.get(c.url + "/message/sse", params={"app": fleet.app_id, "channel": "news"})
        assert refused_sse.status_code == 503 and refused_sse.json()["error"]["type"] == "broker_unavailable"

        # The stream that was running on C still ends for its listeners, with error then end.
        events = []
        while not events or events[-1]["type"] != "end":
            events.append((await next_message(listener))["message"]["actions"][0]["options"])
        assert [e["type"] for e in events][-2:] == ["error", "end"]

        during = {"apiKey": fleet.api_key, "channels": ["news"], "message": {"actions": [{"n": "during"}]}}
        assert (await fleet.post(a, "/message/sendmessage", during)).status_code == 201

        await proxy.start()
        assert (await until_health(fleet, c, 200))["broker"] == "up"
        assert (await next_message(watcher))["message"] == {"actions": [{"n": "during"}]}
        after = {"apiKey": fleet.api_key, "channels": ["news"], "message": {"actions": [{"n": "after"}]}}
        assert (await fleet.post(c, "/message/sendmessage", after)).status_code == 201
        assert (await next_message(watcher))["message"] == {"actions": [{"n": "after"}]}
        assert (await fleet.post(c, "/stream/create", echo_body(fleet.api_key, words="back"))).status_code == 200
        record = await fleet.status(a, stream_id)
        assert record["status"] in ("interrupted", "failed") and record["finishReason"] == "error"
    finally:
        for instance in fleet.instances:
            instance.proc.kill()
        await proxy.stop()


async def test_after_a_partition_heals_nothing_of_the_stream_lands_after_its_end(fleet: Fleet) -> None:
    """A partition holds the owner's last publish in a network buffer; another instance ends the
    stream meanwhile. When the network heals, that publish reaches Redis late and must be refused."""
    proxy = Proxy(REDIS_URL)
    await proxy.start()
    try:
        a = await fleet.start()
        c = await fleet.start(redis_url=proxy.proxied_url, BFSTREAM_SERVICES__ECHO__DELAY_MS="100")
        listener = await a.ws(fleet.app_id, "room")
        stream_id = await fleet.create(c)
        events = [(await next_message(listener))["message"]["actions"][0]["options"] for _ in range(3)]
        proxy.hold()  # bytes are held, nothing is reset: C's publishes wait, then time out
        while events[-1]["type"] != "end":
            events.append((await next_message(listener))["message"]["actions"][0]["options"])
        assert [e["type"] for e in events][-2:] == ["error", "end"]
        assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})  # no number twice
        proxy.release()  # the held publishes reach Redis now, after the end
        await until_health(fleet, c, 200, timeout=15)
        sentinel = {"apiKey": fleet.api_key, "channels": ["room"], "message": {"actions": [{"n": "next"}]}}
        assert (await fleet.post(a, "/message/sendmessage", sentinel)).status_code == 201
        assert (await next_message(listener))["message"] == {"actions": [{"n": "next"}]}
        assert (await fleet.status(a, stream_id))["status"] == "interrupted"
    finally:
        for instance in fleet.instances:
            instance.proc.kill()
        await proxy.stop()


async def test_a_database_outage_answers_503_and_recovers_by_itself(fleet: Fleet) -> None:
    proxy = Proxy(fleet.env["BFSTREAM_DATABASE_URL"])
    await proxy.start()
    try:
        a = await fleet.start(BFSTREAM_DATABASE_URL=proxy.proxied_url, BFSTREAM_SERVICES__ECHO__DELAY_MS="60")
        message = {"apiKey": fleet.api_key, "channels": ["news"], "message": {"actions": []}}
        assert (await fleet.post(a, "/message/sendmessage", message)).status_code == 201
        client = await a.ws(fleet.app_id, "room")
        running = await fleet.create(a)  # it streams on through the outage: saves only wait for later
        await proxy.stop()
        for path, body in (("/stream/create", echo_body(fleet.api_key)), ("/message/sendmessage", message)):
            refused = await fleet.post(a, path, body)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["type"] == "store_unavailable"
            assert "127.0.0.1" not in refused.text
        events = await client.stream_events(timeout=10)
        assert events[-1]["finish_reason"] == "stop" and events[-1]["text"] == WORDS
        await proxy.start()
        async with asyncio.timeout(10):
            while (await fleet.post(a, "/message/sendmessage", message)).status_code != 201:
                await asyncio.sleep(0.1)
        async with asyncio.timeout(10):  # and its record was written once the database was back
            while (await fleet.status(a, running))["status"] != "completed":
                await asyncio.sleep(0.1)
        stream_id = await fleet.create(a, **echo_body(fleet.api_key, words="back again"))
        assert (await fleet.status(a, stream_id))["streamId"] == stream_id
    finally:
        for instance in fleet.instances:
            instance.proc.kill()
        await proxy.stop()


async def test_a_stop_that_reaches_a_stream_waiting_to_send_its_end_does_not_cut_the_end_off(fleet: Fleet) -> None:
    """A stream whose broker went away waits to send its error and end; a stop arriving meanwhile
    finds nothing left to stop, and the end still goes out once the broker is back."""
    proxy = Proxy(REDIS_URL)
    await proxy.start()
    try:
        a = await fleet.start()
        c = await fleet.start(redis_url=proxy.proxied_url, BFSTREAM_SERVICES__ECHO__DELAY_MS="100")
        listener = await a.ws(fleet.app_id, "room")
        stream_id = await fleet.create(c)
        await next_message(listener)  # threadInfo: the stream runs
        await proxy.stop()
        async with asyncio.timeout(5):  # its next delta could not go out: it is ending, waiting to say so
            while f"stream {stream_id} failed" not in c.output:
                await asyncio.sleep(0.05)
        stop = await fleet.post(c, "/stream/stop", {"streamId": stream_id})
        assert stop.json()["status"] == "not_found"  # its own end is under way; there is nothing to stop
        await proxy.start()  # back well within its lease: nobody else ends the stream for it
        events = []
        while not events or events[-1]["type"] != "end":
            events.append((await next_message(listener))["message"]["actions"][0]["options"])
        assert [e["type"] for e in events][-2:] == ["error", "end"]
        assert events[-1]["finish_reason"] == "error"
        async with asyncio.timeout(10):
            while (await fleet.status(a, stream_id))["status"] == "running":
                await asyncio.sleep(0.1)
        assert (await fleet.status(a, stream_id))["status"] == "failed"
    finally:
        for instance in fleet.instances:
            instance.proc.kill()
        await proxy.stop()
