"""The demo chat page (``bfstream serve --demo``) and the one endpoint behind it.

The page is the ``<bf-chat>`` element's live example (``static/bf-chat.js``, on ``bfstream.js``),
an element and a form, like any app's page would be, and never holds an app key: it joins a
channel of its own making (``demo-`` and 128 random bits, so no other visitor can
guess it) and asks ``POST /demo/ask``, which starts the stream for the demo's own app, as an
app's back end would with its key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, StringConstraints

from bfstream.api.streams import CreateStream, StreamPayload, start_stream
from bfstream.errors import NotFound
from bfstream.store.records import App
from bfstream.store.store import Store

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).parents[1] / "static"
DEMO_APP = "demo"
ACTION = "demoAnswer"
_CHANNEL = re.compile(r"demo-[A-Za-z0-9_-]{22,64}")


async def demo_app(store: Store) -> App:
    """The demo's own app, made on first start. Its key is never shown: nothing outside needs it."""
    app = await store.find_app(DEMO_APP)
    if app is None:
        app, _key = await store.create_app(DEMO_APP)
    return app


def _enabled(request: Request) -> App:
    app = getattr(request.app.state, "demo_app", None)
    if app is None:
        raise NotFound("Not Found")  # as if the page did not exist: the demo is off
    return app


@router.get("/demo")
async def demo_page(request: Request) -> FileResponse:
    _enabled(request)
    return FileResponse(STATIC / "demo.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/demo/config")
async def demo_config(request: Request) -> dict[str, Any]:
    app = _enabled(request)
    return {"appId": app.id, "service": request.app.state.settings.demo.service, "action": ACTION}


class Ask(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    channel: Annotated[str, StringConstraints(pattern=_CHANNEL.pattern)]
    prompt: Annotated[str, StringConstraints(min_length=1, max_length=4000)]


def _echo_answer(prompt: str) -> str:
    """What the echo service should say back: a few sentences, so the page shows text arriving."""
    return (
        f"You wrote: {prompt.strip()} "
        "This answer comes from bfstream's echo service, one word at a time, through the same relay a "
        "real model's answer takes. Every word reached this page as a delta event on a channel it "
        "joined with bfstream.js. Stop it with the button, or drop your connection: it picks up where it was."
    )


@router.post("/demo/ask")
async def ask(body: Ask, request: Request) -> Any:
    app = _enabled(request)
    demo = request.app.state.settings.demo
    echo = request.app.state.settings.services.get(demo.service.lower())
    is_echo = echo is not None and echo.kind == "echo"
    content = _echo_answer(body.prompt) if is_echo else body.prompt
    payload = StreamPayload(
        model=demo.model or ("echo" if is_echo else None), messages=[{"role": "user", "content": content}]
    )
    # A reasoning model's thinking is shown while it thinks, so the page does not sit silent.
    create = CreateStream(
        apiKey="",
        channels=[body.channel],
        actionName=ACTION,
        service=demo.service,
        payload=payload,
        includeReasoning=True,
    )
    return await start_stream(request, app, create)
