"""The HTTP edge every adapter shares: send, check the status, read with time-outs, and turn
aiohttp's exceptions into ``ProviderError`` so nothing above this module sees a library error.

Provider calls go through aiohttp, not httpx: reading a stream costs it about 19 µs of CPU a
chunk against httpx's 142 (300 streams at 20 chunks/s on this machine, ``docs/benchmarks.md``),
and that read is most of what a relay does. One session holds a pool of connections per provider
host, sized for the concurrent streams (``streams.provider_connections``).

Provider error texts are scrubbed of the caller's key here (``bfstream/scrub.py``): OpenAI, for one,
quotes a masked copy of a rejected key in its 401 message, and that text goes on to HTTP responses
and channels.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp

from bfstream.config import ServiceConfig, Timeouts
from bfstream.errors import ProviderError, ProviderTimeout
from bfstream.providers.sse import ServerSentEvent, SSEDecoder
from bfstream.scrub import hold, scrub
from bfstream.text import provider_json, repair

ProviderClient = aiohttp.ClientSession


def provider_client(connections: int) -> ProviderClient:
    """The one session every outgoing call uses (providers, webhooks). It honours HTTP(S)_PROXY and
    NO_PROXY, as the providers' SDKs do, follows no redirect, and leaves time-outs to each call."""
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector, trust_env=True, timeout=aiohttp.ClientTimeout(total=None), skip_auto_headers=["User-Agent"]
    )


@dataclass(frozen=True, slots=True)
class Outbound:
    """A provider request, built by an adapter: the URL, the headers (lower-case names) and the body."""

    url: str
    headers: dict[str, str]
    body: bytes
    connect: float = field(default=10.0)  # seconds to open the TCP (and TLS) connection


def outbound(
    url: str, headers: dict[str, str], payload: Any, connect: float, params: dict[str, str] | None = None
) -> Outbound:
    """JSON ``payload`` to ``url``; later headers win, whatever their case (a configured
    ``anthropic-version`` replaces the default one)."""
    merged: dict[str, str] = {"content-type": "application/json"}
    for name, value in headers.items():
        merged[name.lower()] = value
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    return Outbound(url + ("?" + urlencode(params) if params else ""), merged, body, connect)


_MAX_ERROR_BODY = 64 * 1024


def error_message(body: Any) -> str | None:
    """The human message of a provider error object; OpenAI, Anthropic and Gemini all nest it under ``error``."""
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
        if isinstance(inner, str):
            return inner
        if isinstance(body.get("message"), str):
            return body["message"]
    return None


async def _refusal(response: aiohttp.ClientResponse, api_key: str | None, timeouts: Timeouts) -> ProviderError:
    try:
        async with asyncio.timeout(timeouts.idle):
            raw = b""
            async for piece in response.content.iter_any():
                raw += piece
                if len(raw) > _MAX_ERROR_BODY:
                    break
    except (TimeoutError, aiohttp.ClientError, OSError):
        raw = b""
    text = raw[:_MAX_ERROR_BODY].decode("utf-8", "replace")
    try:
        body = provider_json(text)
    except ValueError:
        body = None
    detail = repair(scrub((error_message(body) or text).strip() or response.reason or "no error message", api_key))
    status = response.status
    error = ProviderError(f"The provider refused the request (HTTP {status})", code=status, details=detail)
    error.retryable = status == 429 or status >= 500
    error.retry_after = _seconds(response.headers.get("retry-after")) or _google_retry_delay(body)
    return error


def _google_retry_delay(body: Any) -> float | None:
    """Google APIs say how long to wait in the error body (``RetryInfo.retryDelay``, e.g. "37s"), not in a header."""
    inner = body.get("error") if isinstance(body, dict) else None
    for detail in inner.get("details", []) if isinstance(inner, dict) else []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(float(delay[:-1]), 0.0)
            except ValueError:
                return None
    return None


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After is either seconds or an HTTP date."""
    if not retry_after:
        return None
    try:
        return max(float(retry_after), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(retry_after).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def translate(exc: BaseException, stage: str) -> ProviderError:
    """One place that names what went wrong with the connection, in words a caller can act on."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, TimeoutError):  # aiohttp's own time-outs are TimeoutErrors too
        return ProviderTimeout(f"The provider timed out ({stage})", details=type(exc).__name__)
    # aiohttp's texts may quote a header or a URL, key and all: scrubbed like everything leaving.
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = ProviderError("Could not connect to the provider", details=scrub(str(exc)) or type(exc).__name__)
        error.retryable = True
        return error
    return ProviderError(f"The provider connection failed ({stage})", details=scrub(str(exc)) or type(exc).__name__)


_CONNECTION_ERRORS = (TimeoutError, aiohttp.ClientError, OSError)


@asynccontextmanager
async def open_stream(
    client: ProviderClient, request: Outbound, timeouts: Timeouts, api_key: str | None
) -> AsyncIterator[AsyncIterator[bytes]]:
    """Send ``request``; on a 2xx answer yield its body as chunks, read under the time-outs.

    Raises ``ProviderError`` before yielding when the provider refuses or cannot be reached. The
    response is always closed on exit, which is what makes the provider stop generating."""
    loop = asyncio.get_running_loop()
    first_deadline = loop.time() + timeouts.first_byte
    release = hold(api_key)  # while the key is in use, any text quoting it is scrubbed by value
    try:
        try:
            async with asyncio.timeout_at(first_deadline):
                response = await client.post(
                    request.url,
                    data=request.body,
                    headers=request.headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=request.connect),
                )
        except _CONNECTION_ERRORS as exc:
            raise translate(exc, "waiting for response headers") from None
        try:
            if not 200 <= response.status < 300:
                raise await _refusal(response, api_key, timeouts)
            yield _read_chunks(response, first_deadline, timeouts.idle)
        finally:
            response.close()  # a whole answer was released to the pool already; a cut one is dropped
    finally:
        release()


class _Watchdog:
    """The read time-outs of one response, without a timer per chunk: one timer, moved forward only
    when it fires early. On time-out it fails the pending read, with the stage it was in."""

    def __init__(self, response: aiohttp.ClientResponse, deadline: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._content = response.content
        self.deadline = deadline
        self.stage = "waiting for the first byte"
        self._handle = self._loop.call_at(deadline, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        if now < self.deadline:
            self._handle = self._loop.call_at(self.deadline, self._check)
        elif math.isinf(self.deadline):  # the consumer has the chunk: not the provider's silence
            self._handle = self._loop.call_later(1.0, self._check)
        else:
            self._content.set_exception(ProviderTimeout(f"The provider timed out ({self.stage})", details="idle"))

    def cancel(self) -> None:
        self._handle.cancel()


def _received_before(content: aiohttp.StreamReader) -> bytes:
    """The bytes that arrived before the connection broke and were not read yet. aiohttp's
    ``readany`` raises the break as soon as it is known, dropping what its buffer still holds: when
    the provider's last chunk and its cut reach the loop together (a provider that fails mid-answer,
    a proxy that closes), those words were lost. Its private reader is the only way to them."""
    read_nowait = getattr(content, "_read_nowait", None)
    try:
        return read_nowait(-1) if read_nowait is not None else b""
    except Exception:  # a later aiohttp that reads otherwise: lose them, as before
        return b""


async def _read_chunks(response: aiohttp.ClientResponse, first_deadline: float, idle: float) -> AsyncIterator[bytes]:
    content = response.content
    loop = asyncio.get_running_loop()
    watchdog = _Watchdog(response, first_deadline)
    try:
        while True:
            try:
                chunk = await content.readany()
            except _CONNECTION_ERRORS as exc:
                if left := _received_before(content):
                    yield left  # what came before the cut is the answer's too: its last words
                raise translate(exc, watchdog.stage) from None
            if not chunk:
                return
            watchdog.deadline = math.inf
            yield chunk
            watchdog.deadline = loop.time() + idle
            watchdog.stage = "silent between chunks"
    finally:
        watchdog.cancel()


async def iter_sse(chunks: AsyncIterator[bytes], service: ServiceConfig) -> AsyncIterator[ServerSentEvent]:
    """Events of a streamed answer. The idle time-out counts lines, not bytes: a provider that
    trickles a byte now and then, never finishing a line, times out instead of holding its stream
    (and its slot) until ``streams.max_duration``. Comment lines count: some servers send them
    while the model thinks."""
    decoder = SSEDecoder(service.max_line)
    loop = asyncio.get_running_loop()
    idle = service.timeouts.idle
    lines, progress_at = 0, loop.time()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
        if decoder.lines != lines:
            lines, progress_at = decoder.lines, loop.time()
        elif loop.time() - progress_at > idle:
            raise ProviderTimeout("The provider timed out (no complete line between chunks)", details="idle")
    for event in decoder.close():
        yield event


async def post_json(client: ProviderClient, request: Outbound, service: ServiceConfig, api_key: str | None) -> Any:
    """A non-streaming call: the whole answer, bounded by ``timeouts.request`` and, in size, by
    ``max_line`` (the same bound as one line of a stream: the answer is one JSON document)."""
    timeouts = service.timeouts
    whole = timeouts.model_copy(update={"first_byte": timeouts.request, "idle": timeouts.request})
    try:
        async with asyncio.timeout(timeouts.request), open_stream(client, request, whole, api_key) as chunks:
            pieces, size = [], 0
            async for chunk in chunks:
                size += len(chunk)
                if size > service.max_line:
                    raise ProviderError(f"The provider's answer is larger than {service.max_line} bytes")
                pieces.append(chunk)
            body = b"".join(pieces)
    except TimeoutError as exc:
        raise translate(exc, "waiting for the complete answer") from None
    try:
        return provider_json(body)
    except ValueError:
        raise ProviderError(
            "The provider sent an answer that is not JSON",
            details=scrub(body[:500].decode("utf-8", "replace"), api_key),
        ) from None
