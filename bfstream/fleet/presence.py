"""Who is in which channel, for the listing endpoints: across the fleet with Redis, or in this process.

Entries are per connection and channel. They are a listing, not an access rule: a stale entry
shows a connection a little longer than it lived, never more. A backend shared by instances
lets the entries of a dead instance expire by themselves; the instance that made an entry keeps
it fresh (see ``RedisPresence``).
"""

from __future__ import annotations

from typing import Protocol

from bfstream.messaging.tokens import User

# channel -> connection id -> its user (None: anonymous)
Listing = dict[str, dict[str, User | None]]


class Presence(Protocol):
    async def add(self, app_id: str, channel: str, connection_id: str, user: User | None) -> None: ...
    async def remove(self, app_id: str, channel: str, connection_id: str) -> None: ...
    async def list(self, app_id: str) -> Listing: ...
    async def close(self) -> None: ...


class MemoryPresence:
    """One process: the entries are simply what this process holds."""

    def __init__(self) -> None:
        self._apps: dict[str, Listing] = {}

    async def add(self, app_id: str, channel: str, connection_id: str, user: User | None) -> None:
        self._apps.setdefault(app_id, {}).setdefault(channel, {})[connection_id] = user

    async def remove(self, app_id: str, channel: str, connection_id: str) -> None:
        channels = self._apps.get(app_id, {})
        entries = channels.get(channel)
        if entries is not None:
            entries.pop(connection_id, None)
            if not entries:
                del channels[channel]
                if not channels:
                    del self._apps[app_id]

    async def list(self, app_id: str) -> Listing:
        return {channel: dict(entries) for channel, entries in self._apps.get(app_id, {}).items()}

    async def close(self) -> None:
        self._apps.clear()
