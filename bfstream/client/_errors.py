"""What the client raises. Everything derives from one root, so a back end may catch it all::

    BfstreamClientError                 anything this client raises on its own behalf
     ├── BfstreamAPIError               the server answered, but not with a 2xx: status, code, type,
     │                                  message and details of its documented error shape
     └── BfstreamConnectionError        no answer came: refused, reset, DNS, TLS...
          └── BfstreamTimeout           no answer in time; for a create or query the stream may have
                                        started anyway: send it again with the same idempotency key

Standard library only: a webhook receiver imports these without httpx.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class BfstreamClientError(Exception):
    """The root of every error the client raises."""


class BfstreamAPIError(BfstreamClientError):
    """A non-2xx answer, carrying the server's ``{"success": false, "error": {...}}`` fields.

    ``code`` is an HTTP status, or the provider's own status or code for a 502 (docs: README, "errors");
    ``retry_after`` is the ``Retry-After`` of a 429 or 503, in seconds, else None. An answer that is
    not bfstream's shape (a proxy's HTML page) keeps its status, ``type`` ``"http_error"`` and the
    start of its text as the message."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: int | str | None = None,
        type: str = "http_error",
        details: Any = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(f"HTTP {status} {type}: {message}")
        self.status = status
        self.message = message
        self.code = status if code is None else code
        self.type = type
        self.details = details
        self.retry_after = retry_after


class BfstreamConnectionError(BfstreamClientError):
    """The request got no answer: the server could not be reached, or the connection broke."""


class BfstreamTimeout(BfstreamConnectionError):
    """No answer within the client's ``timeout``."""


def api_error(status: int, headers: Mapping[str, str], content: bytes) -> BfstreamAPIError:
    """The error a non-2xx answer stands for, read from its body whatever that holds."""
    wait = headers.get("retry-after", "")
    retry_after = int(wait) if wait.isascii() and wait.isdigit() else None
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        code = error.get("code")
        return BfstreamAPIError(
            status,
            error["message"],
            code=code if isinstance(code, int | str) else None,
            type=str(error.get("type") or "http_error"),
            details=error.get("details"),
            retry_after=retry_after,
        )
    text = content[:200].decode("utf-8", "replace").strip()
    return BfstreamAPIError(status, text or "no error body", retry_after=retry_after)
