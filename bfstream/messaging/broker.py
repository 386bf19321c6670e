"""The contract every broker backend fills in.

A broker carries published messages between bfstream instances (or, in memory, within one) and
keeps each channel's recent history. Channel names here are already scoped to their app.

Positions: every publish gets the channel's next ``offset`` (1, 2, 3, ...). Each channel also has
an ``epoch``, a random string that changes whenever its history is lost (a memory broker
restarting, history expiring). A client that remembers (offset, epoch) can ask for everything
after it; a different epoch means offsets no longer line up, so nothing can be recovered.

Delivery: at most once, in offset order per channel, to every instance subscribed before the
publish. Each instance reads what it subscribed to through ``next_published``, from one task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Publication:
    channel: str
    offset: int
    epoch: str
    data: str  # the message, JSON-encoded once by the publisher


@dataclass(frozen=True, slots=True)
class History:
    publications: list[Publication]  # after the asked-for offset, oldest first
    offset: int  # the channel's latest offset (0: nothing published yet)
    epoch: str
    complete: bool  # False: some publications after the asked-for offset are gone


class Broker(Protocol):
    async def connect(self) -> None: ...
    async def disconnect(self) -> None: ...
    async def subscribe(self, channel: str) -> None: ...
    async def unsubscribe(self, channel: str) -> None: ...
    async def publish(self, channel: str, data: str) -> Publication: ...
    async def next_published(self) -> Publication: ...
    async def history(self, channel: str, since: int | None) -> History:
        """Publications after offset ``since`` still retained; ``since=None`` asks only for the position."""
        ...
