"""``GET /metrics``: the Prometheus scrape, behind a bearer token of its own.

Without ``metrics_token`` the route answers exactly as an unknown path does (404), so an instance
that does not export metrics does not say it could. It is left out of the OpenAPI document: it is
for the operator's scraper, not for the back ends and browsers the document describes.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from bfstream.api.auth import require_bearer

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    state = request.app.state
    require_bearer(request, state.settings.metrics_token, "metrics_token")
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
