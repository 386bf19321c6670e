"""How many connections (WebSocket and SSE alike) an app, and a client address, may hold open.

Each open connection holds a slot in two pools, ``conn:<app id>`` and ``addr:<address>``, leased
like stream slots (``leases.py``): counted for the whole fleet when the broker is Redis,
renewed with this instance's lease, and lapsing with it if the instance dies, so a crash never
leaves an app locked out.
"""

from __future__ import annotations

import logging

from bfstream.config import LimitSettings
from bfstream.errors import BfstreamError, TooManyRequests
from bfstream.fleet.leases import Leases

log = logging.getLogger("bfstream.connections")

RETRY_AFTER = 5.0  # seconds: a connection slot frees when some page closes, which no one can predict


class ConnectionLimits:
    def __init__(self, leases: Leases, limits: LimitSettings) -> None:
        self._leases = leases
        self._limits = limits
        self._held: dict[str, list[tuple[str, str]]] = {}  # connection id -> its (pool, slot)s

    async def acquire(self, connection_id: str, app_id: str, address: str | None) -> None:
        """Take the connection's slots, or raise 429 (holding none) when a pool is full."""
        pools = [(f"conn:{app_id}", self._limits.connections_per_app, "this app")]
        if address:  # none over a Unix socket
            pools.append((f"addr:{address}", self._limits.connections_per_address, "one client address"))
        taken = self._held.setdefault(connection_id, [])
        for pool, limit, whose in pools:
            if not await self._leases.acquire(pool, connection_id, limit):
                await self.release(connection_id)
                raise TooManyRequests(f"At most {limit} open connections for {whose}", retry_after=RETRY_AFTER)
            taken.append((pool, connection_id))

    async def release(self, connection_id: str) -> None:
        for pool, slot in self._held.pop(connection_id, []):
            try:
                await self._leases.release(pool, slot)
            except BfstreamError as exc:  # not renewed any more, the slot lapses by itself
                log.warning("could not release a connection slot now (%s); it lapses by itself", exc.message)

    def held_slots(self) -> list[tuple[str, str]]:
        """Every ``(pool, slot)`` this instance's connections hold, for the lease renewal."""
        return [slot for slots in self._held.values() for slot in slots]
