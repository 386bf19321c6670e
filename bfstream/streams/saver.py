"""The running streams' text so far, saved for all of them at once about once a second.

A crash then leaves each record with the answer so far, not nothing, and whoever ends a dead
instance's stream knows where its numbering stood (``seq``). Each stream used to save its own
text from its relay every second: at 1,000 streams that was 1,000 trips a second to the database
thread, each taking the event loop's time twice. Now one trip and one commit carry every stream
that has new text. The saver asks each stream for its row and tells it how the save went: a record
found no longer running (another instance took this one for dead and ended the stream for it) stops
its relay before its next event.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from bfstream.errors import StoreError
from bfstream.store.store import Store
from bfstream.streams.registry import StreamRegistry

if TYPE_CHECKING:
    from bfstream.streams.stream import Stream

SAVE_EVERY = 1.0  # seconds
STALE_AFTER = 3 * SAVE_EVERY  # no save for this long (a freeze): a stream checks itself before going on


async def save_forever(registry: StreamRegistry, store: Store) -> None:
    while True:
        await asyncio.sleep(SAVE_EVERY)
        await save_once(registry, store)


async def save_once(registry: StreamRegistry, store: Store) -> None:
    await save_once_for(store, [stream for stream in registry.running() if stream.unsaved])


async def save_once_for(store: Store, saving: list[Stream]) -> None:
    if not saving:
        return
    rows = [stream.save_row() for stream in saving]  # read together, between two awaits
    try:
        gone = await store.record_streams_text([(stream_id, text, seq) for stream_id, text, seq, _ in rows])
    except StoreError:  # the database is down: the next round makes up for it
        return
    now = time.monotonic()
    for stream, (stream_id, _, _, pieces) in zip(saving, rows, strict=True):
        stream.saved(pieces, now, stream_id in gone)
