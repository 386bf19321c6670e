"""Several real ``bfstream serve`` processes sharing the machine's Redis and a throwaway PostgreSQL
database, as a fleet behind a load balancer would; the tests talk to each instance directly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bfstream.store.store import open_store
from tests import secret_scan
from tests.conftest import ServeProcess
from tests.raw_pages import WORDS, echo_body  # noqa: F401  (WORDS: the fleet tests' default answer)
from tests.services import delete_keys, require_redis, throwaway_database, unique_prefix


@dataclass
class Fleet:
    app_id: str
    api_key: str
    env: dict[str, str]
    root: Path
    http: httpx.AsyncClient
    instances: list[ServeProcess] = field(default_factory=list)

    async def start(self, redis_url: str | None = None, **env: str) -> ServeProcess:
        """One more instance; ``redis_url`` points it at Redis another way (through a proxy)."""
        extra = {"BFSTREAM_BROKER_URL": redis_url} if redis_url else {}
        instance = await ServeProcess.start(self.root / f"i{len(self.instances)}", **{**self.env, **extra, **env})
        self.instances.append(instance)
        return instance

    async def post(self, instance: ServeProcess, path: str, body: dict[str, Any]) -> httpx.Response:
        return await self.http.post(instance.url + path, json=body)

    async def create(self, instance: ServeProcess, **body: Any) -> str:
        response = await self.post(instance, "/stream/create", {**echo_body(self.api_key), **body})
        assert response.status_code == 200, response.text
        return response.json()["streamId"]

    async def status(self, instance: ServeProcess, stream_id: str) -> dict[str, Any]:
        response = await self.post(instance, "/stream/status", {"apiKey": self.api_key, "streamId": stream_id})
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    """Instances started with ``fleet.start()`` share one broker prefix and one database; all stop at the end."""
    redis_url = require_redis()
    prefix = unique_prefix()
    async with throwaway_database() as database_url:
        store = await open_store(database_url, tmp_path)
        app, key = await store.create_app("fleet", browser_publish=True)  # the forgery checks publish from browsers
        await store.close()
        env = {
            "BFSTREAM_BROKER_URL": redis_url,
            "BFSTREAM_BROKER_PREFIX": prefix,
            "BFSTREAM_DATABASE_URL": database_url,
            "BFSTREAM_CREATE_FIRST_APP": "false",
            "BFSTREAM_SERVICES__ECHO__DELAY_MS": "20",
            "BFSTREAM_MESSAGING__PRESENCE_TTL": "3",
            "BFSTREAM_LOG_LEVEL": "debug",  # for the secret scan
        }
        async with httpx.AsyncClient(timeout=10) as http:
            made = Fleet(app.id, key, env, tmp_path, http)
            try:
                yield made
            finally:
                for instance in made.instances:
                    if instance.proc.returncode is None:
                        instance.proc.kill()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(instance.proc.wait(), 10)
                for instance in made.instances:  # what each instance logged, at debug level
                    secret_scan.record("serve output", instance.output)
        await delete_keys(redis_url, prefix)
