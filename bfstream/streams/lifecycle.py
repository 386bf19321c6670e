"""A stream's end told to its app's back end: one signed webhook delivery per stream, or one run of
its FileMaker events script, for the apps that subscribed to its kind (``bfstream apps update APP
--webhook-events``).

Whoever wrote the stream's final record sends it, after the record is written and without waiting
for the receiver: the owner when the stream ended by itself, was stopped or was drained, the
instance that claimed it when its owner died (``orphans.py``). Writing the record is what makes
one of them the sender, so a stream gets one event, never one of each. Its delivery id
(``X-Bfstream-Delivery`` and ``deliveryId``) is the stream's id and the event's name: the same
across retries and whichever instance sends it, so a receiver handles each once by that id.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from bfstream.errors import ValidationFailed
from bfstream.store.records import App, StreamRecord
from bfstream.webhooks import Attempt, Deliveries

if TYPE_CHECKING:
    from bfstream.filemaker.client import FileMaker

EVENTS = ("stream.completed", "stream.failed", "stream.stopped", "stream.interrupted")
MAX_METADATA_BYTES = 4096  # a record id or a few keys to write the answer back; not a second payload


def event_of(record: StreamRecord) -> str:
    """``interrupted`` covers an owner that died and a drain (both leave the answer unfinished for
    a reason that is not the request's); any finish reason but an error or a stop is a completion."""
    if record.status == "interrupted":
        return "stream.interrupted"
    if record.status == "stopped":
        return "stream.stopped"
    if record.status == "failed" or record.finish_reason == "error":
        return "stream.failed"
    return "stream.completed"


def parse_events(value: str) -> list[str]:
    """``all``, ``none``, or names separated by commas; ``ValueError`` naming what is not one."""
    wanted = value.strip().lower()
    if wanted == "all":
        return list(EVENTS)
    if wanted in ("none", "off", ""):
        return []
    names = [name.strip() for name in wanted.split(",") if name.strip()]
    if unknown := [name for name in names if name not in EVENTS]:
        raise ValueError(f"unknown events {', '.join(unknown)}; use all, none or some of {', '.join(EVENTS)}")
    return names


def check_metadata(metadata: dict[str, Any] | None) -> None:
    """A 400 for metadata larger than ``MAX_METADATA_BYTES`` as compact JSON."""
    if metadata is None:
        return
    size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise ValidationFailed(
            "The request body is invalid",
            details=[{"field": "metadata", "message": f"at most {MAX_METADATA_BYTES} bytes as JSON, not {size}"}],
        )


def announce(
    deliveries: Deliveries | None,
    app: App | None,
    record: StreamRecord,
    text: str | None,
    filemaker: FileMaker | None = None,
) -> None:
    """Send the event of ``record``'s end if its app subscribed to it; returns at once.

    It goes to the app's FileMaker Server when the app names an events script there (the script
    gets the body below as its parameter, retried as a webhook delivery is), else to its webhook URL.
    ``text`` is the whole answer, sent even when the app keeps no text in its records: the receiver
    is the app's own back end, the one the answer is for."""
    if deliveries is None or app is None:
        return
    script = app.filemaker.events_script if app.filemaker is not None else None
    to_filemaker = script is not None and filemaker is not None
    if not to_filemaker and (not app.webhook_url or not app.webhook_secret):
        return
    event = event_of(record)
    if event not in app.webhook_events:
        return
    delivery = f"{record.id}.{event}"
    body: dict[str, Any] = {
        "type": event,
        "deliveryId": delivery,
        "streamId": record.id,
        "appId": record.app_id,
        "metadata": record.metadata,
        "text": text,
        "toolCalls": record.tools,
        "usage": record.usage,
        "finishReason": record.finish_reason,
        "error": record.error,
    }
    if record.reasoning is not None:
        body["reasoning"] = record.reasoning
    if to_filemaker:
        assert filemaker is not None and script is not None
        deliveries.send(app.id, _script_run(filemaker, app, script, body), delivery)
    else:
        assert app.webhook_url is not None and app.webhook_secret is not None
        deliveries.webhook(app.id, app.webhook_url, app.webhook_secret, event, body, delivery)


def _script_run(filemaker: FileMaker, app: App, script: str, body: dict[str, Any]) -> Attempt:
    """One try at the events script; any 2xx with no script error counts as delivered."""

    async def attempt(_: str) -> None:
        await filemaker.run_script(app, script, body)

    return attempt
