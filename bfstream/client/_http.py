"""What the sync and async shells share of httpx: the client's settings, and httpx's exceptions
translated into the client's own (``_errors.py``) at this one edge."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from bfstream import __version__
from bfstream.client._errors import BfstreamConnectionError, BfstreamTimeout

CONNECT_SECONDS = 10.0


def options(base_url: str, timeout: float) -> dict[str, Any]:
    """The keyword arguments of ``httpx.Client`` and ``httpx.AsyncClient`` alike. ``timeout`` bounds
    each wait for the server: a ``stream: false`` answer takes as long as the model writes, and a
    stream's events come with a keep-alive at least every 15 s."""
    return {
        "base_url": base_url.rstrip("/"),
        "timeout": httpx.Timeout(timeout, connect=min(timeout, CONNECT_SECONDS)),
        "headers": {"User-Agent": f"bfstream-python/{__version__}", "Accept": "application/json"},
        "follow_redirects": False,  # a redirected POST would lose its body, and the key with it go elsewhere
    }


@contextmanager
def translated() -> Iterator[None]:
    """httpx's transport failures as the client's errors; the request's body (the app key in it) is
    never part of the message."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise BfstreamTimeout(f"bfstream did not answer in time ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise BfstreamConnectionError(f"bfstream could not be reached: {exc or type(exc).__name__}") from exc
