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

Stream logs: every event of a stream is also kept in a log of its own, keyed by its ``seq``, apart
from channel history (which holds the last messages of the channel, whatever they were). A stamped
publish on the stream's home channel (its first) appends to the log in the same step, so the log
has every event the channels got and nothing else. The log outlives the stream by ``log_ttl``
seconds; its owner folds the oldest events into one ``snapshot`` event when the log grows past its
bound (``fold_log``), so it stays bounded and never silently loses a prefix. Each channel also
indexes the streams that published to it, by the offset of their latest event there
(``streams_after``), so that a join which finds the channel's history cut short knows whose logs
to read (``messaging/session.py``).

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


@dataclass(frozen=True, slots=True)
class Stamp:
    """What each event of one publisher of a stream carries besides its data and its ``seq``."""

    stream: str  # the stream's id: the channel's index of streams names it
    home: str  # the stream's first channel (scoped): its log lives there (with Redis, in its slot)
    fence: str  # the publisher's fence: the stream's id for its owner, ``<id>.ended`` for an ender


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
    async def publish(self, channel: str, data: str, stamp: Stamp | None = None, seq: int = 0) -> Publication | None:
        """Append to the channel's history and deliver, atomically: offsets have no gaps. With a
        stream's ``stamp`` and the event's ``seq``: raise ``Fenced`` instead if its fence was raised
        on the channel; return None and publish nothing if that fence already published that seq or
        a later one (a repeat); else also index the stream on the channel and, on its home channel,
        log the event."""
        ...

    async def raise_fence(self, channel: str, fence: str) -> None: ...

    async def next_published(self) -> Publication: ...
    async def history(self, channel: str, since: int | None) -> History:
        """Publications after offset ``since`` still retained; ``since=None`` asks only for the position."""
        ...

    async def read_log(self, stream: str, home: str, after: int = -1) -> list[tuple[int, str]]:
        """``(seq, data)`` of the stream's logged events after seq ``after``, in seq order (the first
        may be a snapshot standing for every seq up to its own); empty once the log expired."""
        ...

    async def fold_log(self, stream: str, home: str, seq: int, data: str) -> None:
        """Replace every logged event up to ``seq`` by ``data``, a snapshot of them."""
        ...

    async def streams_after(self, channel: str, offset: int) -> list[tuple[str, str]]:
        """``(stream id, home)`` of the streams with an event on ``channel`` after ``offset``, oldest first."""
        ...

    async def control(self, target: str, data: str) -> None: ...
    async def next_control(self) -> str: ...
