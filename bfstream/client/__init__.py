"""A Python client for back ends: ``from bfstream.client import Client, AsyncClient``.

The two clients have the same methods (``AsyncClient``'s awaited); both sit on httpx, the
``client`` extra (``pip install 'bfstream[client]'``). Nothing here imports the server (FastAPI,
aiohttp, the store): a back end that only calls bfstream stays light. ``verify_webhook`` and the
errors need only the standard library, so a webhook receiver can use them without httpx.
``docs/python-client.md`` is the guide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bfstream.client._errors import BfstreamAPIError, BfstreamClientError, BfstreamConnectionError, BfstreamTimeout
from bfstream.client._types import Answer, ChannelMode, Started, StreamEvent, StreamStatus, Token
from bfstream.client._webhook import verify_webhook

if TYPE_CHECKING:
    from bfstream.client._async import AsyncClient, AsyncEventStream
    from bfstream.client._sync import Client, EventStream

__all__ = [
    "Answer",
    "AsyncClient",
    "AsyncEventStream",
    "BfstreamAPIError",
    "BfstreamClientError",
    "BfstreamConnectionError",
    "BfstreamTimeout",
    "ChannelMode",
    "Client",
    "EventStream",
    "Started",
    "StreamEvent",
    "StreamStatus",
    "Token",
    "verify_webhook",
]

_NEED_HTTPX = {"Client": "_sync", "EventStream": "_sync", "AsyncClient": "_async", "AsyncEventStream": "_async"}


def __getattr__(name: str) -> Any:
    """The clients are imported on first use, so that a receiver without httpx can still import
    ``verify_webhook``; without httpx they say which extra brings it."""
    module = _NEED_HTTPX.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        import httpx  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"bfstream.client.{name} needs httpx, which the client extra installs: pip install 'bfstream[client]'"
        ) from exc
    from importlib import import_module

    return getattr(import_module(f"bfstream.client.{module}"), name)
