"""The container image, built from the Dockerfile with podman and run as a user would run it
(issue 21): it serves, streams an echo answer to a WebSocket, drains on SIGTERM, and two of its
containers on the machine's Redis and PostgreSQL act as one fleet. The image is built once for
the module, on a plain Debian base made here (``tests/deploy/podman.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from websockets.asyncio.client import connect

from bfstream.store.store import open_store
from tests.conftest import WSClient, assert_well_formed
from tests.deploy import podman as pm
from tests.raw_pages import WORDS, echo_body
from tests.services import delete_keys, require_redis, throwaway_database, unique_prefix

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    pm.require_tools()
    tag = pm.build_image()
    try:
        yield tag
    finally:
        pm.remove_image(tag)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Container:
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def podman(self, *args: str, timeout: float = 60) -> str:
        return (await asyncio.to_thread(pm.podman, *args, timeout=timeout)).stdout

    async def logs(self) -> str:
        done = await asyncio.to_thread(pm.podman, "logs", self.name, check=False)
        return done.stdout + done.stderr

    async def healthy(self, http: httpx.AsyncClient, timeout: float = 60) -> None:
        """Poll /healthz until it answers 200; a container that exits meanwhile fails at once."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(self.url + "/healthz")).status_code == 200:
                    return
            state = (await self.podman("inspect", "--format", "{{.State.Status}}", self.name)).strip()
            assert state == "running", f"the container is {state}:\n{await self.logs()}"
            assert time.monotonic() < deadline, f"no /healthz within {timeout} s:\n{await self.logs()}"
            await asyncio.sleep(0.2)

    async def ws(self, app_id: str, channel: str) -> WSClient:
        conn = await connect(f"ws://127.0.0.1:{self.port}/message/ws?app={app_id}")
        client = WSClient(conn, json.loads(await asyncio.wait_for(conn.recv(), 5)))
        await client.join(channel)
        return client


@pytest.fixture
async def run_container(image: str) -> AsyncIterator:
    """Start containers of the image on the host's network, each on a free port; all removed at the end."""
    started: list[Container] = []

    async def run(**env: str) -> Container:
        container = Container(f"bfstream-test-{uuid.uuid4().hex[:10]}", free_port())
        settings = {"BFSTREAM_PORT": str(container.port), **env}
        flags = [part for name, value in settings.items() for part in ("-e", f"{name}={value}")]
        started.append(container)
        await container.podman("run", "-d", "--name", container.name, "--network=host", *flags, image)
        return container

    yield run
    for container in started:
        await asyncio.to_thread(pm.podman, "rm", "--force", "--volumes", container.name, check=False)


async def test_the_image_streams_an_echo_answer_and_drains_on_sigterm(run_container) -> None:
    container = await run_container(BFSTREAM_SERVICES__ECHO__DELAY_MS="50")  # 40 words: 2 s of answer
    async with httpx.AsyncClient(timeout=10) as http:
        await container.healthy(http)
        checked = await asyncio.to_thread(pm.podman, "healthcheck", "run", container.name, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr  # the image's own HEALTHCHECK
        user = (await container.podman("inspect", "--format", "{{.Config.User}}", container.name)).strip()
        assert user == "bfstream"
        made = json.loads(await container.podman("exec", container.name, "bfstream", "apps", "create", "t", "--json"))

        client = await container.ws(made["appId"], "room")
        created = await http.post(container.url + "/stream/create", json=echo_body(made["apiKey"]))
        assert created.status_code == 200, created.text
        stream_id = created.json()["streamId"]
        first = await client.recv()
        assert first["message"]["actions"][0]["options"]["streamId"] == stream_id  # the answer has begun

        await container.podman("kill", "--signal", "TERM", container.name)
        health = await http.get(container.url + "/healthz")  # still answering while the stream runs
        assert health.status_code == 503 and health.json()["status"] == "draining"
        refused = await http.post(container.url + "/stream/create", json=echo_body(made["apiKey"]))
        assert refused.status_code == 503

        rest = await client.stream_events(timeout=10)
    events = [first["message"]["actions"][0]["options"], *rest]
    assert_well_formed(events, stream_id)
    assert events[-1]["finish_reason"] == "stop" and events[-1]["text"] == WORDS  # finished, not cut
    exit_code = (await container.podman("wait", container.name, timeout=40)).strip()
    assert exit_code == "0", await container.logs()
    assert "draining" in await container.logs()


@pytest.fixture
async def fleet_settings() -> AsyncIterator[tuple[dict[str, str], str, str]]:
    """The environment of a fleet on the machine's Redis (a key prefix of its own) and PostgreSQL (a
    throwaway database), with one app made in it; both cleaned up afterwards."""
    redis_url = require_redis()
    prefix = unique_prefix()
    async with throwaway_database() as database_url:
        store = await open_store(database_url, pm.ROOT)  # PostgreSQL: the directory is not used
        app, key = await store.create_app("fleet")
        await store.close()
        env = {
            "BFSTREAM_BROKER_URL": redis_url,
            "BFSTREAM_BROKER_PREFIX": prefix,
            "BFSTREAM_DATABASE_URL": database_url,
            "BFSTREAM_CREATE_FIRST_APP": "false",
            "BFSTREAM_SERVICES__ECHO__DELAY_MS": "10",
        }
        try:
            yield env, app.id, key
        finally:
            await delete_keys(redis_url, prefix)


async def test_two_containers_on_redis_and_postgresql_stream_across_each_other(
    run_container, fleet_settings: tuple[dict[str, str], str, str]
) -> None:
    env, app_id, key = fleet_settings
    a, b = await run_container(**env), await run_container(**env)
    async with httpx.AsyncClient(timeout=10) as http:
        await asyncio.gather(a.healthy(http), b.healthy(http))
        on_b = await b.ws(app_id, "room")
        created = await http.post(a.url + "/stream/create", json=echo_body(key))
        assert created.status_code == 200, created.text
        stream_id = created.json()["streamId"]
        events = await on_b.stream_events(timeout=10)
        status = await http.post(b.url + "/stream/status", json={"apiKey": key, "streamId": stream_id})
    assert_well_formed(events, stream_id)
    assert events[-1]["text"] == WORDS and events[-1]["finish_reason"] == "stop"
    assert status.json()["status"] == "completed"
