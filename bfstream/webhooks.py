"""An app's webhook: signed POSTs to its back end, for backend tool calls (answered in the reply)
and for browser publishes into ``listen``/``receive`` channels (delivered in the background).

Every request carries, as Stripe and GitHub do it::

    X-Bfstream-Timestamp: 1764590000                  (Unix seconds when it was signed)
    X-Bfstream-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>" with the app's secret>
    X-Bfstream-Event: tool_call | message | stream.completed | stream.failed | stream.stopped | stream.interrupted
    X-Bfstream-Delivery: <id, the same on every retry of one delivery>

A receiver recomputes the HMAC over the raw body, compares in constant time, and refuses a
timestamp more than a few minutes old, so a captured request cannot be replayed later
(``docs/tools.md`` has the check in Python and JavaScript).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bfstream.errors import ValidationFailed, WebhookError
from bfstream.providers.http import ProviderClient
from bfstream.scrub import scrub
from bfstream.text import provider_json

log = logging.getLogger("bfstream.webhooks")

MAX_ANSWER_BYTES = 1024 * 1024  # a tool's answer goes back to the model: a megabyte is plenty
_MAX_PENDING_PER_APP = 1000  # deliveries one app may have waiting; past it its oldest are dropped
_CONCURRENT = 64  # deliveries in flight per instance, all apps together


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``X-Bfstream-Signature`` value."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify(secret: str, timestamp: str, body: bytes, signed: str, tolerance: float = 300) -> bool:
    """What a receiver does; here for the tests and as the reference for ``docs/tools.md``: the
    signature over the timestamp header exactly as sent, compared as bytes in constant time."""
    if not (timestamp.isascii() and timestamp.isdigit()) or abs(time.time() - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body).encode(), signed.encode("utf-8", "replace"))


def _private(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_private or address.is_loopback or address.is_link_local or address.is_reserved
        or address.is_multicast or address.is_unspecified
    )  # fmt: skip


async def _addresses(host: str, port: int | None) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address] | None:
    """What ``host`` resolves to now; None when it does not."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port or 443)
    except (OSError, UnicodeError):
        return None
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in found]


async def only_private(url: str) -> bool:
    """Whether ``url``'s host resolves, now, to loopback, private or link-local addresses only: the
    one case where a password may travel over plain ``http://`` (a server on this machine or network)."""
    parts = urlsplit(url.strip())
    addresses = await _addresses(parts.hostname, None) if parts.hostname else None
    return bool(addresses) and all(_private(a) for a in addresses)


async def url_problem(url: str, allow_private: bool, switch: str = "tools.allow_private_webhooks") -> str | None:
    """Why bfstream may not call ``url``, or None: it must be http(s) with a host and a valid port,
    carry no credentials, and, unless ``allow_private`` (the setting named ``switch``), reach no
    loopback, private, link-local or otherwise reserved address, whatever its name resolves to now.
    Webhooks and fetched images (``providers/images.py``) share this one rule."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        return "it must be an http:// or https:// URL"
    if not parts.hostname:
        return "it has no host"
    if parts.username or parts.password:
        return "credentials in the URL would end up in logs"
    try:
        port = parts.port
    except ValueError:
        return "its port is not a number from 0 to 65535"
    if allow_private:
        return None
    addresses = await _addresses(parts.hostname, port)
    if addresses is None:
        return f"its host {parts.hostname!r} does not resolve"
    if any(_private(a) for a in addresses):
        return f"it points at a loopback, private or link-local address (set {switch} to allow it)"
    return None


async def check_url(url: str, allow_private: bool) -> str:
    """The URL as it will be called, or ``ValidationFailed`` saying why not. Checked when it is set,
    so a typo or an address inside the network fails at configuration, not at the first tool call."""
    if (why := await url_problem(url, allow_private)) is not None:
        raise ValidationFailed(f"The webhook URL cannot be used: {why}", details=[{"field": "webhook", "message": why}])
    return urlsplit(url.strip()).geturl()


async def post(
    http: ProviderClient,
    url: str,
    secret: str,
    event: str,
    payload: Any,
    seconds: float,
    *,
    allow_private: bool,
    delivery: str = "",
    answer: bool = True,
) -> Any:
    """One signed POST; the receiver's JSON answer (None for an empty one). Raises ``WebhookError``
    for a refusal, a time-out, an unreachable host or, when an ``answer`` is wanted, one that is not
    JSON.

    The address is checked again before each call, not only when the URL was set: a name that
    resolved to a public address then may resolve to an internal one now (DNS rebinding). A name
    that changes between this check and the connection's own lookup still gets through; the setting that
    allows private addresses is the one place to trust a network."""
    try:
        await check_url(url, allow_private)
    except ValidationFailed as exc:
        raise WebhookError(exc.message) from None
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    now = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": "bfstream-webhook",
        "X-Bfstream-Timestamp": str(now),
        "X-Bfstream-Signature": signature(secret, now, body),
        "X-Bfstream-Event": event,
        "X-Bfstream-Delivery": delivery or secrets.token_hex(12),
    }
    try:
        posting = http.post(url, data=body, headers=headers, allow_redirects=False)
        async with asyncio.timeout(seconds), posting as response:
            status = response.status
            raw = b""
            async for piece in response.content.iter_any():
                raw += piece
                if len(raw) > MAX_ANSWER_BYTES:
                    raise WebhookError(f"The webhook's answer is larger than {MAX_ANSWER_BYTES} bytes")
    except TimeoutError:
        raise WebhookError(f"The webhook did not answer within {seconds:g} s", code=504) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise WebhookError("The webhook could not be reached", details=scrub(str(exc)) or type(exc).__name__) from None
    if not 200 <= status < 300:
        detail = scrub(raw[:500].decode("utf-8", "replace"))
        raise WebhookError(f"The webhook answered HTTP {status}", code=status, details=detail)
    if not answer or not raw.strip():
        return None
    try:
        return provider_json(raw)
    except ValueError:
        detail = scrub(raw[:200].decode("utf-8", "replace"))
        raise WebhookError("The webhook's answer is not JSON", details=detail) from None


Attempt = Callable[[str], Awaitable[None]]
Settled = Callable[[], Awaitable[None]]
"""One try at a delivery, given its id: returns once the receiver took it, raises ``WebhookError``
(or a subclass, such as ``FileMakerError``) when it did not. Retrying is the caller's."""


class Deliveries:
    """Fire-and-forget deliveries with retries: the caller never waits for the receiver.

    A delivery is any one-attempt coroutine (``Attempt``): a signed webhook POST (``webhook``),
    where any 2xx counts as delivered whatever its body, or a FileMaker script run
    (``bfstream/filemaker``). Each is tried up to ``attempts`` times, waiting 0.5 s, 1 s, 2 s...
    between tries; waits hold no slot, at most ``_CONCURRENT`` attempts are in flight, and one
    app's unreachable back end fills only its own ``_MAX_PENDING_PER_APP``, so it slows nobody else."""

    def __init__(self, http: ProviderClient, attempts: int, timeout: float, allow_private: bool) -> None:
        self._http = http
        self._attempts = attempts
        self._timeout = timeout
        self._allow_private = allow_private
        self._slots = asyncio.Semaphore(_CONCURRENT)
        self._pending: dict[str, list[asyncio.Task[None]]] = {}
        self._named: set[asyncio.Task[None]] = set()  # deliveries with an id of their own: waited for at close
        self.delivered = 0
        self.failed = 0  # given up after every attempt
        self.dropped = 0  # never tried: its app had too many waiting

    def webhook(
        self,
        app_id: str,
        url: str,
        secret: str,
        event: str,
        payload: Any,
        delivery: str | None = None,
        settled: Settled | None = None,
    ) -> None:
        """A signed POST of ``payload`` to ``url``, its answer's body ignored."""

        async def attempt(delivery_id: str) -> None:
            await post(
                self._http, url, secret, event, payload, self._timeout,
                allow_private=self._allow_private, delivery=delivery_id, answer=False,
            )  # fmt: skip

        self.send(app_id, attempt, delivery, settled)

    def send(self, app_id: str, attempt: Attempt, delivery: str | None = None, settled: Settled | None = None) -> None:
        """``delivery``: the id the receiver de-duplicates by (``X-Bfstream-Delivery``, or in a
        FileMaker script's parameter), when the caller has one that must stay the same whoever
        sends it; else a random one per delivery. Named deliveries get a few seconds at shutdown
        (``close``): a drained stream's event goes out. ``settled`` is awaited once the delivery
        went through or was given up, not when it is cancelled (at shutdown: someone else will
        send it, ``streams/lifecycle.py``)."""
        waiting = self._pending.setdefault(app_id, [])
        if len(waiting) >= _MAX_PENDING_PER_APP:
            waiting.pop(0).cancel()
            self.dropped += 1
        task = asyncio.create_task(self._deliver(attempt, delivery or secrets.token_hex(12), settled))
        waiting.append(task)
        if delivery is not None:
            self._named.add(task)
            task.add_done_callback(self._named.discard)

        def done(_: asyncio.Task[None]) -> None:
            with_app = self._pending.get(app_id)
            if with_app is not None and task in with_app:
                with_app.remove(task)
                if not with_app:
                    del self._pending[app_id]

        task.add_done_callback(done)

    async def _deliver(self, attempt: Attempt, delivery: str, settled: Settled | None) -> None:
        for number in range(self._attempts):
            if number:
                await asyncio.sleep(0.5 * 2 ** (number - 1))
            try:
                async with self._slots:
                    await attempt(delivery)
                self.delivered += 1
                break
            except WebhookError as exc:
                tries = f"try {number + 1} of {self._attempts}"
                log.info("delivery %s failed (%s): %s", delivery, tries, exc.message)
        else:
            self.failed += 1
            log.warning("delivery %s given up after %d tries", delivery, self._attempts)
        if settled is not None:
            await settled()

    async def close(self, grace: float = 0.0) -> None:
        """Cancel what is still waiting, after up to ``grace`` seconds for the named deliveries."""
        if grace > 0 and self._named:
            await asyncio.wait(set(self._named), timeout=grace)
        tasks = [t for waiting in self._pending.values() for t in waiting]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
