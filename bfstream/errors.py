"""The one error tree of bfstream.

Every failure a caller can see is one of these, so that ``api/errors.py`` can map it to the
documented JSON shape without knowing where it came from::

    BfstreamError                      status  type
     ├── ClientError                   400     bad_request
     │    ├── ValidationFailed         400     validation_error   (details: field paths)
     │    ├── UnknownService           400     unknown_service
     │    ├── Unauthorized             401     unauthorized
     │    ├── Forbidden                403     forbidden
     │    ├── NotFound                 404     not_found
     │    ├── Conflict                 409     conflict
     │    ├── Gone                     410     gone               (a stream's offset that can no longer be served)
     │    ├── PayloadTooLarge          413     payload_too_large
     │    ├── IdempotencyKeyReused     422     idempotency_key_reused (the key came with another request)
     │    └── TooManyRequests          429     rate_limited
     ├── ProviderError                 502     provider_error     (code: the provider's HTTP status)
     │    └── ProviderTimeout          504     provider_timeout
     ├── WebhookError                  502     webhook_error      (an app's webhook refused, failed or timed out)
 │    └── FileMakerError           502     filemaker_error    (its FileMaker Server, the same, or a script's error)
     ├── ShuttingDown                  503     shutting_down      (no new streams while draining)
     ├── BrokerError                   503     broker_unavailable (the broker, e.g. Redis, is unreachable)
     ├── StoreError                    503     store_unavailable  (the database is unreachable)
     ├── Unavailable                   503     unavailable        (another instance needed for this is silent)
     └── CredentialUnavailable         503     credential_unavailable (the app's stored provider key cannot be read)

Foreign exceptions (aiohttp, sqlite, redis, asyncpg) are translated where they are raised, at the adapter
edge; nothing above that edge catches library exceptions. What ends a stream early, in the tree or not,
becomes its outcome in ``outcome`` below: the status its record keeps and its ``error`` event.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bfstream.scrub import scrub_json
from bfstream.text import repair_json


class BfstreamError(Exception):
    status: int = 500
    type: str = "internal_error"

    def __init__(self, message: str, *, code: int | str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = self.status if code is None else code
        self.details = details


class ClientError(BfstreamError):
    status = 400
    type = "bad_request"


class ValidationFailed(ClientError):
    type = "validation_error"


class UnknownService(ClientError):
    type = "unknown_service"


class Unauthorized(ClientError):
    status = 401
    type = "unauthorized"


class Forbidden(ClientError):
    status = 403
    type = "forbidden"


class NotFound(ClientError):
    status = 404
    type = "not_found"


class Conflict(ClientError):
    status = 409
    type = "conflict"


class Gone(ClientError):
    status = 410
    type = "gone"


class PayloadTooLarge(ClientError):
    status = 413
    type = "payload_too_large"


class IdempotencyKeyReused(ClientError):
    status = 422
    type = "idempotency_key_reused"


class TooManyRequests(ClientError):
    """A rate or concurrency limit; ``retry_after`` (seconds) becomes the Retry-After header."""

    status = 429
    type = "rate_limited"

    def __init__(self, message: str, *, retry_after: float = 1.0, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class ProviderError(BfstreamError):
    """The LLM provider refused, failed or broke off; ``code`` is its HTTP status when it sent one.

    ``retryable`` marks failures that produced no output and may pass on a second try (connection
    refused, 429, 5xx); ``retry_after`` is the wait the provider asked for, in seconds."""

    status = 502
    type = "provider_error"
    retryable = False
    retry_after: float | None = None


class ProviderTimeout(ProviderError):
    status = 504
    type = "provider_timeout"


class WebhookError(BfstreamError):
    """The app's own back end (its webhook) failed a call; for a tool, this becomes the result the
    model reads, never a failure of the stream."""

    status = 502
    type = "webhook_error"


class FileMakerError(WebhookError):
    """The app's FileMaker Server, its back end in place of a webhook, refused a call or a script
    ended in an error; ``code`` is FileMaker's error code when it gave one (212, 104, ...)."""

    type = "filemaker_error"


class ShuttingDown(BfstreamError):
    status = 503
    type = "shutting_down"


class BrokerError(BfstreamError):
    """The broker backend cannot be reached; raised at its edge, from the library's own errors."""

    status = 503
    type = "broker_unavailable"


class StoreError(BfstreamError):
    """The database cannot be reached; raised at the driver's edge, from the library's own errors."""

    status = 503
    type = "store_unavailable"


class Unavailable(BfstreamError):
    """A request needs an instance of the fleet that does not answer (it may have just died)."""

    status = 503
    type = "unavailable"


class CredentialUnavailable(BfstreamError):
    """The app's stored provider key cannot be decrypted with this server's credentials key (another
    instance's key, a key replaced too soon): a configuration fault of the server, not the caller's,
    and not the provider's, so neither a 4xx nor a 502; the same request passes once it is fixed."""

    status = 503
    type = "credential_unavailable"


def outcome(exc: BaseException, max_duration: float) -> tuple[str, dict[str, Any]]:
    """The status a stream that ``exc`` cut short keeps in its record, and the ``error`` its channels
    get: ``{message, code, details}``, repaired and scrubbed, whatever raised it.

    A cancellation that reaches this is the server shutting down (a stop is no failure), and a
    ``TimeoutError`` the stream's own limit, ``streams.max_duration``. Anything outside the tree is
    a bug: what it says stays in the log."""
    status, details = "failed", None
    if isinstance(exc, BfstreamError):
        message, code, details = exc.message, exc.code, exc.details
    elif isinstance(exc, TimeoutError):
        message, code = f"The stream ran longer than {max_duration:g} s", 504
    elif isinstance(exc, asyncio.CancelledError):
        status, message, code = "interrupted", "The server is shutting down", 503
    else:
        message, code = "Internal error while streaming", 500
    return status, scrub_json(repair_json({"message": message, "code": code, "details": details}))
