"""Leases: which instances are alive, and how many streams each app runs, across the fleet.

Every instance holds a lease on itself, renewed every ``RENEW_EVERY`` seconds and lapsing
``LEASE_TTL`` seconds after the last renewal. Each stream record names its owner, so another
instance that finds the owner's lease lapsed knows the stream is orphaned (``streams/orphans.py``).

An app's running streams, and the calls still opening one, each hold a slot in the pool named by
the app's id; open connections hold slots in pools of their own (``connection_limits.py``).
``acquire`` takes one only while the pool holds fewer than its limit, atomically, so two instances
admitting at the same instant cannot both take the last slot. Slots are leased too: the owner
renews them with its own lease, and a dead instance's slots lapse with it instead of blocking
the app forever.
"""

from __future__ import annotations

from typing import Protocol

LEASE_TTL = 5.0  # seconds: an instance silent this long is taken for dead
RENEW_EVERY = 1.5  # seconds between renewals (and between sweeps for orphans)


class Leases(Protocol):
    async def acquire(self, pool: str, slot: str, limit: int) -> bool: ...
    async def release(self, pool: str, slot: str) -> None: ...
    async def renew(self, slots: list[tuple[str, str]]) -> None:
        """Renew this instance's lease and its ``(pool, slot)`` slots."""
        ...

    async def alive(self, instance_ids: set[str]) -> set[str]: ...
    async def resign(self) -> None:
        """A clean stop: this instance's lease ends now, not ``LEASE_TTL`` later."""
        ...


class MemoryLeases:
    """One process: it is the only instance alive, and it counts its own slots."""

    def __init__(self, instance_id: str) -> None:
        self._instance_id = instance_id
        self._slots: dict[str, set[str]] = {}

    async def acquire(self, pool: str, slot: str, limit: int) -> bool:
        held = self._slots.setdefault(pool, set())
        if len(held) >= limit:
            return False
        held.add(slot)
        return True

    async def release(self, pool: str, slot: str) -> None:
        held = self._slots.get(pool)
        if held is not None:
            held.discard(slot)
            if not held:
                del self._slots[pool]

    async def renew(self, slots: list[tuple[str, str]]) -> None:
        pass

    async def alive(self, instance_ids: set[str]) -> set[str]:
        return instance_ids & {self._instance_id}

    async def resign(self) -> None:
        pass
