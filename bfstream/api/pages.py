"""What a person opening bfstream in a browser gets first: the landing page at ``/``, saying what
this server is and where to go (the client and the pages' assets are under ``/static/``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

STATIC = Path(__file__).parents[1] / "static"

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def landing(request: Request) -> HTMLResponse:
    page = (STATIC / "index.html").read_text()
    if request.app.state.settings.demo.enabled:
        page = page.replace("<!-- demo -->", '<li><a href="/demo">The demo</a>: a chat page streaming an answer</li>')
    if request.app.state.settings.admin_token is not None:
        page = page.replace("<!-- admin -->", '<li><a href="/admin">Streams dashboard</a> (with the admin token)</li>')
    return HTMLResponse(page)
