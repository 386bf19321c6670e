"""``GET /metrics``: the Prometheus scrape, behind a bearer token of its own.

Without ``metrics_token`` the route answers exactly as an unknown path does (404), so an instance
that does not export metrics does not say it could. It is left out of the OpenAPI document: it is
for the operator's scraper, not for the back ends and browsers the document describes.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from bfstream.errors import NotFound, Unauthorized

router = APIRouter()


def _bytes(text: str) -> bytes:
    # surrogateescape: a token read from the environment may hold bytes that are not UTF-8.
    return text.encode("utf-8", "surrogateescape")


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    state = request.app.state
    token = state.settings.metrics_token
    if token is None:
        raise NotFound("Not Found")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # Compared in constant time whatever was sent, so the answer's timing tells nothing about the token.
    if not hmac.compare_digest(_bytes(given.strip()), _bytes(token)) or scheme.lower() != "bearer":
        raise Unauthorized("A valid metrics token is required: Authorization: Bearer <metrics_token>")
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
