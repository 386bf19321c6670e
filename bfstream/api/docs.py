"""``/docs``: the API's reference, Swagger UI on ``/openapi.json``, served whole by bfstream.

FastAPI's own page loads its viewer from a CDN, which leaves a blank page wherever the internet is
out of reach (an air-gapped intranet, a locked-down server room) and lets a third party run script
on this origin. Here the viewer is a copy kept under ``static/vendor/swagger-ui`` (the
swagger-ui-dist release, with its licence), started by a script of our own, so the page keeps the
same strict policy as every other page (``api/headers.py``). FastAPI's ``/redoc`` is not served:
its page loads ReDoc and its fonts from other origins too, and one viewer is enough.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

PAGE = Path(__file__).parents[1] / "static" / "api-docs.html"

router = APIRouter(include_in_schema=False)


@router.get("/docs", response_class=HTMLResponse)
async def api_docs() -> HTMLResponse:
    return HTMLResponse(PAGE.read_text())
