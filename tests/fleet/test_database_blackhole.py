"""PostgreSQL stops answering without refusing anything (a blackhole: the TCP peer accepts, then
never replies, as a dead network or a frozen host does). Every request that needs the database
still gets its 503 within the documented bound, the instance stays healthy and quiet, and it
serves again by itself once the database answers."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import pytest

from bfstream.errors import StoreError
from bfstream.store.postgres import PostgresDatabase
from tests.conftest import ServeProcess
from tests.fleet.conftest import Fleet, echo_body
from tests.services import Proxy, throwaway_database, until

pytestmark = pytest.mark.anyio

# docs/deployment.md, "When PostgreSQL is unreachable": a database call, waiting for a connection
# included, gives up after 10 s. The margin is for a machine shared with other test runs.
BOUND = 10.0
MARGIN = 2.0


async def timed_post(fleet: Fleet, instance: ServeProcess, path: str, body: dict[str, Any]) -> tuple[int, Any, float]:
    started = time.monotonic()
    # The fixture's client gives up after 10 s; this one must outwait the bound to measure it.
    response = await fleet.http.post(instance.url + path, json=body, timeout=BOUND * 3)
    return response.status_code, response.json(), time.monotonic() - started


async def probe_health(fleet: Fleet, instance: ServeProcess, stop: asyncio.Event) -> list[float]:
    """How long each /healthz took while the database was held (it must not wait for it)."""
    took = []
    while not stop.is_set():
        started = time.monotonic()
        health = await fleet.http.get(instance.url + "/healthz", timeout=BOUND)
        took.append(time.monotonic() - started)
        assert health.status_code == 200, health.text
        await asyncio.sleep(0.2)
    return took


async def test_a_database_blackhole_answers_503_within_the_bound_and_recovers_by_itself(fleet: Fleet) -> None:
    proxy = Proxy(fleet.env["BFSTREAM_DATABASE_URL"])
    await proxy.start()
    try:
        a = await fleet.start(BFSTREAM_DATABASE_URL=proxy.proxied_url)
        message = {"apiKey": fleet.api_key, "channels": ["news"], "message": {"actions": []}}
        # Warm the pool: some requests meet a connection that was open before the hold, the rest
        # wait for a new one that never gets past its start-up, or for a free place in the pool.
        assert (await fleet.post(a, "/message/sendmessage", message)).status_code == 201
        await fleet.create(a)
        quiet_from = len(a.output)

        proxy.hold()
        stop = asyncio.Event()
        health = asyncio.create_task(probe_health(fleet, a, stop))
        # More calls at once than the pool has connections (10): some queue for one.
        calls = [("/stream/create", echo_body(fleet.api_key))] * 7 + [("/message/sendmessage", message)] * 7
        answers = await asyncio.gather(*(timed_post(fleet, a, path, body) for path, body in calls))
        stop.set()
        health_took = await health

        print("answered after", ", ".join(f"{status} {elapsed:.2f} s" for status, _, elapsed in answers))
        for status, body, elapsed in answers:
            assert status == 503, body
            assert body["success"] is False and body["error"]["type"] == "store_unavailable", body
            assert elapsed < BOUND + MARGIN, f"{elapsed:.1f} s"
        assert health_took and max(health_took) < 1, health_took

        proxy.release()
        async with asyncio.timeout(5):  # by itself: nothing restarted, nothing reconfigured
            while (await fleet.post(a, "/message/sendmessage", message)).status_code != 201:
                await asyncio.sleep(0.1)
        stream_id = await fleet.create(a)
        assert (await fleet.status(a, stream_id))["streamId"] == stream_id

        during = a.output[quiet_from:]
        assert "Traceback" not in during, during
        # One line per failed call says why: a connection open before the hold, or a new one.
        assert f"the database is unreachable: no answer within {BOUND:g} s" in during, during
        assert "the database is unreachable: a new connection got no answer within 5 s" in during, during
    finally:
        for instance in fleet.instances:
            instance.proc.kill()
        proxy.release()  # a held relay would outlive the test
        await proxy.stop()


async def test_connections_that_stop_answering_while_open_are_dropped_not_waited_for(fleet: Fleet) -> None:
    """The connections open when the network failed stay dead while new ones get through (a NAT
    or a firewall that forgot them): the first call to meet one gives up within the bound, and no
    later call waits on another of them."""
    proxy = Proxy(fleet.env["BFSTREAM_DATABASE_URL"])
    await proxy.start()
    try:
        a = await fleet.start(BFSTREAM_DATABASE_URL=proxy.proxied_url)
        message = {"apiKey": fleet.api_key, "channels": ["news"], "message": {"actions": []}}
        sent = await asyncio.gather(*(fleet.post(a, "/message/sendmessage", message) for _ in range(5)))
        assert [response.status_code for response in sent] == [201] * 5
        links = len(proxy.links)
        quiet_from = len(a.output)

        for link in range(links):  # only the connections open now; new ones pass
            proxy.hold(link)
        status, body, elapsed = await timed_post(fleet, a, "/message/sendmessage", message)
        assert status == 503 and body["error"]["type"] == "store_unavailable", body
        assert elapsed < BOUND + MARGIN, f"{elapsed:.1f} s"
        # The pool's other connections are as dead as the first: none costs a call another bound.
        async with asyncio.timeout(BOUND + MARGIN):
            while (await fleet.post(a, "/message/sendmessage", message)).status_code != 201:
                await asyncio.sleep(0.1)
        answered = [await fleet.http.post(a.url + "/message/sendmessage", json=message, timeout=3) for _ in range(10)]
        assert [response.status_code for response in answered] == [201] * 10
        assert "Traceback" not in a.output[quiet_from:]
    except httpx.TimeoutException:
        pytest.fail("a call waited on a connection that had stopped answering")
    finally:
        for instance in fleet.instances:
            instance.proc.kill()
        proxy.release()  # a held relay would outlive the test
        await proxy.stop()


async def test_the_pools_own_warnings_while_the_database_is_away_are_one_line_with_the_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """asyncpg's pool keeps trying to restore its floor of open connections, and logs each failed
    try; with its traceback, a few seconds of outage would fill a screen."""
    caplog.set_level(logging.WARNING, logger="asyncpg.pool")
    async with throwaway_database() as url:
        proxy = Proxy(url)
        await proxy.start()
        database = await PostgresDatabase.connect(proxy.proxied_url)
        try:
            await proxy.stop()  # its one connection is cut, and a new one is refused
            with pytest.raises(StoreError):
                await database.fetch("SELECT 1")
            await until(lambda: any(record.name == "asyncpg.pool" for record in caplog.records))
            pool_records = [record for record in caplog.records if record.name == "asyncpg.pool"]
            for record in pool_records:
                assert record.levelno == logging.WARNING and record.exc_info is None and record.exc_text is None
                assert "ConnectionRefusedError" in record.getMessage(), record.getMessage()
            assert "Traceback" not in caplog.text
        finally:
            async with asyncio.timeout(5):
                await database.close()
