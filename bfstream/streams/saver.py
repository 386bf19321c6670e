"""The running streams' text so far, saved for all of them at once about once a second.

A crash then leaves each record with the answer so far, not nothing, and whoever ends a dead
instance's stream knows where its numbering stood (``seq``). Each stream used to save its own
text from its relay every second: at 1,000 streams that was 1,000 trips a second to the database
thread, each taking the event loop's time twice. Now one trip and one commit carry every stream
that has new text. A record found no longer running (another instance took this one for dead and
ended the stream for it) marks its stream ``fenced``; its relay stops before its next event.
"""

from __future__ import annotations

import asyncio
import logging
import time

from bfstream.errors import StoreError
from bfstream.store.store import Store
from bfstream.streams.registry import RunningStream, StreamRegistry

log = logging.getLogger("bfstream.streams")

SAVE_EVERY = 1.0  # seconds
STALE_AFTER = 3 * SAVE_EVERY  # no save for this long (a freeze): a stream checks itself before going on


async def save_forever(registry: StreamRegistry, store: Store) -> None:
    while True:
        await asyncio.sleep(SAVE_EVERY)
        await save_once(registry, store)


async def save_once(registry: StreamRegistry, store: Store) -> None:
    await save_once_for(store, [s for s in registry.running() if not s.ending and len(s.text) != s.saved_pieces])


async def save_once_for(store: Store, saving: list[RunningStream]) -> None:
    if not saving:
        return
    # Read together, between two awaits: each text with the seq it had reached.
    rows = [
        (s.record.id, "".join(s.text) if s.retain_text else None, s.publisher.seq if s.publisher else s.record.seq)
        for s in saving
    ]
    pieces = [len(s.text) for s in saving]
    try:
        gone = await store.record_streams_text(rows)
    except StoreError:  # the database is down: the next round makes up for it
        return
    now = time.monotonic()
    for stream, count in zip(saving, pieces, strict=True):
        stream.saved_pieces, stream.saved_at = count, now
        if stream.record.id in gone:
            stream.fenced = True


async def save_now(stream: RunningStream, store: Store) -> None:
    """One stream's save, before its next event goes out, when the saver has not confirmed it for a
    while: after the process was frozen (a pause, a partition), the next delta must not go out
    before it is known that the stream is still this instance's. Not knowing (the database is down)
    counts as still its own, and the next check waits another while: a stream never waits on a
    database that is away."""
    await save_once_for(store, [stream])
    stream.saved_at = time.monotonic()
