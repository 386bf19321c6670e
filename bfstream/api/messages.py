"""The back end's side of messaging (BetterForms' REST API): send messages, issue connection
tokens, add and remove users, list channels and users. All authenticate with the app key."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from bfstream.api.auth import authenticate
from bfstream.api.openapi import AppKey, ChannelName, UserChannelName
from bfstream.errors import ValidationFailed
from bfstream.fleet.ratelimits import enforce
from bfstream.messaging import tokens
from bfstream.messaging.broker import BROADCAST
from bfstream.messaging.hub import scoped
from bfstream.messaging.protocol import FROM_API, PRIVATE_PREFIX, Message, channel_problem, dumps, publication_data
from bfstream.messaging.tokens import User

router = APIRouter()


class SendMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    apiKey: AppKey
    domain: str | None = Field(None, description="Ignored: the Helper file's script passes it along.")
    channels: Annotated[list[ChannelName], Field(min_length=1)]
    message: Message


class MessageSent(BaseModel):
    message: Message
    channels: list[str]


@router.post("/message/sendmessage", status_code=201, response_model=MessageSent, response_model_exclude_none=True)
async def send_message(body: SendMessage, request: Request) -> MessageSent:
    """Publish ``message`` to every channel; answers with what was sent (the app key is not echoed)."""
    app = await authenticate(request, body.apiKey)
    state = request.app.state
    await enforce(state.fleet.rates, app.id, "messages", state.settings.limits.messages)
    problems = [
        {"field": f"channels.{i}", "message": why}
        for i, channel in enumerate(body.channels)
        if (why := channel_problem(channel)) is not None
    ]
    max_channels = state.settings.messaging.max_channels
    if len(body.channels) > max_channels:
        problems.append({"field": "channels", "message": f"at most {max_channels} channels"})
    if problems:
        raise ValidationFailed("The request body is invalid", details=problems)
    message_json = publication_data(dumps(body.message.model_dump(exclude_none=True)), FROM_API)
    hub = state.hub
    for channel in dict.fromkeys(body.channels):
        await hub.publish(scoped(app.id, channel), message_json)
    return MessageSent(message=body.message, channels=body.channels)


# --- Authenticated users: tokens and channel membership ---------------------------------------


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    apiKey: AppKey
    userId: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    email: str | None = None
    ttl: int | None = Field(None, gt=0, description="Seconds the token stays valid (default 3600).")

    @field_validator("ttl", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        """JSON has one kind of number: 3600.0 is the integer 3600, as the document's integer says."""
        return int(value) if isinstance(value, float) and value.is_integer() else value


class TokenIssued(BaseModel):
    token: str
    expiresAt: int = Field(description="Unix time, seconds.")


@router.post("/message/token", response_model=TokenIssued)
async def issue_token(body: TokenRequest, request: Request) -> TokenIssued:
    """A signed, expiring token that lets a browser connect as this user (the app key stays on the server)."""
    app = await authenticate(request, body.apiKey)
    state = request.app.state
    limits = state.settings.messaging
    ttl = body.ttl or limits.token_ttl
    if ttl > limits.max_token_ttl:
        raise ValidationFailed(
            "ttl is too long", details=[{"field": "ttl", "message": f"at most {limits.max_token_ttl} seconds"}]
        )
    token, expires_at = tokens.issue(state.signing_key, app.id, User(body.userId, body.email), ttl)
    return TokenIssued(token=token, expiresAt=expires_at)


class ChannelRef(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: UserChannelName
    mode: Literal["ignore", "listen", "receive"] = "ignore"


class UserChannels(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    channels: list[ChannelRef]


class ChangeUsers(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    apiKey: AppKey
    users: Annotated[list[UserChannels], Field(min_length=1)]


class UsersChanged(BaseModel):
    users: list[str]


def _check_user_channels(body: ChangeUsers) -> None:
    problems = [
        {"field": f"users.{i}.channels.{j}.name", "message": why}
        for i, user in enumerate(body.users)
        for j, channel in enumerate(user.channels)
        if (why := channel_problem(channel.name)) is not None
        or (why := "tab| channels are per connection" if channel.name.startswith(PRIVATE_PREFIX) else None)
    ]
    if problems:
        raise ValidationFailed("The request body is invalid", details=problems)


@router.post("/message/adduser", status_code=201, response_model=UsersChanged)
async def add_users(body: ChangeUsers, request: Request) -> UsersChanged:
    """Add users to channels (making those channels authenticated); open connections join at once,
    on whichever instance holds them."""
    app = await authenticate(request, body.apiKey)
    _check_user_channels(body)
    state = request.app.state
    added: dict[str, list[str]] = {}
    for user in body.users:
        await state.store.add_user_channels(app.id, user.id, [(c.name, c.mode) for c in user.channels])
        added.setdefault(user.id, []).extend(c.name for c in user.channels)
    await state.control.tell(BROADCAST, {"op": "users", "app": app.id, "added": added})
    return UsersChanged(users=[u.id for u in body.users])


@router.post("/message/removeuser", status_code=201, response_model=UsersChanged)
async def remove_users(body: ChangeUsers, request: Request) -> UsersChanged:
    """Remove users from channels; their open connections stop receiving those channels at once."""
    app = await authenticate(request, body.apiKey)
    _check_user_channels(body)
    state = request.app.state
    removed: dict[str, list[str]] = {}
    for user in body.users:
        names = [c.name for c in user.channels]
        await state.store.remove_user_channels(app.id, user.id, names)
        removed.setdefault(user.id, []).extend(names)
    await state.control.tell(BROADCAST, {"op": "users", "app": app.id, "removed": removed})
    return UsersChanged(users=[u.id for u in body.users])


# --- Listing ----------------------------------------------------------------------------------


class AppOnly(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    apiKey: AppKey


class ActiveChannels(BaseModel):
    authenticated: list[str]
    anonymous: list[str]


@router.post("/message/channels", status_code=201, response_model=ActiveChannels)
async def active_channels(body: AppOnly, request: Request) -> ActiveChannels:
    """Channels with at least one connection on any instance, split by kind (private tab channels left out)."""
    app = await authenticate(request, body.apiKey)
    state = request.app.state
    authenticated = await state.store.authenticated_channels(app.id)
    listing = await state.messaging.presence.list(app.id)
    active = sorted(name for name in listing if not name.startswith(PRIVATE_PREFIX))
    return ActiveChannels(
        authenticated=[n for n in active if n in authenticated], anonymous=[n for n in active if n not in authenticated]
    )


class UsersQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    apiKey: AppKey
    channel: str | None = None


@router.post("/message/users", status_code=201)
async def connected_users(body: UsersQuery, request: Request) -> dict[str, Any]:
    """Per channel: the users (``{id, email}``) of authenticated channels, the connection count of
    anonymous ones, and a signed-in connection's user under its ``tab|`` channel."""
    app = await authenticate(request, body.apiKey)
    state = request.app.state
    authenticated = await state.store.authenticated_channels(app.id)
    out: dict[str, Any] = {}
    for name, listeners in sorted((await state.messaging.presence.list(app.id)).items()):
        if body.channel is not None and name != body.channel:
            continue
        users = {u.id: {"id": u.id, "email": u.email} for u in listeners.values() if u is not None}
        if name.startswith(PRIVATE_PREFIX):
            if users:
                out[name] = next(iter(users.values()))
        elif name in authenticated:
            out[name] = list(users.values())
        else:
            out[name] = len(listeners)
    return out


class AllUsersQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    apiKey: AppKey
    includeUsers: bool = Field(False, description="List each data center's users ({id, email}), not only counts.")
    dedupeUsers: bool = Field(True, description="With includeUsers: each user once per data center, by id.")


@router.post("/message/allusers", status_code=201)
async def all_users(body: AllUsersQuery, request: Request) -> dict[str, Any]:
    """Connections of the app on every instance, per data center, plus ``_total``.

    Every connection is alone in its ``tab|`` channel, so those entries count connections once
    whatever else they joined. Presence does not record an instance's data center, so the whole
    fleet is reported under this instance's ``datacenter`` setting."""
    app = await authenticate(request, body.apiKey)
    state = request.app.state
    listing = await state.messaging.presence.list(app.id)
    users = [user for name, entries in listing.items() if name.startswith(PRIVATE_PREFIX) for user in entries.values()]
    signed_in = [{"id": u.id, "email": u.email} for u in users if u is not None]
    anonymous = len(users) - len(signed_in)
    datacenter: dict[str, Any] = {"authenticated": len(signed_in), "anonymous": anonymous}
    if body.includeUsers:
        if body.dedupeUsers:
            signed_in = list({u["id"]: u for u in signed_in}.values())
        signed_in.sort(key=lambda u: u["id"])
        datacenter = {"authenticated": signed_in, "authenticatedCount": len(signed_in), "anonymous": anonymous}
    total = {"authenticated": len(signed_in), "anonymous": anonymous}
    return {state.settings.datacenter: datacenter, "_total": total}
