"""``POST /stream/create``, ``/stream/stop`` and ``/stream/status``: the BetterForms Streaming API."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncGenerator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from bfstream.api.auth import authenticate
from bfstream.api.headers import narrow_to_app
from bfstream.api.openapi import PROVIDER_KEY_MAX, PROVIDER_KEY_PATTERN, AppKey
from bfstream.config import ServiceConfig
from bfstream.errors import BrokerError, Forbidden, NotFound, UnknownService, ValidationFailed
from bfstream.messaging.protocol import channel_problem
from bfstream.providers import ADAPTERS
from bfstream.providers.events import Adapter, ChatRequest, ProviderEvent, Started
from bfstream.ratelimits import enforce
from bfstream.scrub import without
from bfstream.store.records import App, StreamRecord
from bfstream.streams.registry import RunningStream
from bfstream.streams.retry import with_retries
from bfstream.streams.runner import relay
from bfstream.text import repair_json

router = APIRouter()

_HEADER_SAFE = re.compile(PROVIDER_KEY_PATTERN)  # printable ASCII, no space: the document's own rule


class StreamPayload(BaseModel):
    """The provider request. Fields not named here go to the provider untouched."""

    model_config = ConfigDict(extra="allow", strict=True)

    apiKey: str | None = Field(
        None,
        description="The provider's API key. Used for this call only, never stored.",
        json_schema_extra={"pattern": PROVIDER_KEY_PATTERN, "maxLength": PROVIDER_KEY_MAX},
    )
    provider: str | None = Field(None, description="Alias of the top-level `service`.")
    stream: bool = Field(True, description="false: the provider's answer comes back in this HTTP response.")
    model: str | None = Field(None, description="Required by every service but echo.")
    messages: Annotated[list[dict[str, Any]], Field(min_length=1)]


class CreateStream(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    apiKey: AppKey
    channels: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=list, description="Channels that receive the stream events. Required when streaming."
    )
    actionName: str | None = Field(None, description="Named action each event runs. Required when streaming.")
    service: str | None = Field(
        None, description="openAI, anthropic, gemini, echo or a configured name. Default openai."
    )
    payload: StreamPayload
    coalesceMs: float | None = Field(
        None, ge=0, le=10_000, description="Merge deltas arriving within this many ms into one event (default: off)."
    )


class StreamCreated(BaseModel):
    success: bool = True
    message: str = "Streaming setup complete"
    streamId: str


def _check_streaming_fields(body: CreateStream, max_channels: int) -> None:
    problems = []
    if not body.channels:
        problems.append({"field": "channels", "message": "at least one channel is required when streaming"})
    if len(body.channels) > max_channels:
        problems.append({"field": "channels", "message": f"at most {max_channels} channels"})
    for i, channel in enumerate(body.channels):
        if (why := channel_problem(channel)) is not None:
            problems.append({"field": f"channels.{i}", "message": why})
    if not body.actionName:
        problems.append({"field": "actionName", "message": "actionName is required when streaming"})
    if problems:
        raise ValidationFailed("The request body is invalid", details=problems)


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _complete(
    request: Request, adapter: Adapter, chat: ChatRequest, service: ServiceConfig, max_wait: float
) -> Response:
    """A ``stream: false`` call. The caller may hang up while the model writes; then the provider call
    is cancelled at once, so it stops generating (and billing) instead of finishing for nobody."""
    state = request.app.state
    answer = asyncio.create_task(
        with_retries(lambda: adapter.complete(chat, state.http, service), service.retries, max_wait)
    )
    hangup = asyncio.create_task(_until_disconnected(request))
    await asyncio.wait({answer, hangup}, return_when=asyncio.FIRST_COMPLETED)
    hangup.cancel()
    if not answer.done():
        answer.cancel()
        await asyncio.gather(answer, return_exceptions=True)
        return Response(status_code=499)  # nobody is listening any more
    # The provider's JSON may hold lone surrogates, and a broken or hostile one may quote the key back.
    return JSONResponse(without(repair_json(answer.result()), chat.api_key))


class ChatCompletion(BaseModel):
    """A ``stream: false`` answer: OpenAI's chat.completion object (OpenAI's own, untouched)."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


@router.post(
    "/stream/create",
    response_model=StreamCreated | ChatCompletion,
    responses={200: {"description": "Streaming: the setup acknowledgement. Non-streaming: the provider's answer."}},
)
async def create_stream(body: CreateStream, request: Request) -> Any:
    """Start a provider stream and relay it to the channels, or (``stream: false``) return the answer."""
    return await start_stream(request, await authenticate(request, body.apiKey), body)


async def start_stream(request: Request, app: App, body: CreateStream) -> Any:
    """Everything after the app key: the demo page starts its streams here too, for its own app."""
    state = request.app.state
    settings = state.settings
    await enforce(state.fleet.rates, app.id, "streams", settings.limits.streams)
    given = body.service if body.service is not None else body.payload.provider
    name = (given if given is not None else "openai").strip().lower()
    services = settings.enabled_services()
    service = services.get(name)
    if service is None:
        raise UnknownService(f"Unknown service {name!r}; available: {', '.join(services)}", details=list(services))
    adapter = ADAPTERS[service.kind]
    model = body.payload.model or ("echo" if service.kind == "echo" else None)
    if model is None:
        raise ValidationFailed(
            "The request body is invalid", details=[{"field": "payload.model", "message": "Field required"}]
        )
    key = body.payload.apiKey
    if key is not None and (len(key) > PROVIDER_KEY_MAX or not _HEADER_SAFE.fullmatch(key)):
        # It becomes an HTTP header: a line break or a non-ASCII character would fail there, with
        # the key quoted in the error. Said here instead, without the key.
        raise ValidationFailed(
            "The request body is invalid",
            details=[
                {
                    "field": "payload.apiKey",
                    "message": f"a key is up to {PROVIDER_KEY_MAX} characters of printable ASCII,"
                    " without spaces or line breaks",
                }
            ],
        )
    payload = body.payload.model_dump(exclude_unset=True, exclude={"apiKey", "provider", "stream"})
    chat = ChatRequest(payload=payload, model=model, api_key=body.payload.apiKey or service.api_key)
    max_wait = settings.streams.retry_max_wait

    if not body.payload.stream:
        async with state.streams.admitted(app.id):
            with state.metrics.provider_errors(name):
                return await _complete(request, adapter, chat, service, max_wait)

    _check_streaming_fields(body, settings.messaging.max_channels)

    async def open_stream() -> tuple[Started, AsyncGenerator[ProviderEvent, None]]:
        events = adapter.stream_chat(chat, state.http, service)
        try:
            started = await anext(events)
        except BaseException:
            await events.aclose()
            raise
        assert isinstance(started, Started)
        return started, events

    if not state.hub.broker.up:  # refuse before the provider is called (and paid) for nothing
        raise BrokerError("The message broker is unreachable: streams cannot reach their channels now")
    async with state.streams.admitted(app.id) as admission:
        with state.metrics.provider_errors(name):
            started, events = await with_retries(open_stream, service.retries, max_wait)
        record = StreamRecord(
            secrets.token_hex(16), app.id, name, started.model, list(body.channels), body.actionName or "",
            owner=state.fleet.instance_id,
        )  # fmt: skip
        await state.store.record_stream_start(record)
        stream = RunningStream(record)
        coalesce_ms = body.coalesceMs if body.coalesceMs is not None else service.coalesce_ms
        work = relay(
            state.hub, state.store, stream, events,
            retain_text=app.retain_text, coalesce_ms=coalesce_ms, max_duration=settings.streams.max_duration,
            metrics=state.metrics,
        )  # fmt: skip
        state.streams.start(stream, work, admission)
    return StreamCreated(streamId=record.id)


class StopStream(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    streamId: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class StopResult(BaseModel):
    status: Literal["stopped", "not_found"]
    streamId: str


@router.post("/stream/stop", response_model=StopResult)
@router.post("/llm/query/stop", response_model=StopResult)
async def stop_stream(body: StopStream, request: Request) -> StopResult:
    """Stop a running stream: the provider connection closes at once and the channels get ``end`` with
    ``finish_reason: "stopped"``. The random stream id is the capability, so a browser may call this."""
    state = request.app.state
    origin = request.headers.get("origin")
    if origin is not None:  # from a page: only from one of the stream's app's origins
        record = await state.store.stream_by_id(body.streamId)
        app = await state.store.app_by_id(record.app_id) if record is not None else None
        if app is not None:
            narrow_to_app(request.scope, app.origins)
            if not app.allows_origin(origin):
                raise Forbidden("This page's origin may not stop this app's streams")
    stopped = await state.fleet_streams.stop(body.streamId)
    return StopResult(status="stopped" if stopped else "not_found", streamId=body.streamId)


class StreamStatus(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    apiKey: AppKey
    streamId: str


@router.post("/stream/status")
async def stream_status(body: StreamStatus, request: Request) -> dict[str, Any]:
    """The stream's record; while it runs, with the text so far."""
    app = await authenticate(request, body.apiKey)
    status = await request.app.state.fleet_streams.status(app, body.streamId)
    if status is None:
        raise NotFound(f"No stream {body.streamId[:80]!r} for this app")
    return status
