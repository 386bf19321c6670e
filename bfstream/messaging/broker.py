"""The contract every broker backend fills in.

A broker carries published messages between bfstream instances (or, in memory, within one) and
keeps each channel's recent history. Channel names here are already scoped to their app.

Positions: every publish gets the channel's next ``offset`` (1, 2, 3, ...). Each channel also has
an ``epoch``, a random string that changes whenever its history is lost (a memory broker
restarting, history expiring). A client that remembers (offset, epoch) can ask for everything
after it; a different epoch means offsets no longer line up, so nothing can be recovered. Every
instance of a fleet sees the same offsets and epoch for a channel, whichever of them published.

Delivery: in offset order per channel, to every instance subscribed before the publish; each
instance reads what it subscribed to through ``next_published``, from one task. A backend that
loses its connection reconnects by itself, subscribes again, and then delivers what was
published to its channels meanwhile (read back from history) before anything newer, so a live
listener misses nothing that history still holds.

Control: instances also send each other short messages (stop this stream, these users' channels
changed) addressed by instance id, or to ``"*"``, every instance, the sender included. They are
delivered at most once, never kept, and read through ``next_control`` from one task.

Fences: a stream's events are published with a fence named after the stream. An instance that
ends a stream for its dead owner raises the fence first, so that a publish from the owner still on
its way (held in a network buffer during a partition, say) is refused when it lands, instead of
arriving after the stream's ``end``. A fence lasts as long as the channel's history.

Repeats: a fenced publish also carries its event's ``seq``, and the broker keeps, per channel and
fence, the highest seq it published. A publish whose seq is not above it is a repeat and is dropped
(``publish`` returns None). So an owner that could not tell whether an event landed (Redis went
away with the reply on its way, or the command sat in a dead network's buffer and lands minutes
later) sends it again in its place, and every listener and every replay still sees each seq once.

Failures: while the backend cannot reach its server, ``publish``, ``history``, ``subscribe`` and
``control`` raise ``BrokerError``; ``up`` says whether it is reachable right now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

BROADCAST = "*"  # the control target that means every instance


@dataclass(frozen=True, slots=True)
class Publication:
    channel: str
    offset: int
    epoch: str
    data: str  # JSON-encoded once by the publisher (bfstream publishes {"from", "message"}: protocol.py)


@dataclass(frozen=True, slots=True)
class History:
    publications: list[Publication]  # after the asked-for offset, oldest first
    offset: int  # the channel's latest offset (0: nothing published yet)
    epoch: str
    complete: bool  # False: some publications after the asked-for offset are gone


class Fenced(Exception):
    """A publish refused because its fence was raised: someone else ended what it belonged to."""


class Broker(Protocol):
    instance_id: str  # this instance, as control messages address it

    @property
    def up(self) -> bool: ...
    async def connect(self) -> None: ...
    async def disconnect(self) -> None: ...
    async def subscribe(self, channel: str) -> None:
        """Returns once publications to ``channel`` are on their way to ``next_published``."""
        ...

    async def unsubscribe(self, channel: str) -> None: ...
    async def publish(
        self, channel: str, data: str, fence: str | None = None, seq: int | None = None
    ) -> Publication | None:
        """Append to the channel's history and deliver, atomically: offsets have no gaps. With
        ``fence``, raise ``Fenced`` instead if that fence was raised on the channel; with ``fence``
        and ``seq``, return None and publish nothing if that fence already published that seq or
        a later one (a repeat)."""
        ...

    async def raise_fence(self, channel: str, fence: str) -> None: ...

    async def next_published(self) -> Publication: ...
    async def history(self, channel: str, since: int | None) -> History:
        """Publications after offset ``since`` still retained; ``since=None`` asks only for the position."""
        ...

    async def control(self, target: str, data: str) -> None: ...
    async def next_control(self) -> str: ...
