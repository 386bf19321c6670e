"""The contract every broker backend fills in.

A broker carries published messages between bfstream instances (or, in memory, within one).
Channel names here are already scoped to their app. ``publish`` returns once the broker has
taken the message; delivery is at most once, in publish order per channel, to every instance that
subscribed before the publish. Each instance reads what it subscribed to through
``next_published``, from a single task; the hub above fans each message out to local connections.
"""

from __future__ import annotations

from typing import Protocol


class Broker(Protocol):
    async def connect(self) -> None: ...
    async def disconnect(self) -> None: ...
    async def subscribe(self, channel: str) -> None: ...
    async def unsubscribe(self, channel: str) -> None: ...
    async def publish(self, channel: str, message: str) -> None: ...
    async def next_published(self) -> tuple[str, str]: ...
