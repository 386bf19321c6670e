"""The streams dashboard at ``/admin``, on with ``admin_token`` (``BFSTREAM_ADMIN_TOKEN``).

The page holds no data; it asks for the token and polls ``/admin/api/overview`` with it, which is
read through the store and the presence of the broker, never this process's memory, so that in a
fleet any instance shows every instance's streams and connections. Stopping goes through
``/admin/api/stop`` (with the token) rather than ``/stream/stop``, so an app's list of allowed page
origins, which does not name bfstream's own, cannot lock the operator out.

A stream opened from the list is read through ``/admin/api/streams/{id}/events`` with the token, not
through the stream's own URL: that one checks the app's page origins and counts its readers against
the app's connection limits, which are the app's pages' business, not the operator's; and the page
never holds an app's key either way. It answers as the URL's long-poll does (``streams/reader.py``),
with the stream's record beside the events, so the page sees tool calls' durations and outcomes and
the stream's error as soon as they are saved. The text and reasoning it shows come from the events;
the list's answers leave them out. Refused calls are the answering instance's (``api/refused_calls.py``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, StringConstraints

from bfstream.api.auth import require_bearer
from bfstream.api.stream_events import unless_gone
from bfstream.errors import NotFound
from bfstream.messaging.protocol import PRIVATE_PREFIX
from bfstream.store.records import StreamRecord
from bfstream.streams.reader import StreamReader

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).parents[1] / "static"
RECENT = 20  # streams shown per app, running and ended, newest first
FAILURES = 10  # failed streams shown per app, newest first
WAIT_SECONDS = 10.0  # a stream view's poll waits this long for the next events


@router.get("/admin")
async def admin_page(request: Request) -> FileResponse:
    if request.app.state.settings.admin_token is None:
        raise NotFound("Not Found")
    return FileResponse(STATIC / "admin.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


def _stream(record: StreamRecord, now: float) -> dict[str, Any]:
    """A record as the dashboard shows it. While a stream runs its record knows how many events it
    has sent (saved about once a second), not its tokens: the deltas are counted as tokens then,
    which is what most providers send one of per chunk, and the provider's usage replaces them at the end."""
    ended = record.ended_at if record.ended_at is not None else now
    duration = max(ended - record.created_at, 0.0)
    completion = (record.usage or {}).get("completion_tokens")
    estimated = not isinstance(completion, int)
    tokens = max(record.seq - 1, 0) if estimated else completion
    return {
        **record.to_json(),
        # The answers are the apps' users' business: the list leaves them out; a stream view reads them
        # from the events, when the operator opens that one stream.
        "text": None,
        "reasoning": None,
        "duration": round(duration, 3),
        "tokens": tokens,
        "tokensEstimated": estimated,
        "tokensPerSecond": round(tokens / duration, 1) if duration > 0 else None,
    }


@router.get("/admin/api/overview")
async def overview(request: Request) -> dict[str, Any]:
    state = request.app.state
    require_bearer(request, state.settings.admin_token, "admin_token")
    now = time.time()
    apps = []
    for app in await state.store.list_apps():
        listing = await state.messaging.presence.list(app.id)
        connections = sum(1 for name in listing if name.startswith(PRIVATE_PREFIX))
        channels = sorted(name for name in listing if not name.startswith(PRIVATE_PREFIX))
        records = await state.store.recent_streams(RECENT, app.id)
        failures = await state.store.recent_failures(FAILURES, app.id)
        apps.append(
            {
                "id": app.id,
                "name": app.name,
                "connections": connections,
                "channels": len(channels),
                "listeners": sum(len(listing[name]) for name in channels),
                "running": sum(1 for r in records if r.status == "running"),
                "streams": [_stream(r, now) for r in records],
                "failures": [_stream(r, now) for r in failures],
            }
        )
    return {
        "generatedAt": now,
        "instance": state.fleet.instance_id,
        "apps": apps,
        "refusedCalls": state.refused_calls.recent(),
    }


StreamId = Annotated[str, StringConstraints(min_length=1, max_length=200)]


@router.get("/admin/api/streams/{streamId}/events")
async def stream_view(
    request: Request,
    streamId: StreamId,
    after: Annotated[int, Query(ge=-1, description="The seq of the last event the page has; -1 for none.")] = -1,
) -> dict[str, Any]:
    """The stream's events after seq ``after`` (waiting up to ``WAIT_SECONDS`` for some while it
    runs), its record as the list shows it, and whether it is over: nothing follows its ``end``."""
    state = request.app.state
    require_bearer(request, state.settings.admin_token, "admin_token")
    record = await state.store.stream_by_id(streamId)
    if record is None:
        raise NotFound(f"No stream {streamId[:80]!r}")
    # No connection limits: those are the app's pages', and the operator is not one of them.
    reader = StreamReader(state.hub, state.store, record)
    chunk = await reader.read(after)
    if not chunk.events and not chunk.closed:
        async with reader.following() as woken:
            chunk = (
                await unless_gone(request, state.messaging.closing, reader.wait(after, woken, WAIT_SECONDS)) or chunk
            )
    record = await state.store.stream_by_id(streamId) or record  # the tools and error saved meanwhile
    return {"stream": _stream(record, time.time()), "events": chunk.events, "closed": chunk.closed}


class AdminStop(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    streamId: Annotated[str, StringConstraints(min_length=1, max_length=200)]


@router.post("/admin/api/stop")
async def admin_stop(body: AdminStop, request: Request) -> dict[str, Any]:
    state = request.app.state
    require_bearer(request, state.settings.admin_token, "admin_token")
    stopped = await state.fleet_streams.stop(body.streamId)
    return {"status": "stopped" if stopped else "not_found", "streamId": body.streamId}
