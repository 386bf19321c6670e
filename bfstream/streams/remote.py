"""Stop and status for a stream wherever in the fleet it runs.

The stop button's request may reach any instance. The stream's record names its owner; a stream
not running here is stopped, or its live text read, by a control request to that owner.
"""

from __future__ import annotations

from typing import Any

from bfstream.errors import Unavailable
from bfstream.fleet.control import Control
from bfstream.fleet.owners import Owners
from bfstream.store.records import App
from bfstream.store.store import Store
from bfstream.streams.registry import StreamRegistry
from bfstream.streams.stream import STOP_WAIT


class FleetStreams:
    def __init__(self, registry: StreamRegistry, store: Store, owners: Owners, control: Control) -> None:
        self._registry = registry
        self._store = store
        self._owners = owners
        self._instance_id = control.instance_id
        control.on("stop", self._stop_here)
        control.on("status", self._status_here)

    async def stop(self, stream_id: str) -> bool:
        if await self._registry.stop(stream_id):
            return True
        record = await self._owners.elsewhere(stream_id)
        if record is None:
            return False
        # The owner answers once the stream has ended as stopped: it may wait STOP_WAIT for its end.
        reply = await self._owners.ask(record, {"op": "stop", "streamId": stream_id}, wait=STOP_WAIT + 1)
        if reply is None:  # the stream exists, but its instance is silent: likely dead, soon swept
            raise Unavailable(
                "The instance running this stream does not answer; if it is gone, the stream ends within seconds"
            )
        return bool(reply.get("stopped"))

    async def status(self, app: App, stream_id: str) -> dict[str, Any] | None:
        """The stream's record, live (with the text so far) while it runs, from whichever instance runs it."""
        running = self._registry.get(stream_id)
        if running is not None and running.record.app_id == app.id:
            return running.status(app.retain_text)
        record = await self._store.stream_record(app.id, stream_id)
        if record is None:
            return None
        if record.status == "running" and record.owner not in (None, self._instance_id):
            request = {"op": "status", "streamId": stream_id, "app": app.id, "retainText": app.retain_text}
            reply = await self._owners.ask(record, request)
            if reply is not None:
                return reply
            record = await self._store.stream_record(app.id, stream_id) or record  # it ended meanwhile
        return record.to_json()

    async def _stop_here(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"stopped": await self._registry.stop(str(request.get("streamId")))}

    async def _status_here(self, request: dict[str, Any]) -> dict[str, Any] | None:
        running = self._registry.get(str(request.get("streamId")))
        if running is None or running.record.app_id != request.get("app"):
            return None  # it ended meanwhile: the asker reads the record
        return running.status(bool(request.get("retainText")))
