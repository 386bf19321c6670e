"""A stream's events read back from its log, and folded into one ``snapshot`` event.

A snapshot ``{"type": "snapshot", "streamId", "seq", "text", "status", "service", "model",
"functions"?, "reasoning"?, "sources"?}`` stands for every event of its stream up to and including
``seq``: ``text`` is the answer so far (every delta, across tool rounds), ``service`` and ``model``
come from ``threadInfo``, ``functions`` lists what ``function_call`` events announced, ``reasoning``
is the text of its ``reasoning`` events and ``sources`` every source its ``sources`` events gave. A
page that missed thousands of deltas is handed one snapshot and the events after it instead.
``error`` and ``end`` are never folded: a page acts on them, so they always travel as themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from bfstream.messaging.protocol import stream_event
from bfstream.store.records import StreamRecord

TERMINAL = frozenset({"error", "end"})


def event_of(data: str) -> dict[str, Any] | None:
    """The stream event a publication carries (the options of its namedAction), or None when it is
    not one of bfstream's own stream events (a back end's or a browser's message)."""
    try:
        published = orjson.loads(data)
        if published["from"]["kind"] != "server":
            return None
        event = published["message"]["actions"][0]["options"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return None
    if not isinstance(event, dict) or not isinstance(event.get("streamId"), str) or type(event.get("seq")) is not int:
        return None
    return event


def action_of(data: str) -> str:
    """The named action a stream's publication runs (its events all run the same one)."""
    return str(orjson.loads(data)["message"]["actions"][0]["name"])


def fold(events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One snapshot standing for ``events`` (a prefix of one stream's, in seq order, none terminal)."""
    stream_id, seq, service, model = None, -1, None, None
    pieces: list[str] = []
    functions: list[Any] = []
    thoughts: list[str] | None = None  # None: no reasoning event (the request did not ask for any)
    sources: list[Any] = []
    for event in events:
        kind = event.get("type")
        stream_id, seq = event.get("streamId"), event.get("seq", seq)
        if kind == "delta" and isinstance(event.get("content"), str):
            pieces.append(event["content"])
        elif kind == "snapshot":
            pieces = [str(event.get("text") or "")]
            functions = list(event.get("functions") or [])
            service, model = event.get("service"), event.get("model")
            thoughts = [event["reasoning"]] if isinstance(event.get("reasoning"), str) else None
            sources = list(event.get("sources") or [])
        elif kind == "threadInfo" and isinstance(event.get("content"), dict):
            service, model = event["content"].get("service"), event["content"].get("model")
        elif kind == "function_call" and isinstance(event.get("content"), dict):
            functions += event["content"].get("functions") or []
        elif kind == "reasoning":
            thoughts = thoughts if thoughts is not None else []
            thoughts.append(str(event.get("content") or ""))
        elif kind == "sources":
            sources += event.get("sources") or []
    snapshot: dict[str, Any] = {
        "type": "snapshot",
        "streamId": stream_id,
        "seq": seq,
        "text": "".join(pieces),
        "status": "running",
        "service": service,
        "model": model,
    }
    if functions:
        snapshot["functions"] = functions
    if thoughts is not None:
        snapshot["reasoning"] = "".join(thoughts)
    if sources:
        snapshot["sources"] = sources
    return snapshot


def event_data(action_name: str, event: dict[str, Any]) -> str:
    """A stream event (a snapshot, or one told from a record) as its channels and its log carry it: a
    namedAction message from the server."""
    fields = {k: v for k, v in event.items() if k not in ("type", "streamId", "seq")}
    return stream_event(action_name, event["type"], event["streamId"], event["seq"], **fields)


def ending_of(record: StreamRecord) -> list[dict[str, Any]]:
    """An ended stream told from its record alone: one snapshot of its text, its ``error`` if it
    failed, then its ``end``, at the seqs they had (the record keeps the seq after the end)."""
    end_seq = max(record.seq - 1, 0)
    closing: list[dict[str, Any]] = []
    if record.error is not None:
        closing.append({"type": "error", "error": record.error})
    end = {"finish_reason": record.finish_reason or "error", "usage": record.usage, "text": record.text}
    told: dict[str, Any] = {"reasoning": record.reasoning} if record.reasoning is not None else {}
    if record.sources:
        told["sources"] = record.sources
    closing.append({"type": "end", **end, **told})
    first = end_seq - len(closing) + 1
    snapshot: dict[str, Any] = {
        "type": "snapshot",
        "text": record.text or "",
        "status": "running",
        "service": record.service,
        "model": record.model,
    }
    if record.functions:
        snapshot["functions"] = record.functions
    snapshot.update(told)
    events = [snapshot, *closing] if first > 0 else closing
    seq = max(end_seq - len(events) + 1, 0)
    return [{"type": e["type"], "streamId": record.id, "seq": seq + i, **e} for i, e in enumerate(events)]
