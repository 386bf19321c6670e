"""Retrying a provider call that failed before producing anything.

Only failures the provider marked retryable (connection refused, 429, 5xx) and only before the
first byte of output: once a delta went to the channels, a retry would repeat it, so a stream
that breaks later is reported, never restarted.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bfstream.errors import ProviderError

log = logging.getLogger("bfstream.streams")

T = TypeVar("T")


async def with_retries(attempt: Callable[[], Awaitable[T]], retries: int, max_wait: float) -> T:
    """Run ``attempt``; on a retryable ProviderError wait (the provider's Retry-After, else an
    exponential backoff with jitter) and try again, at most ``retries`` more times. A provider that
    asks to wait longer than ``max_wait`` gets its error passed on at once."""
    for number in range(retries + 1):
        try:
            return await attempt()
        except ProviderError as exc:
            if not exc.retryable or number == retries:
                raise
            wait = exc.retry_after if exc.retry_after is not None else 0.25 * 2**number * (1 + random.random())
            if wait > max_wait:
                raise
            log.info("provider answered %s; retrying in %.2fs (%d/%d)", exc.code, wait, number + 1, retries)
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")
