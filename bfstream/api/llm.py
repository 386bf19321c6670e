"""``POST /llm/query`` (the reference's llmQuery service) and ``POST /llm/tool-response``.

``/llm/query`` is ``/stream/create`` in the reference's later shape: the provider is named in
``payload.provider``, ``providerArgs`` go to the provider as they are (after translation), tools
come in OpenAI's format (or flat), and every answer says ``success``::

    streaming:  {"success": true, "data": {"message": "Streaming setup complete", "streamId"}}
    answered:   {"success": true, "actionName", "data": {<chat.completion: choices, usage...>}}
    failed:     {"success": false, "actionName", "error": {"message", "code", "type", "details"}}

``actionName`` is echoed when the request had one. Failures keep their HTTP status (400, 401,
429, 502...), mapped in ``api/errors.py`` like every other endpoint's.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from bfstream.api.auth import authenticate
from bfstream.api.idempotency import DESCRIPTION as IDEMPOTENCY
from bfstream.api.idempotency import KEY_SCHEMA, KeyHeader, key_of, once
from bfstream.api.openapi import NOT_BLANK, PROVIDER_KEY_MAX, PROVIDER_KEY_PATTERN, AppKey
from bfstream.api.streams import (
    INCLUDE_REASONING,
    METADATA,
    NOT_SENT,
    check_page_origin,
    prepare,
    service_name,
    until_answered,
)
from bfstream.errors import NotFound, ValidationFailed
from bfstream.messaging.protocol import tool_result_problem
from bfstream.store.records import App
from bfstream.streams.stream import Stream

router = APIRouter()


class QueryPayload(BaseModel):
    """The LLM request. Fields not named here go to the provider with the messages."""

    model_config = ConfigDict(extra="allow", strict=True)

    provider: str | None = Field(None, description="openai (the default), anthropic, gemini, or a configured service.")
    apiKey: str | None = Field(
        None,
        description="The provider's API key, used for this call only and never stored. Omitted: the key the"
        " app keeps for the service (bfstream apps credentials set), else the service's configured api_key.",
        json_schema_extra={"pattern": PROVIDER_KEY_PATTERN, "maxLength": PROVIDER_KEY_MAX},
    )
    stream: bool = Field(True, description="false: the whole answer comes back in this HTTP response.")
    model: str | None = Field(None, description="Required by every service but echo.")
    messages: Annotated[list[dict[str, Any]], Field(min_length=1)]
    providerArgs: dict[str, Any] | None = Field(
        None, description="Merged into the provider's own request after translation (its field names)."
    )
    tools: list[dict[str, Any]] | None = Field(
        None, description="OpenAI-format tools; names starting with ui_ are answered by the page (stream: true only)."
    )
    includeReasoning: bool | None = Field(None, description="Same as the top-level includeReasoning; never sent on.")


class LlmQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    apiKey: AppKey
    channels: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=list, description="Channels that receive the stream events. Required when streaming."
    )
    actionName: str | None = Field(
        None,
        description="Named action that receives the events and tool calls. Required when streaming.",
        json_schema_extra={"pattern": NOT_BLANK},
    )
    payload: QueryPayload
    toolTimeout: float | None = Field(None, description="Seconds a page has to answer a ui_* tool call (default 90).")
    coalesceMs: float | None = Field(None, ge=0, le=10_000, description="Merge deltas arriving within this many ms.")
    includeReasoning: bool = Field(False, description=INCLUDE_REASONING)
    metadata: dict[str, Any] | None = Field(None, description=METADATA)
    idempotencyKey: str | None = Field(None, description=IDEMPOTENCY, json_schema_extra=KEY_SCHEMA)


class SetupData(BaseModel):
    message: str = "Streaming setup complete"
    streamId: str


class StreamingSetup(BaseModel):
    success: bool = True
    data: SetupData


class QueryAnswer(BaseModel):
    success: bool = True
    actionName: str | None = None
    data: dict[str, Any] = Field(description="The answer as an OpenAI chat.completion: choices, usage, model, id.")


@router.post(
    "/llm/query",
    response_model=StreamingSetup | QueryAnswer,
    response_model_exclude_none=True,
    responses={200: {"description": "Streaming: the setup acknowledgement. Non-streaming: the whole answer."}},
)
async def llm_query(body: LlmQuery, request: Request, idempotency_key: KeyHeader = None) -> Any:
    """Query a model: stream its answer (and its ui_* tool calls) to the channels, or return it."""
    request.state.action_name = body.actionName  # every error answer echoes it (api/errors.py)
    app = await authenticate(request, body.apiKey)
    key = key_of(request, body.idempotencyKey)
    service = service_name(body.payload.provider)
    return await once(request, app, key, body, service, partial(_query, request, app, body, to_the_end=bool(key)))


async def _query(request: Request, app: App, body: LlmQuery, *, to_the_end: bool) -> dict[str, Any] | None:
    """The answer's JSON; None when a ``stream: false`` caller hung up."""
    payload = body.payload
    options = payload.model_dump(exclude_unset=True, exclude={*NOT_SENT, "providerArgs"})
    spec = await prepare(
        request, app,
        service=payload.provider,
        payload=options,
        api_key=payload.apiKey,
        streaming=payload.stream,
        channels=body.channels,
        action_name=body.actionName,
        coalesce_ms=body.coalesceMs,
        tool_timeout=body.toolTimeout,
        provider_args=payload.providerArgs,
        include_reasoning=body.includeReasoning or bool(payload.includeReasoning),
        metadata=body.metadata,
    )  # fmt: skip
    stream = Stream(request.app.state.stream_context, spec)
    if payload.stream:
        return StreamingSetup(data=SetupData(streamId=await stream.start())).model_dump()
    answer = await until_answered(request, stream, spec.chat.api_key, to_the_end=to_the_end)
    if answer is None:
        return None
    out: dict[str, Any] = {"success": True}
    if body.actionName is not None:
        out["actionName"] = body.actionName
    out["data"] = answer
    return out


class ToolResponse(BaseModel):
    """A page's answer to a ui_* tool call: ``result``, or its fields flat (as the reference's
    llmToolCallResponse action sends them)."""

    model_config = ConfigDict(extra="allow", strict=True)

    streamId: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    toolCallId: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    result: dict[str, Any] | None = Field(None, description='{"success": bool, "message": str, "data"?: any}')


class ToolResponseTaken(BaseModel):
    success: bool = True
    toolCallId: str
    accepted: bool = True


@router.post("/llm/tool-response", response_model=ToolResponseTaken)
async def tool_response(body: ToolResponse, request: Request) -> ToolResponseTaken:
    """Answer a frontend tool call. The stream id is the capability, as for stopping; the first
    answer wins, and one that finds no call waiting (answered already, timed out, unknown) gets 404."""
    result = body.result
    if result is None:
        result = {k: v for k, v in (body.model_extra or {}).items()}
    if (problem := tool_result_problem(result)) is not None:
        raise ValidationFailed("The request body is invalid", details=[{"field": "result", "message": problem}])
    await check_page_origin(request, body.streamId, "answer tool calls of")
    if not await request.app.state.tool_answers.from_holder(body.streamId, body.toolCallId, result):
        raise NotFound(
            "No answer is awaited for this tool call: it was answered already, timed out, or is not this stream's"
        )
    return ToolResponseTaken(toolCallId=body.toolCallId)
