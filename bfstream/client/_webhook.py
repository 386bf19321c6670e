"""A receiver's check of a signed delivery from bfstream (``docs/tools.md``, "Check the signature").

bfstream signs ``<X-Bfstream-Timestamp>.<raw body>`` with HMAC-SHA256 under the app's webhook secret
and sends ``v1=<hex>`` as ``X-Bfstream-Signature``. Standard library only, so a receiver needs
neither httpx nor the server's packages."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping

TOLERANCE = 300  # seconds between the signing and the check, either way, before a delivery is refused


def verify_webhook(
    secret: str | Iterable[str],
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance: float = TOLERANCE,
    now: float | None = None,
) -> bool:
    """Whether a delivery comes from bfstream, unaltered and recent.

    ``body`` must be the raw bytes as received, before any JSON parsing: a re-serialised body has
    other bytes and fails. ``headers`` is any mapping of the request's headers (names in any case).
    ``secret`` may be several secrets while one is being rotated (``apps update
    --rotate-webhook-secret`` stops the old one at once): a signature by any of them passes. A
    timestamp more than ``tolerance`` seconds from ``now`` fails, so a captured delivery cannot be
    replayed later."""
    given = {name.lower(): value for name, value in headers.items()}
    timestamp = given.get("x-bfstream-timestamp", "")
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    raw = body.encode() if isinstance(body, str) else bytes(body)
    signed = timestamp.encode() + b"." + raw
    # Several space-separated signatures may come (none today): any one that matches will do.
    offered = [s.encode("utf-8", "replace") for s in given.get("x-bfstream-signature", "").split()]
    secrets = [secret] if isinstance(secret, str) else list(secret)
    for key in secrets:
        expected = b"v1=" + hmac.new(key.encode(), signed, hashlib.sha256).hexdigest().encode()
        if any(hmac.compare_digest(expected, s) for s in offered):
            return True
    return False
