"""What the store holds, as plain values: an app and a stream's record."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class FileMakerTarget:
    """A FileMaker Server an app's backend tools and lifecycle events run on, as scripts, through
    the Data API (``bfstream/filemaker``). The account's password is kept sealed apart from it."""

    host: str  # https://fms.example.com: scheme and host (and port), no path
    database: str
    layout: str  # the layout scripts run in the context of
    account: str
    events_script: str | None = None  # the script lifecycle events run; None: events go to the webhook URL

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "database": self.database,
            "layout": self.layout,
            "account": self.account,
            "eventsScript": self.events_script,
        }


@dataclass(frozen=True, slots=True)
class App:
    id: str
    name: str
    created_at: float
    browser_publish: bool = False  # may browsers publish to the channels they are in (off unless asked for)
    retain_text: bool = True  # keep the answer's text in stream records
    # Page origins allowed to connect and stop streams from a browser; None: any.
    origins: tuple[str, ...] | None = None
    # Where backend tool calls and listen/receive publishes go, signed with the secret; None: nowhere.
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    # Do backend tools' arguments go to the channels in function_call events? ui_* tools' always do.
    tool_arguments_public: bool = False
    # The stream lifecycle events (``streams/lifecycle.py``) its webhook gets; empty: none.
    webhook_events: tuple[str, ...] = ()
    # Where backend tools run, instead of the webhook URL, when set; and the lifecycle events too when
    # it names an events script. Browser publishes still go to the webhook URL.
    filemaker: FileMakerTarget | None = None

    def allows_origin(self, origin: str | None) -> bool:
        """No Origin header is a same-origin page or not a browser: nothing to check against."""
        if self.origins is None or origin is None or "*" in self.origins:
            return True
        return origin.lower().rstrip("/") in self.origins


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    """A request that holds an idempotency key: its fingerprint, the instance answering it (None
    once answered) and its answer, replayed to whoever sends the key again."""

    fingerprint: str
    owner: str | None
    answer: Any


@dataclass(slots=True)
class StreamRecord:
    """What happened to one stream. The prompt and the provider key are never part of it.

    ``owner`` is the instance running it: another instance sends it stop and status requests, and
    ends the stream for it if its lease lapses. ``seq`` is the next event number as last saved, so
    whoever ends an orphaned stream continues its numbering."""

    id: str
    app_id: str
    service: str
    model: str
    channels: list[str]
    action_name: str
    status: str = "running"  # running | completed | stopped | failed | interrupted
    created_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    text: str | None = None
    owner: str | None = None
    seq: int = 0
    # The tool calls made: {toolCallId, name, kind, round, durationMs, outcome[, arguments]}.
    tools: list[dict[str, Any]] = field(default_factory=list)
    # What the model's function_call events announced ({id, name, arguments, userMessage}), in order.
    functions: list[dict[str, Any]] = field(default_factory=list)
    # The whole of its reasoning events (None when the request did not ask for them or the app keeps no
    # text), and the sources the answer cited ({url, title?, snippet?}), in the order they came.
    reasoning: str | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)
    # The request's ``metadata``, given back in its lifecycle event; never sent to the channels.
    metadata: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "streamId": self.id,
            "service": self.service,
            "model": self.model,
            "channels": self.channels,
            "actionName": self.action_name,
            "status": self.status,
            "createdAt": self.created_at,
            "endedAt": self.ended_at,
            "finishReason": self.finish_reason,
            "usage": self.usage,
            "error": self.error,
            "text": self.text,
            "tools": self.tools,
            "functions": self.functions,
            "reasoning": self.reasoning,
            "sources": self.sources,
        }
