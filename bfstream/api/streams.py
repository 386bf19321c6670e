"""``POST /stream/create``: the BetterForms Streaming API."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from bfstream.api.auth import authenticate
from bfstream.errors import UnknownService, ValidationFailed
from bfstream.messaging.protocol import channel_problem
from bfstream.providers import ADAPTERS
from bfstream.providers.events import ChatRequest, Started
from bfstream.streams.runner import StreamTarget, relay

router = APIRouter()


class StreamPayload(BaseModel):
    """The provider request. Fields not named here go to the provider untouched."""

    model_config = ConfigDict(extra="allow")

    apiKey: str | None = Field(None, description="The provider's API key. Used for this call only, never stored.")
    provider: str | None = Field(None, description="Alias of the top-level `service`.")
    stream: bool = Field(True, description="false: the provider's answer comes back in this HTTP response.")
    model: str
    messages: Annotated[list[dict[str, Any]], Field(min_length=1)]


class CreateStream(BaseModel):
    model_config = ConfigDict(extra="forbid")

    apiKey: str = Field(description="The app's key (BFAPI_...).")
    channels: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=list, description="Channels that receive the stream events. Required when streaming."
    )
    actionName: str | None = Field(None, description="Named action each event runs. Required when streaming.")
    service: str | None = Field(None, description="openAI, echo, ... (case-insensitive). Default: openai.")
    payload: StreamPayload


class StreamCreated(BaseModel):
    success: bool = True
    message: str = "Streaming setup complete"
    streamId: str


def _check_streaming_fields(body: CreateStream) -> None:
    problems = []
    if not body.channels:
        problems.append({"field": "channels", "message": "at least one channel is required when streaming"})
    for i, channel in enumerate(body.channels):
        if (why := channel_problem(channel)) is not None:
            problems.append({"field": f"channels.{i}", "message": why})
    if not body.actionName:
        problems.append({"field": "actionName", "message": "actionName is required when streaming"})
    if problems:
        raise ValidationFailed("The request body is invalid", details=problems)


@router.post(
    "/stream/create",
    response_model=StreamCreated,
    responses={200: {"description": "Streaming: the setup acknowledgement. Non-streaming: the provider's answer."}},
)
async def create_stream(body: CreateStream, request: Request) -> Any:
    """Start a provider stream and relay it to the channels, or (``stream: false``) return the answer."""
    app = authenticate(request, body.apiKey)
    state = request.app.state
    name = (body.service or body.payload.provider or "openai").lower()
    services = state.settings.enabled_services()
    service = services.get(name)
    if service is None:
        raise UnknownService(f"Unknown service {name!r}; available: {', '.join(services)}", details=list(services))
    adapter = ADAPTERS[service.kind]
    payload = body.payload.model_dump(exclude_unset=True, exclude={"apiKey", "provider", "stream"})
    chat = ChatRequest(payload=payload, model=body.payload.model, api_key=body.payload.apiKey or service.api_key)
    if not body.payload.stream:
        return JSONResponse(await adapter.complete(chat, state.http, service))
    _check_streaming_fields(body)
    events = adapter.stream_chat(chat, state.http, service)
    try:
        started = await anext(events)
    except BaseException:
        await events.aclose()
        raise
    assert isinstance(started, Started)
    stream_id = secrets.token_hex(16)
    target = StreamTarget(stream_id, app.id, body.channels, body.actionName or "", name, started.model)
    state.streams.start(stream_id, relay(state.hub, target, events))
    return StreamCreated(streamId=stream_id)
