"""One stream's life after the provider accepted it: relay every event to the channels, in order,
and always finish with exactly one ``end``.

Each event becomes a BetterForms message that runs the caller's named action::

    {"actions": [{"action": "namedAction", "name": <actionName>, "options": EVENT}]}

EVENT carries ``type``, ``streamId`` and ``seq`` (0, 1, 2, ... in publish order).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bfstream.errors import BfstreamError
from bfstream.messaging.hub import Hub, scoped
from bfstream.messaging.protocol import dumps
from bfstream.providers.events import Delta, Finished, ProviderEvent, ToolCalls

log = logging.getLogger("bfstream.streams")


@dataclass(frozen=True, slots=True)
class StreamTarget:
    stream_id: str
    app_id: str
    channels: list[str]
    action_name: str
    service: str
    model: str


def _user_message(arguments: str) -> str | None:
    """The contract lets a tool's arguments carry a line for the user while the tool runs."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return None
    value = parsed.get("userMessage") if isinstance(parsed, dict) else None
    return value if isinstance(value, str) else None


class _Publisher:
    def __init__(self, hub: Hub, target: StreamTarget) -> None:
        self._hub = hub
        self._target = target
        self._channels = [scoped(target.app_id, c) for c in dict.fromkeys(target.channels)]
        self._seq = 0

    async def emit(self, type_: str, **fields: Any) -> None:
        event = {"type": type_, "streamId": self._target.stream_id, "seq": self._seq, **fields}
        self._seq += 1
        action = {"action": "namedAction", "name": self._target.action_name, "options": event}
        message = dumps({"actions": [action]})
        for channel in self._channels:
            await self._hub.publish(channel, message)


async def relay(hub: Hub, target: StreamTarget, events: AsyncIterator[ProviderEvent]) -> None:
    """Drain ``events`` (whose ``Started`` was already consumed) into the channels."""
    out = _Publisher(hub, target)
    text: list[str] = []
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    try:
        await out.emit(
            "threadInfo",
            content={"streamId": target.stream_id, "service": target.service, "model": target.model},
        )
        async for event in events:
            if isinstance(event, Delta):
                text.append(event.text)
                await out.emit("delta", content=event.text)
            elif isinstance(event, ToolCalls):
                functions = [
                    {"id": c.id, "name": c.name, "arguments": c.arguments, "userMessage": _user_message(c.arguments)}
                    for c in event.calls
                ]
                await out.emit("function_call", content={"functions": functions})
            elif isinstance(event, Finished):
                finish_reason, usage = event.reason, event.usage
    except BfstreamError as exc:
        finish_reason = "error"
        log.warning("stream %s failed: %s", target.stream_id, exc.message)
        await out.emit("error", error={"message": exc.message, "code": exc.code, "details": exc.details})
    except asyncio.CancelledError:
        finish_reason = "error"
        await out.emit("error", error={"message": "The server is shutting down", "code": 503, "details": None})
        raise
    except Exception:
        finish_reason = "error"
        log.exception("stream %s failed unexpectedly", target.stream_id)
        await out.emit("error", error={"message": "Internal error while streaming", "code": 500, "details": None})
    finally:
        try:
            await events.aclose()  # closes the provider connection if it is still open
        except Exception:
            log.exception("closing the provider stream of %s failed", target.stream_id)
        await out.emit("end", finish_reason=finish_reason, usage=usage, text="".join(text))
