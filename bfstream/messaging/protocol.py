"""The wire format, built here and nowhere else: JSON text frames, one object each, told apart by
``op``, and the stream events that the server's messages carry.

Server to client: ``hello``, ``joined``, ``left``, ``published``, ``forwarded``, ``answered``,
``pong``, ``message``, ``error``. Client to server: ``join``, ``leave``, ``publish``, ``toolResult``,
``ping``. A request may carry an ``id``; its reply echoes it. A stream's events (``threadInfo``,
``delta``, ``function_call``, ``tool_call``, ``error``, ``end``) travel as messages from the server.
``bfstream/static/protocol.json`` is the schema of all of it (served at ``/static/protocol.json``;
the tests check every frame they receive against it), and ``docs/messaging.md`` the prose.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from bfstream.messaging.broker import Publication
from bfstream.scrub import scrub

PRIVATE_PREFIX = "tab|"
MAX_CHANNEL_LENGTH = 200

# Close codes, the one table of them. A refused connection closes with 4000 + the HTTP status
# the same refusal would get over REST: 4400 (no ?app=), 4401 (bad or expired token),
# 4403 (token of another app), 4404 (unknown app), 4503 (the broker is unreachable, so no channel can be joined).
CLOSE_SLOW_CONSUMER = 4408  # the client read too slowly and its send queue filled up


def close_code(status: int) -> int:
    return 4000 + status


class Message(BaseModel):
    """A BetterForms message, what a channel carries: actions for the browser to run, plus data to
    merge into its page and app models. Back ends and browsers publish the same shape."""

    model_config = ConfigDict(extra="forbid", strict=True)

    actions: list[dict[str, Any]]
    model: dict[str, Any] | None = None
    app: dict[str, Any] | None = None


def dumps(obj: Any) -> str:
    """Compact JSON, UTF-8 as it is. orjson writes a stream event in 0.2 µs against json's 3.5, once
    per event; what it refuses (an integer past 64 bits, a lone surrogate) json writes instead."""
    try:
        return orjson.dumps(obj).decode()
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def channel_problem(name: Any) -> str | None:
    """Why ``name`` cannot be a channel name, or None when it can."""
    if not isinstance(name, str) or not name:
        return "channel must be a non-empty string"
    if len(name) > MAX_CHANNEL_LENGTH:
        return f"channel names are at most {MAX_CHANNEL_LENGTH} characters"
    if any(ord(c) < 32 or 127 <= ord(c) <= 159 for c in name):  # C0, DEL and C1
        return "channel names cannot contain control characters"
    return None


# Who published a message: the frame's "from", set by the server and never by the publisher, so
# a browser cannot pass its messages off as a stream's own events.
FROM_SERVER = '{"kind":"server"}'  # the events of a stream, sent by bfstream itself
FROM_API = '{"kind":"api"}'  # a back end, with the app key (POST /message/sendmessage)


def browser_origin(connection_id: str, user_id: str | None, email: str | None) -> dict[str, Any]:
    """A browser connection's publish, with its user when it connected with a token; channels and
    the app's webhook (listen/receive modes) are told the same."""
    user = {"id": user_id, "email": email} if user_id is not None else None
    return {"kind": "browser", "connectionId": connection_id, "user": user}


def from_browser(connection_id: str, user_id: str | None, email: str | None) -> str:
    return dumps(browser_origin(connection_id, user_id, email))


def publication_data(message_json: str, origin: str) -> str:
    """What a channel carries: ``{"from", "message"}``, encoded once by the publisher."""
    return '{"from":' + origin + ',"message":' + message_json + "}"


def message_frame(channel: str, publication: Publication) -> str:
    """Built by concatenation: the publication is encoded once per publish, not once per listener,
    and its ``from`` and ``message`` are spliced in after the position."""
    return (
        '{"op":"message","channel":' + dumps(channel)
        + ',"offset":' + str(publication.offset)
        + ',"epoch":' + dumps(publication.epoch)
        + "," + publication.data[1:]
    )  # fmt: skip


def log_frame(channel: str, offset: int, epoch: str, data: str) -> str:
    """A stream's event recovered from its log (``recovery.py``): at the position the client stands
    at, which it does not move, and marked so that no offset check drops it."""
    return (
        '{"op":"message","channel":' + dumps(channel)
        + ',"offset":' + str(offset)
        + ',"epoch":' + dumps(epoch)
        + ',"log":true,' + data[1:]
    )  # fmt: skip


def tool_result_problem(result: Any) -> str | None:
    """Why ``result`` cannot answer a tool call (``{"success": bool, "message": str, "data"?}``), or None."""
    if not isinstance(result, dict):
        return '"result" must be an object {"success": true|false, "message": "...", "data"?: ...}'
    if type(result.get("success")) is not bool:
        return '"result.success" must be true or false'
    if not isinstance(result.get("message"), str):
        return '"result.message" must be a string: what the model reads'
    return None


def hello_frame(connection_id: str, channels: list[str], user: dict[str, Any] | None) -> str:
    """The first frame of every connection: its id, the channels it is in, and its user, if any."""
    hello: dict[str, Any] = {"op": "hello", "connectionId": connection_id, "channels": channels}
    if user is not None:
        hello["user"] = user
    return dumps(hello)


def stream_event(action_name: str, event_type: str, stream_id: str, seq: int, **fields: Any) -> str:
    """One event of a stream, as its channels carry it: a namedAction message from the server."""
    event = {"type": event_type, "streamId": stream_id, "seq": seq, **fields}
    action = {"action": "namedAction", "name": action_name, "options": event}
    return publication_data(dumps({"actions": [action]}), FROM_SERVER)


def error_frame(message: str, code: int, request_id: Any = None, retry_after: float | None = None) -> str:
    """``retryAfter`` (whole seconds, rounded up) only on a rate limit's refusal, as in HTTP's header."""
    error: dict[str, Any] = {"message": scrub(message), "code": code}
    if retry_after is not None:
        error["retryAfter"] = max(1, math.ceil(retry_after))
    return dumps({"op": "error", "error": error, "id": request_id})


def reply_frame(op: str, request_id: Any = None, **fields: Any) -> str:
    """A reply always carries ``id`` (null when the request had none), so clients can match it blindly."""
    return dumps({"op": op, **fields, "id": request_id})


def encode_positions(positions: dict[str, tuple[int, str]]) -> str:
    """A connection's position in each channel, as one URL- and header-safe string: base64url of
    ``{"channel": [offset, epoch], ...}``. SSE event ids carry it; a client brings it back to resume."""
    raw = json.dumps({name: list(pos) for name, pos in positions.items()}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


def decode_positions(event_id: str | None) -> dict[str, tuple[int, str]]:
    """Positions from a ``Last-Event-ID`` (or a WebSocket ``since``); anything unreadable counts as none."""
    if not event_id:
        return {}
    try:
        raw = json.loads(base64.urlsafe_b64decode(event_id + "=" * (-len(event_id) % 4)))
    except (ValueError, binascii.Error, RecursionError):  # RecursionError: nested deep on purpose
        return {}
    if not isinstance(raw, dict):
        return {}
    return {
        name: (pos[0], pos[1])
        for name, pos in raw.items()
        if isinstance(pos, list) and len(pos) == 2 and type(pos[0]) is int and isinstance(pos[1], str)
    }
