"""``POST /stream/create``, ``/stream/stop`` and ``/stream/status``: the BetterForms Streaming API."""

from __future__ import annotations

import asyncio
import re
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from bfstream.api.auth import authenticate
from bfstream.api.headers import narrow_to_app
from bfstream.api.idempotency import DESCRIPTION as IDEMPOTENCY
from bfstream.api.idempotency import KEY_SCHEMA, KeyHeader, key_of, once
from bfstream.api.openapi import NOT_BLANK, PROVIDER_KEY_MAX, PROVIDER_KEY_PATTERN, RESERVED_PROVIDER_ARGS, AppKey
from bfstream.credentials import sealer
from bfstream.errors import CredentialUnavailable, Forbidden, NotFound, UnknownService, ValidationFailed
from bfstream.fleet.ratelimits import enforce
from bfstream.messaging.protocol import channel_problem
from bfstream.providers.events import ChatRequest
from bfstream.providers.translation import frontend_tools, normalise_tools, offered_tools
from bfstream.scrub import without_key
from bfstream.store.records import App
from bfstream.streams.lifecycle import MAX_METADATA_BYTES, check_metadata
from bfstream.streams.stream import Stream, StreamSpec
from bfstream.text import repair_json

router = APIRouter()

NOT_SENT = {"apiKey", "provider", "stream", "includeReasoning"}  # payload fields for bfstream, not the provider
METADATA = (
    f"Yours, up to {MAX_METADATA_BYTES} bytes as JSON (a record id to write the answer back to, say): given back"
    " in the stream's lifecycle event to your webhook (docs/streams.md), never sent to the channels or the provider."
)
INCLUDE_REASONING = (
    "true: the model's reasoning goes to the channels as reasoning events as it thinks, and end.reasoning holds"
    " all of it (stream: false: choices[0].message.reasoning_content). Default false."
)

_HEADER_SAFE = re.compile(PROVIDER_KEY_PATTERN)  # printable ASCII, no space: the document's own rule


class StreamPayload(BaseModel):
    """The provider request. Fields not named here go to the provider untouched."""

    model_config = ConfigDict(extra="allow", strict=True)

    apiKey: str | None = Field(
        None,
        description="The provider's API key, used for this call only and never stored. Omitted: the key the"
        " app keeps for the service (bfstream apps credentials set), else the service's configured api_key.",
        json_schema_extra={"pattern": PROVIDER_KEY_PATTERN, "maxLength": PROVIDER_KEY_MAX},
    )
    provider: str | None = Field(None, description="Alias of the top-level `service`.")
    stream: bool = Field(True, description="false: the provider's answer comes back in this HTTP response.")
    model: str | None = Field(None, description="Required by every service but echo.")
    messages: Annotated[list[dict[str, Any]], Field(min_length=1)]
    tools: list[dict[str, Any]] | None = Field(
        None, description="OpenAI-format tools; names starting with ui_ are answered by the page (stream: true only)."
    )
    functions: list[dict[str, Any]] | None = Field(None, description="Legacy OpenAI functions.")
    includeReasoning: bool | None = Field(None, description="Same as the top-level includeReasoning; never sent on.")


class CreateStream(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    apiKey: AppKey
    channels: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=list, description="Channels that receive the stream events. Required when streaming."
    )
    actionName: str | None = Field(
        None,
        description="Named action each event runs. Required when streaming.",
        json_schema_extra={"pattern": NOT_BLANK},
    )
    service: str | None = Field(
        None, description="openAI, anthropic, gemini, echo or a configured name. Default openai."
    )
    payload: StreamPayload
    coalesceMs: float | None = Field(
        None, ge=0, le=10_000, description="Merge deltas arriving within this many ms into one event (default: off)."
    )
    toolTimeout: float | None = Field(
        None, description="Seconds a page has to answer a ui_* tool call (default tools.timeout, 90)."
    )
    includeReasoning: bool = Field(False, description=INCLUDE_REASONING)
    metadata: dict[str, Any] | None = Field(None, description=METADATA)
    idempotencyKey: str | None = Field(None, description=IDEMPOTENCY, json_schema_extra=KEY_SCHEMA)


class StreamCreated(BaseModel):
    success: bool = True
    message: str = "Streaming setup complete"
    streamId: str


def _check_streaming_fields(channels: list[str], action_name: str | None, max_channels: int) -> None:
    problems = []
    if not channels:
        problems.append({"field": "channels", "message": "at least one channel is required when streaming"})
    if len(channels) > max_channels:
        problems.append({"field": "channels", "message": f"at most {max_channels} channels"})
    for i, channel in enumerate(channels):
        if (why := channel_problem(channel)) is not None:
            problems.append({"field": f"channels.{i}", "message": why})
    if not action_name or not action_name.strip():
        problems.append({"field": "actionName", "message": "actionName is required when streaming"})
    if problems:
        raise ValidationFailed("The request body is invalid", details=problems)


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_answered(request: Request, stream: Stream, api_key: str | None, *, to_the_end: bool = False) -> Any:
    """A ``stream: false`` call. The caller may hang up while the model writes; then the provider call
    is cancelled at once, so it stops generating (and billing) instead of finishing for nobody, and
    the answer is None. ``to_the_end``: a request with an idempotency key finishes anyway, as its
    caller's retry will ask for the answer (``api/idempotency.py``)."""
    answer = asyncio.create_task(stream.answer())
    if not to_the_end:
        hangup = asyncio.create_task(_until_disconnected(request))
        await asyncio.wait({answer, hangup}, return_when=asyncio.FIRST_COMPLETED)
        hangup.cancel()
        if not answer.done():
            answer.cancel()
            await asyncio.gather(answer, return_exceptions=True)
            return None
    # The provider's JSON may hold lone surrogates. The answer goes back byte for byte as the model
    # wrote it; only an error body that a broken or hostile provider sent with a 200 loses a quoted key.
    result = repair_json(await answer)
    if isinstance(result, dict) and "error" in result and "choices" not in result:
        return without_key(result, api_key)
    return result


def _key_problem(key: str | None) -> None:
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


def service_name(given: str | None) -> str:
    """The service a request names, as the settings key it: ``openAI`` and `` openai `` are one."""
    return (given if given is not None else "openai").strip().lower()


async def prepare(
    request: Request,
    app: App,
    *,
    service: str | None,
    payload: dict[str, Any],
    api_key: str | None,
    streaming: bool,
    channels: list[str],
    action_name: str | None,
    coalesce_ms: float | None = None,
    tool_timeout: float | None = None,
    provider_args: dict[str, Any] | None = None,
    include_reasoning: bool = False,
    metadata: dict[str, Any] | None = None,
) -> StreamSpec:
    """What ``/stream/create`` and ``/llm/query`` share once the body is read: the rate limit, the
    service, the model, the provider key's shape and the tools, checked before anything is sent.
    The provider key is the request's own, else the one the app keeps for the service, else the
    service's configured ``api_key``; the key in use is ``spec.chat.api_key``, which every error
    text is scrubbed of."""
    state = request.app.state
    settings = state.settings
    await enforce(state.fleet.rates, app.id, "streams", settings.limits.streams)
    name = service_name(service)
    services = settings.enabled_services()
    config = services.get(name)
    if config is None:
        raise UnknownService(f"Unknown service {name!r}; available: {', '.join(services)}", details=list(services))
    model = payload.get("model") or ("echo" if config.kind == "echo" else None)
    if not isinstance(model, str):
        raise ValidationFailed(
            "The request body is invalid", details=[{"field": "payload.model", "message": "Field required"}]
        )
    _key_problem(api_key)
    check_metadata(metadata)
    if taken := sorted(RESERVED_PROVIDER_ARGS.intersection(provider_args or {})):
        raise ValidationFailed(
            "The request body is invalid",
            details=[
                {
                    "field": f"payload.providerArgs.{key}",
                    "message": "set by bfstream: use payload.stream and payload.messages",
                }
                for key in taken
            ],
        )
    payload = normalise_tools(payload)
    offered = offered_tools(payload, provider_args)
    if "ui_" in offered:
        raise ValidationFailed(
            "The request body is invalid",
            details=[{"field": "payload.tools", "message": "ui_ alone names no action: ui_<action>"}],
        )
    if not streaming and (ui := frontend_tools(offered)):
        raise ValidationFailed(
            "Frontend tools (ui_*) need a page to answer them: send them with stream: true",
            details=[{"field": "payload.tools", "message": f"{', '.join(ui)}: ui_* tools need stream: true"}],
        )
    if streaming:
        _check_streaming_fields(channels, action_name, settings.messaging.max_channels)
    tools = settings.tools
    if tool_timeout is not None and not 1 <= tool_timeout <= tools.max_timeout:
        raise ValidationFailed(
            "The request body is invalid",
            details=[{"field": "toolTimeout", "message": f"seconds from 1 to {tools.max_timeout:g}"}],
        )
    if not api_key:
        api_key = await stored_key(request, app, name)
    chat = ChatRequest(
        payload=payload,
        model=model,
        api_key=api_key or config.api_key,
        provider_args=provider_args,
        include_reasoning=include_reasoning,
    )
    return StreamSpec(
        app, name, config, chat, list(channels), action_name or "",
        coalesce_ms=coalesce_ms if coalesce_ms is not None else config.coalesce_ms,
        tool_timeout=tool_timeout if tool_timeout is not None else tools.timeout,
        max_rounds=tools.max_rounds, offered=frozenset(offered), metadata=metadata,
    )  # fmt: skip


async def stored_key(request: Request, app: App, service: str) -> str | None:
    """The provider key ``app`` keeps for ``service`` (``bfstream apps credentials set``), decrypted.
    Asked only of requests that bring no key: one lookup by primary key. A key that cannot be
    decrypted here is ``CredentialUnavailable`` (503), never the service's configured key instead."""
    state = request.app.state
    sealed = await state.store.credential(app.id, service)
    if sealed is None:
        return None
    # Looked up again until found: on SQLite, the key file may be made by the CLI after start-up.
    box = getattr(state, "credential_sealer", None) or sealer(state.settings, create=False)
    if box is None:
        raise CredentialUnavailable(
            f"The app keeps a key for {service!r}, but this server has no credentials_key to decrypt it",
            code="no_credentials_key",
        )
    state.credential_sealer = box
    return box.open(app.id, service, sealed)


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
async def create_stream(body: CreateStream, request: Request, idempotency_key: KeyHeader = None) -> Any:
    """Start a provider stream and relay it to the channels, or (``stream: false``) return the answer.
    (``idempotency_key`` documents the header; ``key_of`` reads every copy of it.)"""
    app = await authenticate(request, body.apiKey)
    key = key_of(request, body.idempotencyKey)
    service = service_name(body.service if body.service is not None else body.payload.provider)
    return await once(request, app, key, body, service, partial(start_stream, request, app, body, to_the_end=bool(key)))


async def start_stream(request: Request, app: App, body: CreateStream, *, to_the_end: bool = False) -> Any:
    """Everything after the app key: the demo page starts its streams here too, for its own app.
    The answer's JSON; None when a ``stream: false`` caller hung up (``to_the_end``: see ``until_answered``)."""
    given = body.service if body.service is not None else body.payload.provider
    spec = await prepare(
        request, app,
        service=given,
        payload=body.payload.model_dump(exclude_unset=True, exclude=NOT_SENT),
        api_key=body.payload.apiKey,
        streaming=body.payload.stream,
        channels=body.channels,
        action_name=body.actionName,
        coalesce_ms=body.coalesceMs,
        tool_timeout=body.toolTimeout,
        include_reasoning=body.includeReasoning or bool(body.payload.includeReasoning),
        metadata=body.metadata,
    )  # fmt: skip
    stream = Stream(request.app.state.stream_context, spec)
    if not body.payload.stream:
        return await until_answered(request, stream, spec.chat.api_key, to_the_end=to_the_end)
    return StreamCreated(streamId=await stream.start()).model_dump()


async def check_page_origin(request: Request, stream_id: str, what: str) -> None:
    """A request naming a stream from a page (stop, a tool's answer) must come from one of the
    stream's app's origins."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    state = request.app.state
    record = await state.store.stream_by_id(stream_id)
    app = await state.store.app_by_id(record.app_id) if record is not None else None
    if app is not None:
        narrow_to_app(request.scope, app.origins)
        if not app.allows_origin(origin):
            raise Forbidden(f"This page's origin may not {what} this app's streams")


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
    await check_page_origin(request, body.streamId, "stop")
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
