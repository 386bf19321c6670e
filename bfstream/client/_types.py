"""What the client's methods return: small objects the client shapes itself (dataclasses), and the
server's own records passed through as they come (TypedDicts: plain dicts, every field the server
sends, including ones added after this client was written)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypedDict


@dataclass(frozen=True)
class Started:
    """A streaming ``create`` or ``query``: the stream runs; read it with ``events(stream_id)``."""

    stream_id: str


@dataclass(frozen=True)
class Answer:
    """A ``stream: false`` ``create`` or ``query``: the provider's answer, an OpenAI ``chat.completion``
    (``choices``, ``usage``, ``model``, ``id``), whatever the service."""

    completion: dict[str, Any]

    @property
    def text(self) -> str:
        """The first choice's text; "" when the model answered with tool calls only."""
        choices = self.completion.get("choices") or [{}]
        return (choices[0].get("message") or {}).get("content") or ""

    @property
    def usage(self) -> dict[str, Any] | None:
        return self.completion.get("usage")


@dataclass(frozen=True)
class Token:
    """A connection token for one user (``/message/token``): hand ``token`` to the page."""

    token: str
    expires_at: int  # Unix seconds


ChannelMode = Literal["ignore", "listen", "receive"]


class StreamEvent(TypedDict, total=False):
    """One event of a stream, as its channels carry it in ``options`` (README, "The contract"):
    ``threadInfo`` first, then ``delta``, ``reasoning``, ``sources``, ``function_call``,
    ``tool_call``, ``error``, and ``end`` last; or a ``snapshot`` standing for every event up to its
    ``seq`` (replace the text so far with its ``text``). Other fields by type: ``content``,
    ``text``, ``finish_reason``, ``usage``, ``sources``, ``error``..."""

    type: str
    streamId: str
    seq: int
    content: Any
    text: str
    finish_reason: str
    usage: dict[str, Any] | None


class StreamStatus(TypedDict, total=False):
    """A stream's record (``/stream/status``); while it runs, ``text`` is the text so far. ``text``
    and ``reasoning`` are None when the app keeps no text."""

    streamId: str
    service: str
    model: str
    channels: list[str]
    actionName: str
    status: Literal["running", "completed", "stopped", "failed", "interrupted"]
    createdAt: float
    endedAt: float | None
    finishReason: str | None
    usage: dict[str, Any] | None
    error: dict[str, Any] | None
    text: str | None
    tools: list[dict[str, Any]]
    functions: list[dict[str, Any]]
    reasoning: str | None
    sources: list[dict[str, Any]]
