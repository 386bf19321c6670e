"""Every call of the API, built and answered without I/O: the sync and async clients only carry a
``Call`` to the server and hand its answer back to it, so each method's rules live here once.

The app key goes in each body as ``apiKey``, where the server reads it (``api/auth.py``); it is
never put in a header, a URL or an error message."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Required, TypedDict, TypeVar
from urllib.parse import quote

from bfstream.client._errors import BfstreamAPIError, api_error
from bfstream.client._types import Answer, ChannelMode, Started, StreamStatus, Token

T = TypeVar("T")

Channels = str | Iterable[str]  # one channel's name, or several


class _Common(TypedDict, total=False):
    payload: Required[dict[str, Any]]  # the provider request, OpenAI's way: model, messages...
    channels: Channels
    action_name: str
    stream: bool  # payload.stream; default true
    tools: list[dict[str, Any]]  # payload.tools
    include_reasoning: bool
    metadata: dict[str, Any]
    coalesce_ms: float
    tool_timeout: float
    idempotency_key: str  # sent as the Idempotency-Key header


class CreateFields(_Common, total=False):
    """``POST /stream/create``'s body, snake_case (README, "The contract in short")."""

    service: str


class QueryFields(_Common, total=False):
    """``POST /llm/query``'s body, snake_case; ``provider`` and ``provider_args`` go in the payload."""

    provider: str
    provider_args: dict[str, Any]


# keyword -> (where it goes: "body" or "payload", the contract's name)
_PLACES: dict[str, tuple[str, str]] = {
    "channels": ("body", "channels"),
    "action_name": ("body", "actionName"),
    "service": ("body", "service"),
    "include_reasoning": ("body", "includeReasoning"),
    "metadata": ("body", "metadata"),
    "coalesce_ms": ("body", "coalesceMs"),
    "tool_timeout": ("body", "toolTimeout"),
    "stream": ("payload", "stream"),
    "tools": ("payload", "tools"),
    "provider": ("payload", "provider"),
    "provider_args": ("payload", "providerArgs"),
}
_CREATE = frozenset(CreateFields.__annotations__) | {"payload", "idempotency_key"}
_QUERY = frozenset(QueryFields.__annotations__) | {"payload", "idempotency_key"}


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how its 2xx answer becomes the method's result."""

    method: str
    path: str
    body: dict[str, Any] | None
    read: Callable[[Any], T]
    headers: dict[str, str] = field(default_factory=dict)

    def answer(self, status: int, headers: Mapping[str, str], content: bytes) -> T:
        """The result, or ``BfstreamAPIError`` for any status outside 2xx."""
        if not 200 <= status < 300:
            raise api_error(status, headers, content)
        try:
            return self.read(json.loads(content))
        except (ValueError, KeyError, TypeError, AttributeError):
            text = content[:200].decode("utf-8", "replace")
            raise BfstreamAPIError(status, f"Not an answer of bfstream: {text!r}", type="invalid_response") from None


def channel_list(channels: Channels) -> list[str]:
    """A single name is one channel, not a list of its letters."""
    return [channels] if isinstance(channels, str) else list(channels)


def _stream_body(
    api_key: str, fields: Mapping[str, Any], allowed: frozenset[str], path: str
) -> tuple[dict[str, Any], dict[str, str]]:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise TypeError(f"{path} takes no {', '.join(unknown)}")
    if "payload" not in fields:
        raise TypeError(f"{path} needs payload=")
    body: dict[str, Any] = {"apiKey": api_key}
    payload = dict(fields["payload"])
    for name, value in fields.items():
        if name in _PLACES and value is not None:
            place, wire = _PLACES[name]
            (body if place == "body" else payload)[wire] = channel_list(value) if name == "channels" else value
    body["payload"] = payload
    key = fields.get("idempotency_key")
    return body, {"Idempotency-Key": key} if key is not None else {}


def _created(answer: dict[str, Any]) -> Started | Answer:
    return Started(answer["streamId"]) if "streamId" in answer else Answer(answer)


def _queried(answer: dict[str, Any]) -> Started | Answer:
    data = answer["data"]
    return Started(data["streamId"]) if "streamId" in data and "choices" not in data else Answer(data)


def create(api_key: str, fields: Mapping[str, Any]) -> Call[Started | Answer]:
    body, headers = _stream_body(api_key, fields, _CREATE, "create")
    return Call("POST", "/stream/create", body, _created, headers)


def query(api_key: str, fields: Mapping[str, Any]) -> Call[Started | Answer]:
    body, headers = _stream_body(api_key, fields, _QUERY, "query")
    return Call("POST", "/llm/query", body, _queried, headers)


def stop(stream_id: str) -> Call[bool]:
    """True when the stream was running and is now stopped; False when it was not running (ended
    already, or unknown). The id is the capability: no app key is sent."""
    return Call("POST", "/stream/stop", {"streamId": stream_id}, lambda a: a["status"] == "stopped")


def status(api_key: str, stream_id: str) -> Call[StreamStatus]:
    return Call("POST", "/stream/status", {"apiKey": api_key, "streamId": stream_id}, _record)


def _record(answer: Any) -> StreamStatus:
    if not isinstance(answer, dict) or "status" not in answer:
        raise ValueError("not a stream record")
    return answer  # type: ignore[return-value]


def send_message(api_key: str, channels: Channels, message: Mapping[str, Any]) -> Call[None]:
    body = {"apiKey": api_key, "channels": channel_list(channels), "message": dict(message)}
    return Call("POST", "/message/sendmessage", body, lambda _: None)


def token(api_key: str, user_id: str, email: str | None, ttl: int | None) -> Call[Token]:
    body: dict[str, Any] = {"apiKey": api_key, "userId": user_id}
    if email is not None:
        body["email"] = email
    if ttl is not None:
        body["ttl"] = ttl
    return Call("POST", "/message/token", body, lambda a: Token(a["token"], a["expiresAt"]))


def users(api_key: str, path: str, user_id: str, channels: Channels, mode: ChannelMode | None) -> Call[None]:
    """``/message/adduser`` (with ``mode``) and ``/message/removeuser``: one user, its channels."""
    refs = [{"name": name} if mode is None else {"name": name, "mode": mode} for name in channel_list(channels)]
    body = {"apiKey": api_key, "users": [{"id": user_id, "channels": refs}]}
    return Call("POST", path, body, lambda _: None)


def events_path(stream_id: str) -> str:
    return f"/stream/{quote(stream_id, safe='')}/events"
