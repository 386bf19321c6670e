"""Streams whose instance died: noticed by another instance, ended for it, recorded as interrupted.

Every ``RENEW_EVERY`` seconds each instance renews its lease and its slots, then looks for running
records whose owner's lease has lapsed. It claims them in one statement (so two instances never
end the same stream twice), sends each stream's channels ``error`` then ``end`` with the text so
far, and leaves the record ``interrupted``. A dead instance is noticed within
``LEASE_TTL + RENEW_EVERY`` seconds. Alone on the memory broker, an instance sees no other lease,
so at start-up it takes over whatever the last run left ``running``, as it always did.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from bfstream.errors import BfstreamError, StoreError
from bfstream.fleet.leases import LEASE_TTL, RENEW_EVERY, Leases
from bfstream.messaging.hub import Hub
from bfstream.messaging.streamlog import event_of, fold
from bfstream.store.records import App, StreamRecord
from bfstream.store.store import Store
from bfstream.streams.lifecycle import Announcer
from bfstream.streams.publisher import Publisher, ender_fence

log = logging.getLogger("bfstream.streams")

T = TypeVar("T")

_RETRY_EVERY = 0.5  # seconds between tries to end an orphan on a broker that is away

INTERRUPTED = {
    "message": "The stream was interrupted: the bfstream instance running it stopped",
    "code": 503,
    "details": None,
}


async def end_orphans(
    store: Store,
    hub: Hub,
    leases: Leases,
    instance_id: str,
    trusted: Callable[[], bool] = lambda: True,
    announcer: Announcer | None = None,
) -> int:
    """End the streams of every instance whose lease lapsed; returns how many.

    The leases are read after the database, so a database read that stalled never decides on
    leases read before it. A lease read that took longer than a renewal round (held by a dead
    network, say, and answered once it healed, before the others' renewals landed), or during
    which ``trusted()`` stopped holding, decides nothing either: the next round reads again."""
    owners = await store.running_owners()
    others = {owner for owner in owners if owner is not None and owner != instance_id}
    asked = time.monotonic()
    alive = await leases.alive(others) if others else set()
    if others - alive and (time.monotonic() - asked > RENEW_EVERY or not trusted()):
        return 0
    ended = 0
    for owner in owners - alive - {instance_id}:
        for record in await store.claim_orphans(owner, INTERRUPTED):
            await _end(store, hub, record, announcer)
            ended += 1
    return ended


async def _end(store: Store, hub: Hub, record: StreamRecord, announcer: Announcer | None = None) -> None:
    """Continue the stream's own numbering and give its whole text, as its log tells (everything
    the owner published, saved or not); else as last saved. The app's webhook hears of it as
    ``stream.interrupted``: the claim made this instance the one to tell it."""
    out = Publisher(hub, record, ender_fence(record.id))

    async def fence_then_read() -> list[tuple[int, str]]:
        await out.raise_fence()  # first: whatever the dead owner still has on its way is refused from now on
        return await hub.read_log(record.id, out.home)

    events = [event for _, data in await _until_taken(fence_then_read, record) if (event := event_of(data))]
    if any(event["type"] == "end" for event in events):
        # The owner sent its end and died before recording it: the record stays interrupted, and
        # the app hears what the channels had.
        folded = fold(events)
        await _tell(store, announcer, None, record, folded["text"], folded.get("reasoning"))
        return
    text, told = record.text or "", {}
    if events:
        folded = fold(events)
        text, out.seq = folded["text"], max(record.seq, events[-1]["seq"] + 1)
        told = {key: folded[key] for key in ("reasoning", "sources") if key in folded}  # what end lists too
    ending: list[dict[str, Any]] = [
        {"type_": "error", "error": INTERRUPTED},
        {"type_": "end", "finish_reason": "error", "usage": None, "text": text, **told},
    ]
    for event in ending:  # each sent again in its place until taken; a repeat that had landed is dropped
        await _until_taken(partial(out.emit, **event), record)
    app = None
    if record.text is not None or events:
        app = await store.app_by_id(record.app_id)
        kept = text if app is not None and app.retain_text else None
        await store.record_stream_text(record.id, kept, out.seq, status="interrupted")
    log.warning("stream %s of lost instance %s ended as interrupted", record.id, record.owner)
    await _tell(store, announcer, app, record, text, told.get("reasoning"))


async def _tell(
    store: Store, announcer: Announcer | None, app: App | None, record: StreamRecord, text: str, reasoning: Any
) -> None:
    """Once the channels have the end: an app read only now, so a database that is away never holds
    up the ending (then no event: nothing says where to send it). The reasoning goes with the event
    when the app keeps it, as a stream's own end does."""
    if announcer is None:
        return
    if app is None:
        try:
            app = await store.app_by_id(record.app_id)
        except StoreError as exc:
            log.warning("stream %s ended as interrupted, but its app could not be read: %s", record.id, exc.message)
            return
    if app is not None and app.retain_text and isinstance(reasoning, str):
        record.reasoning = reasoning
    try:
        await announcer.announce(app, record, text)
    except StoreError as exc:  # the channels have their end; the event waits for no one
        log.warning("stream %s ended as interrupted, but its event could not be sent: %s", record.id, exc.message)


async def _until_taken(step: Callable[[], Awaitable[T]], record: StreamRecord) -> T:
    """``step`` again until the broker takes it: the record is claimed, so nobody else will end the stream."""
    while True:
        try:
            return await step()
        except BfstreamError as exc:
            log.warning("could not end orphaned stream %s on its channels yet: %s", record.id, exc.message)
        await asyncio.sleep(_RETRY_EVERY)


async def keep_alive(
    held_slots: Callable[[], list[tuple[str, str]]],
    leases: Leases,
    store: Store,
    hub: Hub,
    instance_id: str,
    announcer: Announcer | None = None,
) -> None:
    """Renew this instance's lease and slots (streams' and connections'), and end the streams of
    dead instances and send again their lifecycle events on their way, until cancelled.

    The two run apart: a sweep waiting on a stalled database must never hold up the renewal, or
    this instance's own lease would lapse behind it and the others would take its healthy streams
    for orphans. And a lease found lapsed only counts once every live instance has had the time to
    renew since the lease store was last reachable from here: after an outage of the broker every
    lease has lapsed, the living as well as the dead, and the first to be back must not sweep the
    others before they are back too."""
    renewed = _Renewals()
    renewing = asyncio.create_task(_renew_forever(held_slots, leases, renewed))
    try:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            if not renewed.steady():
                continue
            try:
                trusted = partial(renewed.holds_since, renewed.since)
                await end_orphans(store, hub, leases, instance_id, trusted, announcer)
                if announcer is not None:
                    await announcer.resend_orphans(leases, trusted)
            except BfstreamError as exc:  # an outage: the next round tries again
                log.warning("could not look for orphaned streams now: %s", exc.message)
            except Exception:
                log.exception("looking for orphaned streams failed")
    finally:
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)


class _Renewals:
    """Since when this instance's renewals have been going through without a failure."""

    def __init__(self) -> None:
        # The lease was renewed at start-up, and the others have been renewing all along.
        self.since: float | None = time.monotonic() - LEASE_TTL - RENEW_EVERY

    def steady(self) -> bool:
        """Long enough for every live instance to have renewed too: ``LEASE_TTL`` plus a round."""
        return self.since is not None and time.monotonic() - self.since >= LEASE_TTL + RENEW_EVERY

    def holds_since(self, since: float | None) -> bool:
        """Steady, and not broken since ``since`` was read."""
        return self.since == since and self.steady()


async def _renew_forever(held_slots: Callable[[], list[tuple[str, str]]], leases: Leases, renewed: _Renewals) -> None:
    while True:
        await asyncio.sleep(RENEW_EVERY)
        started = time.monotonic()
        try:
            await leases.renew(held_slots())
        except BfstreamError as exc:
            if renewed.since is not None:
                log.warning("could not renew this instance's lease: %s", exc.message)
            renewed.since = None
            continue
        # A renewal that took longer than a round went through a broken network (held, then let
        # go): the others' may not have, so the steady time starts over as after a failure.
        now = time.monotonic()
        if renewed.since is None or now - started > RENEW_EVERY:
            renewed.since = now
