"""A stream's events in the AI SDK's UI message stream encoding: the parts a page built on the AI
SDK (``useChat`` resuming a stream, ``readUIMessageStream``) reads, each one Server-Sent Event
``data:`` line, announced by the header ``x-vercel-ai-ui-message-stream: v1`` and closed by
``data: [DONE]``.

The answer is one text part: ``start`` (the message id is the stream id), ``text-start`` with its
first text, a ``text-delta`` per delta (a snapshot gives the text it adds), ``text-end``, ``finish``.
The model's reasoning (a request that set ``includeReasoning``) is a reasoning part before it,
``reasoning-start``, a ``reasoning-delta`` each, ``reasoning-end`` (one part per run of reasoning
events); each source is a ``source-url`` part. An ``error`` event becomes an ``error`` part.
``threadInfo``, ``function_call`` and ``tool_call`` have no part here: the AI SDK's tool parts
expect the tool's own output, which bfstream does not carry.
"""

from __future__ import annotations

from typing import Any

HEADER = (b"x-vercel-ai-ui-message-stream", b"v1")
DONE = "[DONE]"
TEXT_ID = "text"
REASONING_ID = "reasoning"

# bfstream's finish reasons (OpenAI's words) in the AI SDK's; ``stopped`` (POST /stream/stop) has none.
_FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool-calls",
    "content_filter": "content-filter",
    "error": "error",
}


class FoldedPast(Exception):
    """A snapshot standing for text this response did not send from its start: the client's own
    text so far is unknown here, so what the snapshot adds to it cannot be told."""


class UIMessageParts:
    """The parts of one response. ``from_start``: the response began at the stream's first event,
    so every piece of text before a snapshot went out in it."""

    def __init__(self, stream_id: str, from_start: bool) -> None:
        self._stream_id = stream_id
        self._from_start = from_start
        self._sent = 0  # characters of text sent so far
        self._thought = 0  # characters of reasoning sent so far
        self._texting = False  # the text part has started
        self._thinking: str | None = None  # the id of the open reasoning part
        self._runs = 0  # reasoning parts so far

    def opening(self) -> list[dict[str, Any]]:
        return [{"type": "start", "messageId": self._stream_id}]

    def of(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "delta":
            return self._text(str(event.get("content") or ""))
        if kind == "reasoning":
            return self._reasoning(str(event.get("content") or ""))
        if kind == "sources":
            return self._sources(event.get("sources") or [])
        if kind == "snapshot":
            if not self._from_start:
                raise FoldedPast
            reasoning = self._reasoning(str(event.get("reasoning") or "")[self._thought :])
            return reasoning + self._text(str(event.get("text") or "")[self._sent :])
        if kind == "error":
            error = event.get("error") or {}
            return [{"type": "error", "errorText": str(error.get("message") or "The stream failed")}]
        if kind == "end":
            reason = str(event.get("finish_reason"))
            metadata = {"finishReason": reason, "usage": event.get("usage")}
            finish = {"type": "finish", "finishReason": _FINISH_REASONS.get(reason, "other")}
            closing = [{"type": "text-end", "id": TEXT_ID}] if self._texting else []
            return [*self._end_reasoning(), *closing, {**finish, "messageMetadata": metadata}]
        return []

    def _text(self, text: str) -> list[dict[str, Any]]:
        if not text:
            return []
        self._sent += len(text)
        parts = self._end_reasoning()
        if not self._texting:
            self._texting = True
            parts.append({"type": "text-start", "id": TEXT_ID})
        return [*parts, {"type": "text-delta", "id": TEXT_ID, "delta": text}]

    def _reasoning(self, text: str) -> list[dict[str, Any]]:
        if not text:
            return []
        self._thought += len(text)
        parts = []
        if self._thinking is None:
            self._runs += 1
            self._thinking = REASONING_ID if self._runs == 1 else f"{REASONING_ID}-{self._runs}"
            parts.append({"type": "reasoning-start", "id": self._thinking})
        return [*parts, {"type": "reasoning-delta", "id": self._thinking, "delta": text}]

    def _end_reasoning(self) -> list[dict[str, Any]]:
        if self._thinking is None:
            return []
        ended, self._thinking = self._thinking, None
        return [{"type": "reasoning-end", "id": ended}]

    @staticmethod
    def _sources(sources: list[Any]) -> list[dict[str, Any]]:
        parts = []
        for source in sources:
            part = {"type": "source-url", "sourceId": source["url"], "url": source["url"]}
            if "title" in source:
                part["title"] = source["title"]
            parts.append(part)
        return parts
