"""The last calls to start an answer (``/stream/create``, ``/llm/query``) that this instance answered
with an error, for the dashboard (``api/admin.py``): a wrong key, a bad body, a rate limit, a provider
that refused before the stream began.

Kept in a bounded ring in this process's memory, not in the store: a refusal is the cheapest request
there is to make, and writing each one to the database would let anyone without a key make the
database work at the rate they can send. The ring costs nothing to fill and forgets by itself. In a
fleet each instance keeps its own: the dashboard shows the refusals of the instance that answered
its poll, and names it.

What is kept is what the caller was answered (already scrubbed of secrets, ``api/errors.py``) and
when; never the request's body, its key or its address.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

WATCHED = frozenset({"/stream/create", "/llm/query"})
SIZE = 50  # refusals kept; the dashboard lists them newest first


class RefusedCalls:
    """A ring of the last ``size`` refusals, newest last. One per app (``app.state.refused_calls``)."""

    def __init__(self, size: int = SIZE) -> None:
        self._ring: deque[dict[str, Any]] = deque(maxlen=size)

    def note(self, path: str, status: int, error: dict[str, Any]) -> None:
        details = error.get("details")
        self._ring.append(
            {
                "at": time.time(),
                "path": path,
                "status": status,
                "code": error.get("code"),
                "type": error.get("type"),
                "message": error.get("message"),
                # Field problems say what was wrong; a provider's own error body can be long and is
                # the stream's business (its record keeps it when a stream failed).
                "details": details if isinstance(details, list) else None,
            }
        )

    def recent(self) -> list[dict[str, Any]]:
        return list(reversed(self._ring))


def note_refusal(request: Request, response: JSONResponse) -> JSONResponse:
    """Remember ``response`` if it refuses a watched call; hands it back unchanged."""
    ring: RefusedCalls | None = getattr(request.app.state, "refused_calls", None)
    if ring is not None and request.url.path in WATCHED and response.status_code >= 400:
        error = json.loads(bytes(response.body)).get("error")
        if isinstance(error, dict):
            ring.note(request.url.path, response.status_code, error)
    return response
