"""The fleet's broker: Redis carries publications between instances and keeps each channel's history.

Keys, all under ``prefix`` (default ``bfstream``); the channel name sits in braces, a Cluster hash
tag, so both keys of a channel share a slot and one script may touch them:

    <prefix>:{<channel>}:meta       hash {epoch, offset, bytes}, bytes the size of the history's
                                    data. PEXPIRE history_ttl, refreshed by every publish (a history
                                    read creates it, with that expiry, but does not refresh it).
    <prefix>:{<channel>}:fence:<stream id>   string, set when another instance ends a dead
                                    instance's stream: that stream's late publishes are refused.
                                    PEXPIRE history_ttl.
    <prefix>:{<channel>}:seq:<fence>         string, the highest seq published here behind that
                                    fence (the stream's id for its owner, ``<stream id>.ended`` for
                                    whoever ends it for a dead owner): a publish of that seq or a
                                    lower one is a repeat, dropped. PEXPIRE history_ttl, refreshed by
                                    every publish behind the fence.
    <prefix>:{<channel>}:streams    sorted set, the streams that published here: member
                                    ``<stream id> <home>``, score the offset of its latest event.
                                    At most 10,000 (the oldest dropped). PEXPIRE history_ttl.
    <prefix>:{<home>}:log:<stream id>   sorted set, the stream's log: member the event's data,
                                    score its seq (a snapshot's score is the last seq it folds).
                                    Written by the publish on the stream's home channel (its first),
                                    so it shares that channel's slot. PEXPIRE log_ttl, refreshed by
                                    every event of the stream.
    <prefix>:{<channel>}:history    stream, one entry per publication, id ``<offset>-1``, field ``d``
                                    = data; at most history_size entries and history_bytes bytes of
                                    data, the oldest trimmed first (absent when history_size is 0).
                                    PEXPIRE history_ttl, refreshed by every publish.

Pub/sub names (not keys, so nothing to expire or bound; Redis keeps no copy once delivered):

    <prefix>:channel:<channel>      each publication, as ``<offset> <epoch> <data>``
    <prefix>:control:<instance id>  control messages to one instance
    <prefix>:control:*              control messages to every instance (a plain channel, not a pattern)

A stream rather than a list: entry ids are the offsets, so "everything after offset N" is one
``XRANGE`` from ``N+1`` whatever was trimmed, where a list needs index arithmetic that trimming
shifts; the script that appends trims in the same step. Expiry is per channel, not per entry:
a busy channel keeps its last ``history_size`` entries, a quiet one loses all of them (and its
epoch, so clients are told they cannot recover) ``history_ttl`` after its last publish.

One Lua script publishes: it takes or creates the epoch, appends to history, counts the offset,
refreshes expiry and PUBLISHes, with no other command in between, so instances publishing to one
channel at once share one gap-free sequence. If Redis goes down as a publish is sent, the call
raises ``BrokerError`` and the caller answers 503; the script either ran whole or not at all. (A
reply lost after the script ran looks the same to the caller, but listeners got the message.)
Commands are never retried, since a second try could publish twice.

One reader task owns the pub/sub connection. It PINGs it when idle, so a dead server is noticed
within a few seconds, and reconnects by itself with backoff; after each (re)subscription it reads
history to deliver what it missed, so listeners see every retained offset once and in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from dataclasses import dataclass

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from bfstream.errors import BrokerError
from bfstream.fleet.redis import UNREACHABLE, redis_client, translated, unreachable
from bfstream.messaging.broker import BROADCAST, Fenced, History, Publication, Stamp

log = logging.getLogger("bfstream.redis")

PING_AFTER = 1.0  # idle seconds before the reader PINGs the pub/sub connection
DEAD_AFTER = 3.0  # silent seconds (PINGs unanswered) before the reader gives the connection up
BACKOFF_MIN, BACKOFF_MAX = 0.1, 2.0
CONNECT_WITHIN = 5.0  # connect() fails if the first subscription is not up by then

# Both scripts: KEYS meta, history; ARGV[1] the epoch to give a channel that has none, ARGV[2] the ttl in ms.
# A channel without an epoch starts over: whatever history a lost epoch left behind is not its own.
_EPOCH = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[2])
end
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
"""
# ARGV[3] history_size, ARGV[4] the pub/sub name, ARGV[5] the data, ARGV[6] history_bytes. A stream's
# event also gives KEYS[3] the fence, KEYS[4] the fence's seq key, KEYS[5] the channel's index of streams
# and, on the stream's home channel, KEYS[6] its log; ARGV[7] the event's seq, ARGV[8] the index member,
# ARGV[9] the log's ttl in ms. It returns false when fenced, 0 for a repeat. XADD, the only call that
# could fail on a sound key, runs before the offset is counted, so nothing is ever half-written.
# Trimming drops the oldest entries until both bounds hold; the byte count lives in meta (``bytes``)
# and starts over with the history (a lost epoch, or an older version's history that it never
# counted, clamped at 0).
_PUBLISH = (
    """
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then return false end
if KEYS[4] and tonumber(redis.call('GET', KEYS[4]) or '-1') >= tonumber(ARGV[7]) then return 0 end
"""
    + _EPOCH
    + """
offset = offset + 1
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[2], offset .. '-1', 'd', ARGV[5])
  local size = redis.call('HINCRBY', KEYS[1], 'bytes', #ARGV[5])
  local count = redis.call('XLEN', KEYS[2])
  while count > tonumber(ARGV[3]) or size > tonumber(ARGV[6]) do
    local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
    if not oldest then break end
    redis.call('XDEL', KEYS[2], oldest[1])
    size = redis.call('HINCRBY', KEYS[1], 'bytes', -#oldest[2][2])
    count = count - 1
  end
  if size < 0 or count == 0 then redis.call('HSET', KEYS[1], 'bytes', 0) end
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if KEYS[4] then
  redis.call('SET', KEYS[4], ARGV[7], 'PX', ARGV[2])
  redis.call('ZADD', KEYS[5], offset, ARGV[8])
  if redis.call('ZCARD', KEYS[5]) > 10000 then redis.call('ZREMRANGEBYRANK', KEYS[5], 0, 0) end
  redis.call('PEXPIRE', KEYS[5], ARGV[2])
  if KEYS[6] then
    redis.call('ZADD', KEYS[6], ARGV[7], ARGV[5])
    redis.call('PEXPIRE', KEYS[6], ARGV[9])
  end
end
redis.call('PUBLISH', ARGV[4], offset .. ' ' .. epoch .. ' ' .. ARGV[5])
return {offset, epoch}
"""
)
# ARGV[3] the first offset wanted, '' for only the position.
_HISTORY = (
    _EPOCH
    + """
if ARGV[3] == '' then return {offset, epoch, {}} end
return {offset, epoch, redis.call('XRANGE', KEYS[2], ARGV[3], '+')}
"""
)


def _new_epoch() -> str:
    return secrets.token_urlsafe(6)  # url-safe: no spaces, so it can sit in the pub/sub payload


@dataclass(slots=True)
class _Subscription:
    offset: int  # the last offset delivered (or, before any, the channel's offset when subscribed)
    epoch: str
    ready: asyncio.Future[None]  # resolved once Redis confirmed the subscription and history was read


class RedisBroker:
    """Instances sharing a Redis URL and prefix form one fleet: same offsets, same history, control between them."""

    def __init__(
        self,
        url: str,
        *,
        instance_id: str,
        prefix: str = "bfstream",
        history_size: int = 1000,
        history_bytes: int = 1024 * 1024,
        history_ttl: float = 600.0,
        log_ttl: float = 3600.0,
    ) -> None:
        self.instance_id = instance_id
        self._log_ttl_ms = max(int(log_ttl * 1000), 1)
        self._prefix = prefix
        self._history_size = history_size
        self._history_bytes = history_bytes
        self._ttl_ms = max(int(history_ttl * 1000), 1)
        self._control_names = (f"{prefix}:control:{instance_id}", f"{prefix}:control:{BROADCAST}")
        self._channels: dict[str, _Subscription] = {}
        self._published: asyncio.Queue[Publication] = asyncio.Queue()
        self._control: asyncio.Queue[str] = asyncio.Queue()
        self._live = asyncio.Event()  # the reader is connected and every subscription is back
        self._redis = redis_client(url, retries=0)
        self._publish_script = self._redis.register_script(_PUBLISH)
        self._history_script = self._redis.register_script(_HISTORY)
        self._conn: AbstractConnection | None = None  # the reader's pub/sub connection, while it has one
        self._reader: asyncio.Task[None] | None = None
        self._last_error: BaseException | None = None

    @property
    def up(self) -> bool:
        return self._live.is_set()

    async def connect(self) -> None:
        """Returns once control messages reach this instance; raises ``BrokerError`` if Redis cannot be reached."""
        self._reader = asyncio.create_task(self._read_forever(), name="bfstream-redis-reader")
        try:
            async with asyncio.timeout(CONNECT_WITHIN):
                await self._live.wait()
        except TimeoutError:
            await self.disconnect()
            raise unreachable(self._last_error) from None

    async def disconnect(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        self._live.clear()
        self._fail_waiting("The message broker (Redis) was disconnected")
        self._channels.clear()
        await self._redis.aclose()

    async def subscribe(self, channel: str) -> None:
        state = self._channels.get(channel)
        if state is None:
            position = await self.history(channel, None)  # deliveries start after this offset
            ours = _Subscription(position.offset, position.epoch, asyncio.get_running_loop().create_future())
            state = self._channels.setdefault(channel, ours)  # a concurrent subscribe may have won meanwhile
            if state is ours:
                try:
                    await self._send("SUBSCRIBE", self._topic(channel))
                except BrokerError:
                    if self._channels.get(channel) is ours:
                        del self._channels[channel]
                    raise
        await asyncio.shield(state.ready)  # the reader resolves it, or fails it when the connection drops

    async def unsubscribe(self, channel: str) -> None:
        state = self._channels.pop(channel, None)
        if state is None:
            return
        if not state.ready.done():
            state.ready.set_result(None)
        with contextlib.suppress(BrokerError):  # while down there is nothing to undo: reconnecting skips it
            await self._send("UNSUBSCRIBE", self._topic(channel))

    async def publish(self, channel: str, data: str, stamp: Stamp | None = None, seq: int = 0) -> Publication | None:
        keys = self._keys(channel)
        args: list[str | int] = [
            _new_epoch(), self._ttl_ms, self._history_size, self._topic(channel), data, self._history_bytes
        ]  # fmt: skip
        if stamp is not None:
            keys += (
                self._fence(channel, stamp.fence),
                f"{self._prefix}:{{{channel}}}:seq:{stamp.fence}",
                f"{self._prefix}:{{{channel}}}:streams",
            )
            args += (seq, f"{stamp.stream} {stamp.home}", self._log_ttl_ms)
            if channel == stamp.home:
                keys.append(self._log(stamp.stream, stamp.home))
        with translated():
            published = await self._publish_script(keys=keys, args=args)
        if published is None:
            raise Fenced(stamp.fence if stamp else "")
        if published == 0:
            return None  # a repeat of what this fence already published
        offset, epoch = published
        return Publication(channel, int(offset), epoch, data)

    async def raise_fence(self, channel: str, fence: str) -> None:
        with translated():
            await self._redis.set(self._fence(channel, fence), "1", px=self._ttl_ms)

    async def next_published(self) -> Publication:
        return await self._published.get()

    async def history(self, channel: str, since: int | None) -> History:
        start = "" if since is None else str(max(since, 0) + 1)
        with translated():
            offset, epoch, entries = await self._history_script(
                keys=self._keys(channel), args=[_new_epoch(), self._ttl_ms, start]
            )
        if since is None:
            return History([], offset, epoch, True)
        since = max(since, 0)
        publications = [Publication(channel, int(id.partition("-")[0]), epoch, fields[1]) for id, fields in entries]
        oldest = publications[0].offset if publications else offset + 1
        return History(publications, offset, epoch, oldest <= since + 1)

    async def read_log(self, stream: str, home: str, after: int = -1) -> list[tuple[int, str]]:
        with translated():
            entries = await self._redis.zrangebyscore(self._log(stream, home), f"({after}", "+inf", withscores=True)
        return [(int(seq), data) for data, seq in entries]

    async def fold_log(self, stream: str, home: str, seq: int, data: str) -> None:
        key = self._log(stream, home)
        async with self._redis.pipeline(transaction=True) as pipe:  # MULTI: no reader sees half a fold
            pipe.zremrangebyscore(key, "-inf", seq)
            pipe.zadd(key, {data: seq})
            with translated():
                await pipe.execute()

    async def streams_after(self, channel: str, offset: int) -> list[tuple[str, str]]:
        with translated():
            members = await self._redis.zrangebyscore(f"{self._prefix}:{{{channel}}}:streams", f"({offset}", "+inf")
        return [tuple(member.split(" ", 1)) for member in members]  # type: ignore[misc]

    async def control(self, target: str, data: str) -> None:
        with translated():
            await self._redis.publish(f"{self._prefix}:control:{target}", data)

    async def next_control(self) -> str:
        return await self._control.get()

    def _fence(self, channel: str, fence: str) -> str:
        return f"{self._prefix}:{{{channel}}}:fence:{fence}"

    def _log(self, stream: str, home: str) -> str:
        return f"{self._prefix}:{{{home}}}:log:{stream}"

    def _keys(self, channel: str) -> list[str]:
        return [f"{self._prefix}:{{{channel}}}:meta", f"{self._prefix}:{{{channel}}}:history"]

    def _topic(self, channel: str) -> str:
        return f"{self._prefix}:channel:{channel}"

    def _fail_waiting(self, why: str) -> None:
        """Subscriptions not yet confirmed fail and go, so a later subscribe starts afresh: no half state."""
        for channel, state in list(self._channels.items()):
            if not state.ready.done():
                state.ready.set_exception(BrokerError(why))
                del self._channels[channel]

    async def _send(self, *command: str) -> None:
        """Send on the reader's pub/sub connection; its replies come to the reader."""
        conn = self._conn
        # Checked in the same step as the send: redis-py would otherwise quietly reconnect a
        # connection the reader is giving up, subscribed to nothing.
        if conn is None or not conn.is_connected or not self._live.is_set():
            raise unreachable(self._last_error)
        with translated():
            await conn.send_command(*command, check_health=False)

    async def _read_forever(self) -> None:
        """Keep one pub/sub connection up until cancelled; every loss is followed by a reconnect."""
        delay = BACKOFF_MIN
        while True:
            try:
                await self._listen()
            except Exception as error:  # whatever broke, the reader must live on; BrokerError from history too
                self._last_error = error
                if self._live.is_set():
                    log.warning("lost the Redis broker, reconnecting: %s", error)
                if not isinstance(error, RedisError | BrokerError | OSError):
                    log.exception("the Redis reader failed")
            if self._live.is_set():
                delay = BACKOFF_MIN
            self._live.clear()
            self._fail_waiting(UNREACHABLE)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # jittered, so a fleet does not reconnect at once
            delay = min(delay * 2, BACKOFF_MAX)

    async def _listen(self) -> None:
        """Subscribe everything again, then read until the connection dies (an error, or PINGs unanswered)."""
        # Idle command connections from before an outage may be dead without redis-py knowing (with
        # its default maintenance notifications it skips the check at checkout): drop them, or the
        # catch-up reads below would fail on them.
        await self._redis.connection_pool.disconnect(inuse_connections=False)
        conn = self._redis.connection_pool.make_connection()  # our own, outside the pool: it never serves commands
        try:
            await conn.connect()
            awaited = {*self._control_names, *map(self._topic, self._channels)}
            await conn.send_command("SUBSCRIBE", *awaited, check_health=False)
            self._conn = conn
            loop = asyncio.get_running_loop()
            heard = loop.time()
            while True:
                reply = await conn.read_response(timeout=PING_AFTER, push_request=True)
                if reply is None:
                    if loop.time() - heard > DEAD_AFTER:
                        raise RedisConnectionError(f"no answer to PING for {DEAD_AFTER:g} s")
                    await conn.send_command("PING", check_health=False)
                    continue
                heard = loop.time()
                kind = reply[0] if isinstance(reply, list) else "pong"  # RESP3 answers PING with a plain PONG
                if kind == "message":
                    await self._received(reply[1], reply[2])
                elif kind == "subscribe":
                    await self._confirmed(reply[1])
                    awaited.discard(reply[1])
                    if not awaited and not self._live.is_set():
                        self._live.set()
                        log.info("Redis broker up, %d channels subscribed", len(self._channels))
        finally:
            self._conn = None
            await conn.disconnect(nowait=True)

    def _subscription(self, name: str) -> tuple[str, _Subscription | None]:
        """The channel a pub/sub name stands for, and its subscription: None for control names."""
        channel = name.removeprefix(self._topic(""))
        return channel, None if name in self._control_names else self._channels.get(channel)

    async def _confirmed(self, name: str) -> None:
        """Redis confirmed a subscription: deliver what was published since the position we hold."""
        channel, state = self._subscription(name)
        if state is None:
            return  # a control channel, or unsubscribed meanwhile
        await self._catch_up(channel, state)
        if not state.ready.done():
            state.ready.set_result(None)

    async def _received(self, name: str, payload: str) -> None:
        if name in self._control_names:
            self._control.put_nowait(payload)
            return
        channel, state = self._subscription(name)
        if state is None:
            return  # unsubscribed while it was on its way
        offset, epoch, data = payload.split(" ", 2)
        publication = Publication(channel, int(offset), epoch, data)
        if epoch != state.epoch or publication.offset > state.offset + 1:
            await self._catch_up(channel, state)  # missed some (or the channel started over): history first
        self._deliver(channel, state, publication)

    async def _catch_up(self, channel: str, state: _Subscription) -> None:
        history = await self.history(channel, state.offset)
        if history.epoch != state.epoch:  # its keys expired or Redis lost them: all of the new epoch is news
            state.epoch, state.offset = history.epoch, 0
            history = await self.history(channel, 0)
        for publication in history.publications:
            self._deliver(channel, state, publication)

    def _deliver(self, channel: str, state: _Subscription, publication: Publication) -> None:
        """Queue each (epoch, offset) once, in order: history and live copies of one publication meet here."""
        fresh = publication.epoch == state.epoch and publication.offset > state.offset
        if fresh and self._channels.get(channel) is state:  # not unsubscribed meanwhile
            state.offset = publication.offset
            self._published.put_nowait(publication)
