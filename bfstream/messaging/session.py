"""One browser connection, whatever its transport: its channels, its position in each, its queue.

Frames for the client go through a queue that the transport drains, so a slow reader never
blocks the hub or a stream. The queue is bounded in frames and in bytes (``messaging.send_queue``,
``send_queue_bytes``): frames of a few dozen bytes and frames of megabytes must both stop piling
up. When either bound would be passed the session marks itself ``too_slow`` and the transport
closes it (the client recovers what it missed from history on reconnect).

Joining with a position (``since``) replays what the client missed and then continues live with
no gap and no duplicate: live messages that arrive while history is being read are held back,
then released after the replay, and every message older than the channel's last delivered
offset is dropped.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bfstream.config import LimitSettings, MessagingSettings
from bfstream.errors import ClientError, Forbidden
from bfstream.fleet.connection_limits import ConnectionLimits
from bfstream.fleet.presence import Presence
from bfstream.fleet.ratelimits import RateLimits
from bfstream.messaging import protocol
from bfstream.messaging.broker import Publication
from bfstream.messaging.hub import Hub, scoped
from bfstream.messaging.recovery import Recovered, recover
from bfstream.messaging.tokens import User
from bfstream.messaging.users import UserSessions
from bfstream.store.records import App
from bfstream.store.store import Store
from bfstream.webhooks import Deliveries

# What the queue holds: (op, frame, channel, offset, epoch, size), flat to cost one allocation per
# frame. The position (on message/joined/left frames; channel None on the others) tells the SSE
# transport what a resume needs; the WebSocket transport only sends the frame. ``size`` is what the
# frame was counted for in the byte bound, kept so that taking it out subtracts exactly that.
Outgoing = tuple[str, str, str | None, int, str, int]

_size_of = sys.getsizeof  # per frame queued: a global, not an attribute looked up each time


@dataclass(frozen=True, slots=True)
class Since:
    offset: int
    epoch: str | None = None


def resume_from(encoded: str | None) -> dict[str, Since]:
    """The positions a reconnecting client brings (an SSE ``Last-Event-ID``, a WebSocket ``since``)."""
    return {name: Since(offset, epoch) for name, (offset, epoch) in protocol.decode_positions(encoded).items()}


@dataclass(frozen=True, slots=True)
class Context:
    """What every session of the server shares."""

    hub: Hub
    store: Store
    users: UserSessions  # this instance's connections, by user
    presence: Presence  # who is where, for the listings (the fleet's, with a shared broker)
    limits: MessagingSettings
    app_limits: LimitSettings
    rates: RateLimits  # per app, for browser publishes
    connections: ConnectionLimits
    # A page's answer to a frontend tool call: (session, toolCallId, result) -> taken or not. The
    # streams layer sets it (``streams/tools.py``); it finds the stream wherever it runs.
    answer_tool: Callable[[Session, str, dict[str, Any]], Awaitable[bool]] | None = None
    # Browser publishes into listen/receive channels go to the app's webhook through it.
    deliveries: Deliveries | None = None
    # Set when the server shuts down: long-lived responses (SSE) end so the process can exit.
    closing: asyncio.Event = field(default_factory=asyncio.Event)


async def check_access(store: Store, app: App, user: User | None, channel: str, private_channel: str = "") -> None:
    """Anonymous channels are open to every connection of the app; a channel to which users were
    added is for those users only; a ``tab|`` channel is for its own connection only."""
    if channel.startswith(protocol.PRIVATE_PREFIX) and channel != private_channel:
        why = "tab| channels are private to their connection"
        raise Forbidden(why, details=[{"field": "channel", "message": why}])
    members = await store.channel_members(app.id, channel)
    if members is not None and (user is None or user.id not in members):
        # The field says which refusal this is: a client joining several channels over SSE (one
        # request for all) tells it from a refused origin or token, and finds the channel.
        why = f"Channel {channel!r} is for its added users only"
        raise Forbidden(why, details=[{"field": "channel", "message": why}])


class Session:
    def __init__(
        self,
        context: Context,
        app: App,
        user: User | None,
        on_too_slow: Callable[[], None],
        address: str | None = None,
    ) -> None:
        self.id = secrets.token_urlsafe(12)
        self.app = app
        self.user = user
        self.address = address  # the client's, for the connections-per-address limit
        self.private_channel = protocol.PRIVATE_PREFIX + self.id
        self.too_slow = False
        self._context = context
        self._on_too_slow = on_too_slow
        self._queue: asyncio.Queue[Outgoing] = asyncio.Queue(context.limits.send_queue)
        self._queued_bytes = 0
        self._max_queued_bytes = context.limits.send_queue_bytes
        self._positions: dict[str, tuple[int, str]] = {}  # channel -> last (offset, epoch) queued
        self._held: dict[str, list[tuple[Publication, str]]] = {}  # channels being recovered
        # Set by a transport that can write a frame without waiting; True when it did.
        self.write_now: Callable[[str], bool] | None = None

    @property
    def channels(self) -> list[str]:
        return list(self._positions)

    async def open(self, resume: dict[str, Since] | None = None) -> None:
        """Join the private channel, greet the client, then join a user's channels, resuming those
        named in ``resume`` (the positions a reconnecting client brings). Raises 429 when the app or
        the client's address has as many connections open as it may."""
        await self._context.connections.acquire(self.id, self.app.id, self.address)
        self._context.users.add(self)
        await self._subscribe(self.private_channel, None, None, announce=False)
        added = await self._context.store.user_channels(self.app.id, self.user.id) if self.user else []
        limit = self._context.limits.max_channels
        user = None
        if self.user is not None:
            user = {
                "id": self.user.id,
                "email": self.user.email,
                "channels": [{"name": name, "mode": mode} for name, mode in added],
            }
        joined = [self.private_channel, *(name for name, _ in added[:limit])]
        self.push("hello", protocol.hello_frame(self.id, joined, user))
        for channel, _mode in added[:limit]:
            await self._subscribe(channel, (resume or {}).get(channel), None)
        if len(added) > limit:
            message = f"Only the first {limit} of the user's {len(added)} channels were joined"
            self.push("error", protocol.error_frame(message, 400))

    async def close(self) -> None:
        self._context.users.remove(self)
        try:
            for channel in list(self._positions):
                await self._context.hub.leave(self, scoped(self.app.id, channel))
                await self._context.presence.remove(self.app.id, channel, self.id)
            self._positions.clear()
        finally:
            await self._context.connections.release(self.id)

    def push(self, op: str, frame: str, channel: str | None = None, offset: int = 0, epoch: str = "") -> None:
        if self.too_slow:
            return
        # Nothing waiting before it: the transport may take the frame at once (``write_now``), and the
        # queue, its task and a switch to it are spared. The order holds: a frame is written here
        # only when none is queued or held by the writer.
        if self.write_now is not None and self._queue.empty() and self.write_now(frame):
            return
        # What the frame holds in memory, not its length: a frame of CJK text or emoji takes two or
        # four bytes a character. A frame shared by many listeners counts for each: the bound is on
        # what one connection may keep alive. One frame bigger than the bound still goes alone.
        size = _size_of(frame)
        queued = self._queued_bytes + size
        if queued > self._max_queued_bytes and self._queued_bytes:
            self._fall_behind()
            return
        try:
            self._queue.put_nowait((op, frame, channel, offset, epoch, size))
        except asyncio.QueueFull:
            self._fall_behind()
            return
        self._queued_bytes = queued

    def _fall_behind(self) -> None:
        self.too_slow = True
        self._on_too_slow()

    async def next_outgoing(self) -> Outgoing:
        outgoing = await self._queue.get()
        self._queued_bytes -= outgoing[5]
        return outgoing

    def deliver(self, channel: str, publication: Publication, frame: str) -> None:
        held = self._held.get(channel)
        if held is not None:
            held.append((publication, frame))
            return
        last = self._positions.get(channel)
        if last is None or (publication.epoch == last[1] and publication.offset <= last[0]):
            return  # left already, or a duplicate of what a replay sent
        self._positions[channel] = (publication.offset, publication.epoch)
        self.push("message", frame, channel, publication.offset, publication.epoch)

    async def join(self, channel: str, since: Since | None, request_id: Any = None) -> None:
        """Queue a ``joined`` reply, then whatever ``since`` asks to replay; raise ClientError if not allowed."""
        if channel not in self._positions:
            if len(self._positions) > self._context.limits.max_channels:  # the private channel is extra
                raise ClientError(f"A connection may join at most {self._context.limits.max_channels} channels")
            await check_access(self._context.store, self.app, self.user, channel, self.private_channel)
        await self._subscribe(channel, since, request_id)

    async def leave(self, channel: str, request_id: Any = None) -> None:
        if channel == self.private_channel:
            raise ClientError("A connection cannot leave its private channel")
        if self._positions.pop(channel, None) is not None:
            await self._context.hub.leave(self, scoped(self.app.id, channel))
            await self._context.presence.remove(self.app.id, channel, self.id)
        self.push("left", protocol.reply_frame("left", request_id, channel=channel), channel)

    async def _subscribe(self, channel: str, since: Since | None, request_id: Any, announce: bool = True) -> None:
        hub, key = self._context.hub, scoped(self.app.id, channel)
        held: list[tuple[Publication, str]] = []
        self._held[channel] = held
        try:
            await hub.join(self, key)
            history = await hub.history(key, since.offset if since else None)
            # Offsets only line up within one epoch, and a position past the channel's latest offset
            # comes from history this server no longer has.
            resumable = since is not None and since.epoch in (None, history.epoch) and since.offset <= history.offset
            recovered = Recovered()
            if since is not None and resumable and not history.complete:
                # Some of what the client missed is gone from the history: streams' logs make it up.
                recovered, history = await recover(hub, self._context.store, self.app.id, key, since.offset)
                if since.epoch not in (None, history.epoch):  # the channel started over in between
                    resumable, recovered = False, Recovered()
            # The reply's offset is where this connection now stands: the replay (if any) follows it. A
            # client that drops before reading the replay resumes from here and loses nothing.
            offset = since.offset if since is not None and resumable else history.offset
            reply = protocol.reply_frame(
                "joined",
                request_id,
                channel=channel,
                recovered=resumable and history.complete,
                offset=offset,
                epoch=history.epoch,
            )
            if announce:
                self.push("joined", reply, channel, offset, history.epoch)
            for data in recovered.data:
                frame = protocol.log_frame(channel, offset, history.epoch, data)
                self.push("message", frame, channel, offset, history.epoch)
            replay = history.publications if resumable else []
            for publication in replay:
                if publication.offset > offset:
                    if not recovered.covers(publication):
                        frame = protocol.message_frame(channel, publication)
                        self.push("message", frame, channel, publication.offset, publication.epoch)
                    offset = publication.offset
            for publication, frame in held:
                if publication.epoch != history.epoch or publication.offset > offset:
                    if not recovered.covers(publication):
                        self.push("message", frame, channel, publication.offset, publication.epoch)
                    offset = publication.offset
            new = channel not in self._positions
            self._positions[channel] = (offset, history.epoch)
        except BaseException:
            if channel not in self._positions:  # not joined after all: the hub must not keep it either
                await hub.leave(self, key)
            raise
        finally:
            del self._held[channel]
        if new:
            await self._context.presence.add(self.app.id, channel, self.id, self.user)
