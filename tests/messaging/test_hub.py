"""The hub over a real Redis broker that goes away: a join that fails leaves nothing behind."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest

from bfstream.errors import BrokerError
from bfstream.messaging.broker import Publication
from bfstream.messaging.brokers.redis import RedisBroker
from bfstream.messaging.hub import Hub
from bfstream.messaging.tokens import User
from tests.services import Proxy, delete_keys, require_redis, unique_prefix, until

pytestmark = pytest.mark.anyio


class Collector:
    user: User | None = None

    def __init__(self) -> None:
        self.received: list[str] = []

    def deliver(self, channel: str, publication: Publication, frame: str) -> None:
        self.received.append(publication.data)

    async def leave(self, channel: str, request_id: Any = None) -> None:
        pass


async def test_a_join_that_fails_with_the_broker_down_is_tried_again_later() -> None:
    proxy = Proxy(require_redis())
    await proxy.start()
    prefix = unique_prefix()
    broker = RedisBroker(proxy.proxied_url, instance_id="hub-test", prefix=prefix)
    hub = Hub(broker)
    await hub.start()
    listener = Collector()
    try:
        await proxy.stop()
        await until(lambda: not broker.up, timeout=6)
        with pytest.raises(BrokerError):
            await hub.join(listener, "app/room")
        assert dict(hub.listeners("app")) == {}  # no channel left that would never be subscribed again
        await proxy.start()
        await until(lambda: broker.up, timeout=10)
        await hub.join(listener, "app/room")  # subscribes now
        await hub.publish("app/room", '"hello"')
        await until(lambda: listener.received == ['"hello"'])
    finally:
        await hub.stop()
        await proxy.stop()
        await delete_keys(require_redis(), prefix)


async def test_concurrent_joins_of_a_new_channel_all_wait_for_its_subscription() -> None:
    prefix = unique_prefix()
    broker = RedisBroker(require_redis(), instance_id="hub-test", prefix=prefix)
    hub = Hub(broker)
    await hub.start()
    listeners = [Collector() for _ in range(5)]
    try:
        await asyncio.gather(*(hub.join(listener, "app/many") for listener in listeners))
        await hub.publish("app/many", '"x"')  # every join returned, so every listener must get it
        await until(lambda: all(listener.received == ['"x"'] for listener in listeners))
    finally:
        await hub.stop()
        await delete_keys(require_redis(), prefix)


def test_one_process_imports_neither_redis_nor_asyncpg() -> None:
    """The embedded default runs without the fleet's packages installed."""
    code = (
        "import sys, bfstream.api.app, bfstream.cli;"
        "from bfstream.config import load_settings; from bfstream.fleet import open_fleet;"
        "import asyncio\nasync def build(): open_fleet(load_settings(create_first_app=False))\nasyncio.run(build());"
        "print(sorted(m for m in ('redis', 'asyncpg') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
