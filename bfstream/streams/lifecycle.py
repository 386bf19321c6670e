"""A stream's end told to its app's back end: one signed webhook delivery per stream, or one run of
its FileMaker events script, for the apps that subscribed to its kind (``bfstream apps update APP
--webhook-events``).

Whoever wrote the stream's final record sends it (``Announcer``), after the record is written and
without waiting for the receiver: the owner when the stream ended by itself, was stopped or was drained, the
instance that claimed it when its owner died (``orphans.py``). Writing the record is what makes
one of them the sender, so a stream gets one event, never one of each. Its delivery id
(``X-Bfstream-Delivery`` and ``deliveryId``) is the stream's id and the event's name: the same
across retries and whichever instance sends it, so a receiver handles each once by that id.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from bfstream.errors import StoreError, ValidationFailed
from bfstream.fleet.leases import RENEW_EVERY, Leases
from bfstream.store.records import App, StreamRecord
from bfstream.store.store import Store
from bfstream.webhooks import Attempt, Deliveries

if TYPE_CHECKING:
    from bfstream.filemaker.client import FileMaker

log = logging.getLogger("bfstream.streams")

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


class Announcer:
    """Sends the events of streams' ends, and keeps each in the store until it went through (or was
    given up), so that it is at least once even when its sender dies: the delivery's row names the
    instance sending it, and an instance that finds that one's lease lapsed takes the row and sends
    it again (``resend_orphans``, from the orphan sweep), as it ends the streams of a dead instance.
    Alone, an instance finds what its last run left at start-up. At shutdown, what is not through
    after the drain's few seconds stays for the next instance to send."""

    def __init__(self, store: Store, deliveries: Deliveries, instance_id: str, filemaker: FileMaker | None) -> None:
        self._store = store
        self._deliveries = deliveries
        self._instance_id = instance_id
        self._filemaker = filemaker

    async def announce(self, app: App | None, record: StreamRecord, text: str | None) -> None:
        """Send the event of ``record``'s end if its app subscribed to it, without waiting for it.

        It goes to the app's FileMaker Server when the app names an events script there (the script
        gets the body below as its parameter, retried as a webhook delivery is), else to its webhook
        URL. ``text`` is the whole answer, sent even when the app keeps no text in its records: the
        receiver is the app's own back end, the one the answer is for."""
        if app is None or self._receiver(app) is None:
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
        try:
            await self._store.add_delivery(delivery, app.id, event, body, self._instance_id)
        except StoreError as exc:  # sent all the same; only a crash before it is through loses it
            log.warning("lifecycle event %s is not kept in the database: %s", delivery, exc.message)
        self._send(app, event, body, delivery)

    async def resend_orphans(self, leases: Leases, trusted: Callable[[], bool] = lambda: True) -> int:
        """Take and send again the deliveries of every instance whose lease lapsed; how many.
        A lease read that took longer than a renewal round, or during which ``trusted()`` stopped
        holding, decides nothing (as for orphaned streams, ``orphans.end_orphans``)."""
        others = await self._store.delivery_owners() - {self._instance_id}
        if not others:
            return 0
        asked = time.monotonic()
        dead = others - await leases.alive(others)
        if not dead or time.monotonic() - asked > RENEW_EVERY or not trusted():
            return 0
        sent = 0
        for owner in dead:
            for delivery, app_id, event, body in await self._store.claim_deliveries(owner, self._instance_id):
                app = await self._store.app_by_id(app_id)
                if app is None or self._receiver(app) is None:
                    await self._store.settle_delivery(delivery)  # its app is gone, or listens no more
                    continue
                log.info("sending lifecycle event %s again: its instance %s is gone", delivery, owner)
                self._send(app, event, body, delivery)
                sent += 1
        return sent

    def _receiver(self, app: App) -> str | None:
        """The app's events script, when it has one and a FileMaker Server runs here; else its
        webhook URL; None when it has neither."""
        script = app.filemaker.events_script if app.filemaker is not None else None
        if script is not None and self._filemaker is not None:
            return script
        return app.webhook_url if app.webhook_url and app.webhook_secret else None

    def _send(self, app: App, event: str, body: dict[str, Any], delivery: str) -> None:
        settled = partial(self._settle, delivery)
        script = app.filemaker.events_script if app.filemaker is not None else None
        if script is not None and self._filemaker is not None:
            self._deliveries.send(app.id, _script_run(self._filemaker, app, script, body), delivery, settled)
        else:
            assert app.webhook_url is not None and app.webhook_secret is not None
            self._deliveries.webhook(app.id, app.webhook_url, app.webhook_secret, event, body, delivery, settled)

    async def _settle(self, delivery: str) -> None:
        try:
            await self._store.settle_delivery(delivery)
        except StoreError as exc:  # it may be sent once more, which its receiver tells by its id
            log.warning("lifecycle event %s went out but stays in the database: %s", delivery, exc.message)


def _script_run(filemaker: FileMaker, app: App, script: str, body: dict[str, Any]) -> Attempt:
    """One try at the events script; any 2xx with no script error counts as delivered."""

    async def attempt(_: str) -> None:
        await filemaker.run_script(app, script, body)

    return attempt
