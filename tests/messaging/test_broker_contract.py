"""The broker contract (``bfstream/messaging/broker.py``), held to by every backend: memory and Redis.

Redis tests run against the machine's real Redis, each under a key prefix of its own that is
deleted afterwards, and prove the fleet's promises with several broker instances. Outages are
made with a TCP proxy between a broker and Redis that the test cuts and restores.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bfstream.errors import BrokerError
from bfstream.messaging.broker import BROADCAST, Broker, Fenced, History, Publication, Stamp
from bfstream.messaging.brokers.memory import MemoryBroker
from tests.services import Proxy, delete_keys, require_redis, unique_prefix, until

pytestmark = pytest.mark.anyio


class Brokers:
    """The brokers of one test, all of one kind; Redis ones share the test's own key prefix."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.url = require_redis() if kind == "redis" else ""
        self.prefix = unique_prefix()
        self.started: list[Broker] = []

    @property
    def shared(self) -> bool:
        """Whether two brokers of this kind are one fleet (Redis) or strangers (memory: one process each)."""
        return self.kind == "redis"

    async def new(self, instance_id: str = "one", url: str | None = None, **options: Any) -> Broker:
        if self.kind == "memory":
            broker: Broker = MemoryBroker(instance_id=instance_id, **options)
        else:
            from bfstream.messaging.brokers.redis import RedisBroker  # redis is an optional extra

            broker = RedisBroker(url or self.url, instance_id=instance_id, prefix=self.prefix, **options)
        await broker.connect()
        self.started.append(broker)
        return broker

    async def close(self) -> None:
        for broker in self.started:
            await broker.disconnect()
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("bfstream-redis")]
        if self.kind == "redis":
            await delete_keys(self.url, self.prefix)


@pytest.fixture(params=["memory", "redis"])
async def brokers(request: pytest.FixtureRequest) -> AsyncIterator[Brokers]:
    made = Brokers(request.param)
    yield made
    await made.close()


@pytest.fixture
async def redis_brokers() -> AsyncIterator[Brokers]:
    made = Brokers("redis")
    yield made
    await made.close()


async def received(broker: Broker, count: int, timeout: float = 5.0) -> list[Publication]:
    async with asyncio.timeout(timeout):
        return [await broker.next_published() for _ in range(count)]


async def controls(broker: Broker, count: int, timeout: float = 5.0) -> list[str]:
    async with asyncio.timeout(timeout):
        return [await broker.next_control() for _ in range(count)]


def seen(history: History) -> tuple[list[int], bool]:
    return [p.offset for p in history.publications], history.complete


async def test_offsets_count_from_one_and_the_epoch_stays(brokers: Brokers) -> None:
    broker = await brokers.new()
    published = [await broker.publish("app/room", f"m{i}") for i in range(5)]
    assert [p.offset for p in published] == [1, 2, 3, 4, 5]
    assert len({p.epoch for p in published}) == 1
    assert await broker.history("app/room", None) == History([], 5, published[0].epoch, True)
    assert (await broker.publish("app/other", "x")).offset == 1  # each channel counts on its own


async def test_history_after_an_offset_says_when_trimming_lost_some(brokers: Brokers) -> None:
    broker = await brokers.new(history_size=3)
    for i in range(1, 6):
        await broker.publish("app/room", f"m{i} says ü 😀")
    assert seen(await broker.history("app/room", 0)) == ([3, 4, 5], False)
    assert seen(await broker.history("app/room", -7)) == ([3, 4, 5], False)  # below 0 means from the start
    assert seen(await broker.history("app/room", 1)) == ([3, 4, 5], False)  # 2 is gone
    assert seen(await broker.history("app/room", 2)) == ([3, 4, 5], True)
    assert seen(await broker.history("app/room", 4)) == ([5], True)
    assert seen(await broker.history("app/room", 5)) == ([], True)
    assert seen(await broker.history("app/room", 9)) == ([], True)
    assert [p.data for p in (await broker.history("app/room", 3)).publications] == ["m4 says ü 😀", "m5 says ü 😀"]

    quiet = await broker.history("app/quiet", None)  # never published: the position is 0, with an epoch
    assert quiet.offset == 0 and quiet.complete
    assert await broker.history("app/quiet", 0) == History([], 0, quiet.epoch, True)
    assert (await broker.publish("app/quiet", "first")).epoch == quiet.epoch  # the epoch handed out holds

    keepless = await brokers.new("keepless", history_size=0)
    await keepless.publish("app/keepless", "a")
    await keepless.publish("app/keepless", "b")
    assert (await keepless.history("app/keepless", 0)).publications == []
    assert seen(await keepless.history("app/keepless", 0)) == ([], False)
    assert seen(await keepless.history("app/keepless", 2)) == ([], True)


async def test_history_is_bounded_in_bytes_as_well_as_in_messages(brokers: Brokers) -> None:
    broker = await brokers.new(history_size=100, history_bytes=1000)
    for i in range(1, 11):
        await broker.publish("app/big", f"{i:03}" + "é" * 147)  # 300 bytes of UTF-8 each
    history = await broker.history("app/big", 0)
    assert seen(history) == ([8, 9, 10], False)  # three fit in 1,000 bytes; counted as UTF-8, not characters
    assert seen(await broker.history("app/big", 7)) == ([8, 9, 10], True)

    huge = await broker.publish("app/big", "x" * 1001)  # bigger than the whole bound: delivered, not kept
    assert huge.offset == 11
    assert seen(await broker.history("app/big", 10)) == ([], False)
    for _ in range(3):
        await broker.publish("app/big", "small")
    assert seen(await broker.history("app/big", 11)) == ([12, 13, 14], True)  # the count starts over cleanly


async def test_subscribe_then_publish_delivers_in_order(brokers: Brokers) -> None:
    broker = await brokers.new()
    await asyncio.gather(broker.subscribe("app/room"), broker.subscribe("app/room"))  # both wait, one subscription
    sent = [await broker.publish("app/room", f"m{i}") for i in range(20)]
    assert await received(broker, 20) == sent


async def test_unsubscribe_stops_delivery(brokers: Brokers) -> None:
    broker = await brokers.new()
    await broker.subscribe("app/gone")
    await broker.subscribe("app/kept")
    await broker.unsubscribe("app/gone")
    await broker.publish("app/gone", "nobody listens")
    kept = await broker.publish("app/kept", "published after, so it would come after")
    assert await received(broker, 1) == [kept]


async def test_control_reaches_this_instance_and_every_instance(brokers: Brokers) -> None:
    broker = await brokers.new("me")
    await broker.control("someone-else", "not for me")
    await broker.control("me", "for me")
    await broker.control(BROADCAST, "for all")
    assert await controls(broker, 2) == ["for me", "for all"]


async def test_control_to_another_instance_reaches_it_alone(redis_brokers: Brokers) -> None:
    a = await redis_brokers.new("a")
    b = await redis_brokers.new("b")
    await a.control("b", "for b")
    await a.control(BROADCAST, "for all")
    assert await controls(b, 2) == ["for b", "for all"]
    assert await controls(a, 1) == ["for all"]


async def test_publications_cross_instances_whole_and_in_order(redis_brokers: Brokers) -> None:
    publisher = await redis_brokers.new("publisher")
    listeners = [await redis_brokers.new("l1"), await redis_brokers.new("l2")]
    for listener in listeners:
        await listener.subscribe("app/room")
    messages = [json.dumps({"i": i, "text": "a  b\nc ü 😀", "pad": "x" * (i * 5000)}) for i in range(30)]
    sent = [await publisher.publish("app/room", message) for message in messages]
    for listener in listeners:
        got = await received(listener, 30)
        assert got == sent
        assert [p.data for p in got] == messages


async def test_a_raised_fence_refuses_the_publishes_behind_it_and_no_others(brokers: Brokers) -> None:
    owner = await brokers.new("owner")
    # With a shared broker the fence is raised by another instance, as when it ends a dead one's stream.
    other = await brokers.new("other") if brokers.shared else owner
    await owner.subscribe("app/room")
    first = await owner.publish("app/room", "delta", *stamp("stream1", 0))
    await other.raise_fence("app/room", "stream1")
    with pytest.raises(Fenced):
        await owner.publish("app/room", "late delta", *stamp("stream1", 1))
    end = await other.publish("app/room", "end")  # the one who raised it publishes unfenced
    other_stream = await owner.publish("app/room", "another stream", *stamp("stream2", 0))
    assert [p.offset for p in (first, end, other_stream)] == [1, 2, 3]  # the refused one took no offset
    assert [p.data for p in await received(owner, 3)] == ["delta", "end", "another stream"]
    elsewhere = await owner.publish("app/other", "same stream id, another channel", *stamp("stream1", 1))
    assert elsewhere.offset == 1
    # The refused event was not logged either: the log has what the channels got, and nothing else.
    assert await owner.read_log("stream1", "app/room") == [(0, "delta")]


def stamp(stream: str, seq: int, home: str = "app/room", fence: str | None = None) -> tuple[Stamp, int]:
    return Stamp(stream, home, fence or stream), seq


async def test_a_stream_logs_each_event_once_on_its_home_channel(brokers: Brokers) -> None:
    owner = await brokers.new("owner")
    reader = await brokers.new("reader") if brokers.shared else owner
    for seq in range(5):
        for channel in ("app/room", "app/other"):  # home first, as a stream publishes
            await owner.publish(channel, f"e{seq}", *stamp("s1", seq))
    assert await owner.publish("app/room", "e4 again", *stamp("s1", 4)) is None  # a repeat: not logged
    assert await reader.read_log("s1", "app/room") == [(seq, f"e{seq}") for seq in range(5)]
    assert await reader.read_log("s1", "app/room", after=2) == [(3, "e3"), (4, "e4")]
    assert await reader.read_log("s1", "app/room", after=4) == []
    assert await reader.read_log("nobody", "app/room") == []
    # Whoever ends the stream for a dead owner logs behind its own fence, continuing the numbering.
    await reader.publish("app/room", "error", *stamp("s1", 5, fence="s1.ended"))
    assert (await owner.read_log("s1", "app/room", after=4)) == [(5, "error")]


async def test_a_folded_log_keeps_a_snapshot_in_place_of_its_prefix(brokers: Brokers) -> None:
    owner = await brokers.new("owner")
    for seq in range(6):
        await owner.publish("app/room", f"e{seq}", *stamp("s1", seq))
    await owner.fold_log("s1", "app/room", 3, "snapshot of 0..3")
    await owner.publish("app/room", "e6", *stamp("s1", 6))
    assert await owner.read_log("s1", "app/room") == [(3, "snapshot of 0..3"), (4, "e4"), (5, "e5"), (6, "e6")]
    assert await owner.read_log("s1", "app/room", after=3) == [(4, "e4"), (5, "e5"), (6, "e6")]
    await owner.fold_log("s1", "app/room", 6, "snapshot of 0..6")
    assert await owner.read_log("s1", "app/room") == [(6, "snapshot of 0..6")]


async def test_a_log_expires_after_its_last_event(brokers: Brokers) -> None:
    owner = await brokers.new("owner", log_ttl=0.3)
    await owner.publish("app/room", "e0", *stamp("s1", 0))
    assert await owner.read_log("s1", "app/room") == [(0, "e0")]
    async with asyncio.timeout(5):  # the log to expire
        while await owner.read_log("s1", "app/room"):
            await asyncio.sleep(0.05)


async def test_a_channel_indexes_its_streams_by_their_latest_event(brokers: Brokers) -> None:
    owner = await brokers.new("owner")
    reader = await brokers.new("reader") if brokers.shared else owner
    await owner.publish("app/room", "a0", *stamp("a", 0))  # offset 1
    await owner.publish("app/room", "b0", *stamp("b", 0, home="app/elsewhere"))  # offset 2
    await owner.publish("app/room", "not a stream's")  # offset 3
    await owner.publish("app/room", "a1", *stamp("a", 1))  # offset 4
    assert await reader.streams_after("app/room", 0) == [("b", "app/elsewhere"), ("a", "app/room")]
    assert await reader.streams_after("app/room", 2) == [("a", "app/room")]
    assert await reader.streams_after("app/room", 4) == []
    assert await reader.streams_after("app/nothing", 0) == []


async def test_concurrent_publishes_share_one_gapless_sequence(brokers: Brokers) -> None:
    a = await brokers.new("a")
    b = await brokers.new("b") if brokers.shared else a
    await a.subscribe("app/race")
    published = await asyncio.gather(*((a, b)[i % 2].publish("app/race", f"m{i}") for i in range(120)))
    assert sorted(p.offset for p in published) == list(range(1, 121))
    assert len({p.epoch for p in published}) == 1
    history = await b.history("app/race", 0)
    assert seen(history) == (list(range(1, 121)), True) and history.offset == 120
    assert {p.offset: p.data for p in history.publications} == {p.offset: p.data for p in published}
    assert await received(a, 120) == history.publications  # delivered in offset order too


async def test_a_publication_lost_on_its_way_is_filled_from_history(
    redis_brokers: Brokers, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = await redis_brokers.new("listener")
    publisher = await redis_brokers.new("publisher")
    await listener.subscribe("app/room")
    with monkeypatch.context() as patch:  # stored, but its pub/sub message goes astray, as in a failover
        patch.setattr(publisher, "_topic", lambda channel: f"{redis_brokers.prefix}:astray")
        lost = await publisher.publish("app/room", "lost on its way")
    found = await publisher.publish("app/room", "arrives, and shows the gap")
    assert await received(listener, 2) == [lost, found]


@pytest.fixture
async def proxy(redis_brokers: Brokers) -> AsyncIterator[Proxy]:
    relay = Proxy(redis_brokers.url)
    await relay.start()
    yield relay
    await relay.stop()


async def test_a_redis_outage_loses_nothing_that_history_holds(redis_brokers: Brokers, proxy: Proxy) -> None:
    cut = await redis_brokers.new("cut", url=proxy.proxied_url)
    direct = await redis_brokers.new("direct")
    await cut.subscribe("app/busy")
    await cut.subscribe("app/quiet")  # nothing delivered before the outage: its position is still known
    before = await direct.publish("app/busy", "before")
    assert await received(cut, 1) == [before]

    await proxy.stop()
    with pytest.raises(BrokerError, match=r"message broker \(Redis\) is unreachable"):
        await cut.publish("app/busy", "lost with the connection")
    await until(lambda: not cut.up)
    for call in (cut.history("app/busy", 0), cut.control(BROADCAST, "x"), cut.subscribe("app/later")):
        with pytest.raises(BrokerError):
            await call
    missed = [
        await direct.publish("app/busy", "m1"),
        await direct.publish("app/quiet", "q1"),
        await direct.publish("app/busy", "m2"),
    ]

    await proxy.start()
    await until(lambda: cut.up)  # by itself
    after = await cut.publish("app/busy", "after")
    got = await received(cut, 4)
    assert [p for p in got if p.channel == "app/busy"] == [missed[0], missed[2], after]
    assert [p for p in got if p.channel == "app/quiet"] == [missed[1]]
    assert after.offset == 4  # the publish that failed left no trace

    await cut.subscribe("app/later")  # the failed subscribe left no half state behind
    later = await direct.publish("app/later", "now")
    assert await received(cut, 1) == [later]


async def test_a_silent_cut_is_noticed_within_seconds(redis_brokers: Brokers, proxy: Proxy) -> None:
    cut = await redis_brokers.new("cut", url=proxy.proxied_url)
    direct = await redis_brokers.new("direct")
    await cut.subscribe("app/room")

    proxy.hold()  # no bytes, and no reset either: only a timeout or an unanswered PING tells
    with pytest.raises(BrokerError):
        async with asyncio.timeout(4):
            await cut.publish("app/room", "never answered")
    await until(lambda: not cut.up, timeout=6)
    during = await direct.publish("app/room", "during")

    await proxy.stop()  # the stale connections go; the relay comes back clean
    await proxy.start()
    await until(lambda: cut.up)
    after = await cut.publish("app/room", "after")
    assert await received(cut, 2) == [during, after]


async def test_a_subscribe_cut_off_halfway_leaves_no_half_state(redis_brokers: Brokers, proxy: Proxy) -> None:
    cut = await redis_brokers.new("cut", url=proxy.proxied_url)
    proxy.hold(0)  # the reader's pub/sub connection, opened first: the confirmation never comes
    pending = asyncio.create_task(cut.subscribe("app/room"))
    await until(lambda: not cut.up, timeout=6)
    with pytest.raises(BrokerError):
        await asyncio.wait_for(pending, 1)

    await proxy.stop()
    await proxy.start()
    await until(lambda: cut.up)
    await cut.subscribe("app/room")
    publication = await cut.publish("app/room", "now")
    assert await received(cut, 1) == [publication]
