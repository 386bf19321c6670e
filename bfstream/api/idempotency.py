"""Idempotent creates: ``/stream/create`` and ``/llm/query`` with an ``Idempotency-Key`` header (or
``idempotencyKey`` in the body) answer a retry with the first request's answer instead of calling the
provider again.

FileMaker's Insert from URL, cron jobs and queue workers retry on a time-out, and each retry would
otherwise bill again and stream a second answer into the page. What a key means, as the IETF
draft ``draft-ietf-httpapi-idempotency-key-header`` and Stripe have it:

- The key is the app's, for 24 hours from its first use, in the database every instance shares.
- The same key with the same request answers what the first answered, with ``Idempotent-Replayed:
  true``: the same ``streamId``, or the same ``stream: false`` result. A request still being
  answered is waited for, on whichever instance it runs, for as long as a stream may last
  (``streams.max_duration``); only then is it a 409. A request whose instance died before it
  answered is taken over and run again.
- The same key with a different request (another endpoint, other fields) is a 422.
- Only answers are kept: a request that failed (a refusal, a provider error) frees its key, so a
  retry tries again; a failure is rarely billed, and a retry is how it gets fixed.
- A ``stream: false`` request with a key finishes even when its caller hangs up, so that the retry
  the caller is about to send finds the answer instead of paying for a second one.

The fingerprint is a SHA-256 of the endpoint and the parsed body without its keys (the app key may
be rotated between a request and its retry; the provider key is not a property of the question).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from bfstream.errors import Conflict, IdempotencyKeyReused, ValidationFailed
from bfstream.store.records import App

HEADER = "Idempotency-Key"
MAX_KEY = 255
TTL = 24 * 3600.0
KEY_RULE = f"1 to {MAX_KEY} printable ASCII characters"
DESCRIPTION = (
    "A retry with the same key (a UUID, say) and request within 24 h answers the first request's answer"
    " (Idempotent-Replayed: true) and calls no provider; a request still running is waited for; the same key"
    " with another request is a 422. Same as the Idempotency-Key header, for clients that cannot set headers."
)
KEY_PATTERN = r"^[!-~](?:[ -~]*[!-~])?$"  # printable ASCII, no space at either end
KEY_SCHEMA = {"pattern": KEY_PATTERN, "maxLength": MAX_KEY}  # checked by ``key_of``, for the one error shape
KeyHeader = Annotated[str | None, Header(alias=HEADER, description=DESCRIPTION, json_schema_extra=KEY_SCHEMA)]
_PRINTABLE = re.compile(KEY_PATTERN)
_SWEEP_EVERY = 3600.0  # seconds between deletions of every expired key, per instance
_POLL_FIRST, _POLL_MOST = 0.05, 1.0  # seconds between looks at a key held by a running request

Answer = dict[str, Any] | None  # the JSON answered; None: the caller hung up, nothing to answer


def key_of(request: Request, in_body: str | None) -> str | None:
    """The request's key, from its header or its body; a 400 for one that is malformed, or two that
    differ (two headers included)."""
    headers = request.headers.getlist(HEADER)
    in_header = headers[-1] if headers else None
    problems = []
    if len(set(headers)) > 1:
        problems.append({"field": "header Idempotency-Key", "message": "sent more than once, with different keys"})
    for field, value in (("header Idempotency-Key", in_header), ("idempotencyKey", in_body)):
        if value is not None and not (len(value) <= MAX_KEY and _PRINTABLE.fullmatch(value)):
            problems.append({"field": field, "message": f"an idempotency key is {KEY_RULE}"})
    if not problems and in_header is not None and in_body is not None and in_header != in_body:
        problems.append({"field": "idempotencyKey", "message": "differs from the Idempotency-Key header"})
    if problems:
        raise ValidationFailed("The request body is invalid", details=problems)
    return in_header if in_header is not None else in_body


def fingerprint(request: Request, body: BaseModel, service: str) -> str:
    """What makes two requests the same one: the endpoint, the service as it is resolved (named
    in any case, by ``service`` or ``payload.provider``, or left to the default), and every other
    field but the keys, defaults filled in (a field sent with its default value is one left out)."""
    fields = body.model_dump(
        mode="json",
        exclude={"apiKey": True, "idempotencyKey": True, "service": True, "payload": {"apiKey", "provider"}},
    )
    canonical = json.dumps([request.url.path, service, fields], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


async def once(
    request: Request, app: App, key: str | None, body: BaseModel, service: str, run: Callable[[], Awaitable[Answer]]
) -> Response:
    """``run()``'s answer, or without running it, the answer of the first request with ``key``;
    ``service`` is the request's, named as ``streams.service_name`` reads it."""
    if key is None:
        return _sent(await run())
    state = request.app.state
    store, me = state.store, state.fleet.instance_id
    now = time.time()
    if now - getattr(state, "idempotency_swept", 0.0) > _SWEEP_EVERY:
        state.idempotency_swept = now
        await store.forget_idempotency(now - TTL)
    mine = fingerprint(request, body, service)
    deadline = time.monotonic() + state.settings.streams.max_duration
    pause = _POLL_FIRST
    while True:
        held = await store.claim_idempotency(app.id, key, mine, me, time.time() - TTL)
        if held is None:
            break
        if held.fingerprint != mine:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was used with a different request in the last 24 hours: use a new key",
                details=[{"field": "idempotencyKey", "message": "already used with another request"}],
            )
        if held.answer is not None:
            return JSONResponse(held.answer, headers={"Idempotent-Replayed": "true"})
        if held.owner != me and held.owner not in await state.fleet.leases.alive({held.owner or ""}):
            if await store.take_over_idempotency(app.id, key, held.owner, me):
                break
            continue
        if time.monotonic() > deadline:
            raise Conflict("A request with this Idempotency-Key is still being answered", code="idempotency_key_in_use")
        if await request.is_disconnected():
            return Response(status_code=499)
        await asyncio.sleep(pause)  # the holder may run on another instance: look again, less and less often
        pause = min(pause * 2, _POLL_MOST)
    try:
        answer = await run()
    except BaseException:
        await asyncio.shield(store.release_idempotency(app.id, key, me))
        raise
    if answer is None:
        await store.release_idempotency(app.id, key, me)
    else:
        await store.answer_idempotency(app.id, key, me, answer)
    return _sent(answer)


def _sent(answer: Answer) -> Response:
    return JSONResponse(answer) if answer is not None else Response(status_code=499)  # 499: nobody listens
