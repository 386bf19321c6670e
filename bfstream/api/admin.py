"""The streams dashboard at ``/admin``, on with ``admin_token`` (``BFSTREAM_ADMIN_TOKEN``).

The page holds no data; it asks for the token and polls ``/admin/api/overview`` with it, which is
read through the store and the presence of the broker, never this process's memory, so that in a
fleet any instance shows every instance's streams and connections. Stopping goes through
``/admin/api/stop`` (with the token) rather than ``/stream/stop``, so an app's list of allowed page
origins, which does not name bfstream's own, cannot lock the operator out.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, StringConstraints

from bfstream.api.auth import require_bearer
from bfstream.errors import NotFound
from bfstream.messaging.protocol import PRIVATE_PREFIX
from bfstream.store.records import StreamRecord

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).parents[1] / "static"
RECENT = 20  # streams shown per app, running and ended, newest first


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
        "text": None,  # the answers are the apps' users' business, not the dashboard's
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
        apps.append(
            {
                "id": app.id,
                "name": app.name,
                "connections": connections,
                "channels": len(channels),
                "listeners": sum(len(listing[name]) for name in channels),
                "running": sum(1 for r in records if r.status == "running"),
                "streams": [_stream(r, now) for r in records],
            }
        )
    return {"generatedAt": now, "instance": state.fleet.instance_id, "apps": apps}


class AdminStop(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    streamId: Annotated[str, StringConstraints(min_length=1, max_length=200)]


@router.post("/admin/api/stop")
async def admin_stop(body: AdminStop, request: Request) -> dict[str, Any]:
    state = request.app.state
    require_bearer(request, state.settings.admin_token, "admin_token")
    stopped = await state.fleet_streams.stop(body.streamId)
    return {"status": "stopped" if stopped else "not_found", "streamId": body.streamId}
