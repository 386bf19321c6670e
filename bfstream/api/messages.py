"""``POST /message/sendmessage``: a back end publishes one BetterForms message to channels."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from bfstream.api.auth import authenticate
from bfstream.errors import ValidationFailed
from bfstream.messaging.hub import scoped
from bfstream.messaging.protocol import channel_problem, dumps

router = APIRouter()


class Message(BaseModel):
    """What the browser runs: actions, plus data merged into its page and app models."""

    model_config = ConfigDict(extra="forbid")

    actions: list[dict[str, Any]]
    model: dict[str, Any] | None = None
    app: dict[str, Any] | None = None


class SendMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    apiKey: str
    channels: Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1)]
    message: Message


class MessageSent(BaseModel):
    message: Message
    channels: list[str]


@router.post("/message/sendmessage", status_code=201, response_model=MessageSent, response_model_exclude_none=True)
async def send_message(body: SendMessage, request: Request) -> MessageSent:
    """Publish ``message`` to every channel; answers with what was sent (the app key is not echoed)."""
    app = authenticate(request, body.apiKey)
    problems = [
        {"field": f"channels.{i}", "message": why}
        for i, channel in enumerate(body.channels)
        if (why := channel_problem(channel)) is not None
    ]
    if problems:
        raise ValidationFailed("The request body is invalid", details=problems)
    message_json = dumps(body.message.model_dump(exclude_none=True))
    hub = request.app.state.hub
    for channel in dict.fromkeys(body.channels):
        await hub.publish(scoped(app.id, channel), message_json)
    return MessageSent(message=body.message, channels=body.channels)
