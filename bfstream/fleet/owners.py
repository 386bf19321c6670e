"""Who runs a stream, and asking it: for whatever reaches an instance about a stream it does not run.

A stop button's request, a page's tool answer or a status read may land on any instance. The
stream's record names its owner; when that is another instance, the request goes to it over
control. Callers try their own registry first: only a stream not running here is looked up.
"""

from __future__ import annotations

from typing import Any

from bfstream.fleet.control import Control
from bfstream.store.records import StreamRecord
from bfstream.store.store import Store


class Owners:
    def __init__(self, store: Store, control: Control) -> None:
        self._store = store
        self._control = control

    async def elsewhere(self, stream_id: str) -> StreamRecord | None:
        """The stream's record if it is running on another instance, else None (ended, unknown, or ours)."""
        record = await self._store.stream_by_id(stream_id)
        if record is None or record.status != "running" or record.owner in (None, self._control.instance_id):
            return None
        return record

    async def ask(self, record: StreamRecord, request: dict[str, Any], wait: float = 2.0) -> Any:
        """The owner's reply to ``request``; None when it does not answer within ``wait`` seconds
        (likely gone)."""
        assert record.owner is not None
        return await self._control.call(record.owner, request, wait)
