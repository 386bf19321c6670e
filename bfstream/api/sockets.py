"""Limits below HTTP: how long a request's headers may take to arrive, how many bytes they may
take, and how many sockets one client address may hold open on this process.

Both live in uvicorn's HTTP protocol (a subclass of the one it would use, given to its ``Config``),
because nothing above it can see what they guard. The ASGI application, and so every middleware,
is called only once a request's headers are complete: a client that sends them a byte a second
("slowloris") holds its socket without ever reaching it. uvicorn has no header timeout of its own:
``timeout_keep_alive`` covers only the silence between two requests, and every byte received
cancels it. And ``limits.connections_per_address`` counts WebSocket and SSE connections once they
are opened, never a socket that has not finished a request.

A socket is counted from its connect, under its peer's address, until it closes or becomes a
WebSocket (which ``connections_per_address`` then counts, fleet-wide). A peer trusted as a proxy
(uvicorn's ``forwarded_allow_ips``, 127.0.0.1 and ::1 unless set) is not counted: each of its
sockets may carry another client, and bounding them is the proxy's job.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from typing import Any

import h11
import uvicorn
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string
from uvicorn.protocols.http.h11_impl import H11Protocol

from bfstream.api.errors import error_body
from bfstream.config import LimitSettings

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional for uvicorn, which then uses h11
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

_RETRY_AFTER = 5  # seconds: a socket frees when one of the address's requests ends, which no one can predict


def _answer(status: int, reason: str, message: str, type_: str, headers: bytes = b"") -> bytes:
    """A whole HTTP response in the documented error shape, written before closing the socket."""
    body = json.dumps(error_body(message, status, type_)).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "x-content-type-options: nosniff\r\nconnection: close\r\n"
    )
    return head.encode() + headers + b"\r\n" + body


class ProxyPeers:
    """Which peers uvicorn trusts as proxies, read as its ``forwarded_allow_ips`` is: ``*``, or
    addresses and networks separated by commas; nothing when ``proxy_headers`` is off."""

    def __init__(self, config: uvicorn.Config) -> None:
        allowed = config.forwarded_allow_ips if config.proxy_headers else []
        names = [h.strip() for h in allowed.split(",")] if isinstance(allowed, str) else list(allowed)
        self._everyone = "*" in names
        self._networks = []
        self._literals = set()
        for name in filter(None, names):
            try:
                self._networks.append(ipaddress.ip_network(name, strict=False))
            except ValueError:
                self._literals.add(name)

    def __contains__(self, host: str) -> bool:
        if self._everyone or host in self._literals:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._networks)


class SocketCounts:
    """Open sockets per peer address, for one server (a socket belongs to one process, so unlike
    the connection slots this is never shared with the fleet)."""

    def __init__(self, limit: int, proxies: ProxyPeers) -> None:
        self.limit = limit
        self._proxies = proxies
        self._open: dict[str, int] = {}

    def take(self, host: str | None) -> bool:
        """Count a new socket from ``host``; False (nothing counted) when it has ``limit`` open already.
        A socket with no address (a Unix socket) or from a proxy is let in uncounted."""
        if host is None or host in self._proxies:
            return True
        held = self._open.get(host, 0)
        if held >= self.limit:
            return False
        self._open[host] = held + 1
        return True

    def release(self, host: str | None) -> None:
        held = self._open.get(host) if host is not None else None
        if held is None:
            return  # never counted
        if held > 1:
            self._open[host] = held - 1  # type: ignore[index]
        else:
            del self._open[host]  # type: ignore[arg-type]


class _SocketGuard:
    """Mixed into uvicorn's HTTP protocol: the header timer and the socket count of one connection."""

    # Set on the class made for each server (``guarded_protocol``).
    header_timeout: float
    max_header_bytes: int
    sockets: SocketCounts
    timed_out: bytes
    too_large: bytes
    refused: bytes
    # uvicorn's, per connection.
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    client: tuple[str, int] | None
    cycle: Any

    _timer: asyncio.TimerHandle | None = None
    _counted = False
    _header_bytes = 0  # received while the request's headers are still incomplete

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        host = self.client[0] if self.client else None
        if not self.sockets.take(host):
            transport.write(self.refused)
            transport.close()
            return
        self._counted = True
        self._arm()  # a socket that sends nothing at all is timed too: uvicorn would keep it forever

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._uncount()
        super().connection_lost(exc)  # type: ignore[misc]

    def handle_websocket_upgrade(self, *args: Any) -> None:
        self._disarm()
        self._uncount()  # a WebSocket is connections_per_address's from here on, fleet-wide
        super().handle_websocket_upgrade(*args)  # type: ignore[misc]

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self.sockets.release(self.client[0] if self.client else None)

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        self._header_bytes = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _count_header_bytes(self, received: int) -> None:
        """After the parser took ``received`` bytes: if the headers are still incomplete (the timer
        is armed), all of them were headers (but for the end of a previous request sharing the
        read), and past the bound the socket is answered 431 and closed."""
        if self._timer is None:
            return
        self._header_bytes += received
        if self._header_bytes > self.max_header_bytes and not self.transport.is_closing():
            self._disarm()
            self.transport.write(self.too_large)
            self.transport.close()

    def _headers_too_slow(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(self.timed_out)  # mid-response (a slow pipelined request), a 408 would corrupt it
        self.transport.close()


if HttpToolsProtocol is not None:

    class _GuardedHttpTools(_SocketGuard, HttpToolsProtocol):
        """httptools tells where a request starts and where its headers end."""

        def on_message_begin(self) -> None:
            self._arm()  # the first request keeps the timer armed at its connect
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._count_header_bytes(len(data))  # httptools bounds no header (h11 does: see below)


class _GuardedH11(_SocketGuard, H11Protocol):
    """h11 reports nothing before a request's head is whole: its state says whether one is awaited."""

    conn: h11.Connection

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._arm()  # the first byte of a request, or more of one already timed
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()


def guarded_protocol(config: uvicorn.Config, limits: LimitSettings) -> type[asyncio.Protocol]:
    """The HTTP protocol ``config`` names (``auto``: httptools when installed, as uvicorn picks it),
    with the header timeout and the socket bound, and a socket count of its own for this server."""
    base = (
        import_from_string(HTTP_PROTOCOLS.get(config.http, config.http))
        if isinstance(config.http, str)
        else config.http
    )
    if HttpToolsProtocol is not None and issubclass(base, HttpToolsProtocol):
        guard: type[_SocketGuard] = _GuardedHttpTools
    elif issubclass(base, H11Protocol):
        guard = _GuardedH11
    else:
        raise ValueError(f"headers and sockets are guarded for uvicorn's httptools and h11 only, not {base.__name__}")
    limit, timeout = limits.socket_limit(), limits.header_timeout
    # h11 bounds a request's head by itself, with a 400: the same figure.
    config.h11_max_incomplete_event_size = limits.max_header_bytes
    timed_out = _answer(
        408, "Request Timeout", f"The request's headers did not arrive within {timeout:g} s", "request_timeout"
    )
    refused = _answer(
        429,
        "Too Many Requests",
        f"At most {limit} open sockets for one client address",
        "rate_limited",
        f"retry-after: {_RETRY_AFTER}\r\n".encode(),
    )
    counts = SocketCounts(limit, ProxyPeers(config))
    too_large = _answer(
        431,
        "Request Header Fields Too Large",
        f"The request's line and headers are larger than {limits.max_header_bytes} bytes",
        "payload_too_large",
    )
    attributes = {
        "header_timeout": timeout,
        "max_header_bytes": limits.max_header_bytes,
        "sockets": counts,
        "timed_out": timed_out,
        "too_large": too_large,
        "refused": refused,
    }
    return type(f"Guarded{base.__name__}", (guard,), attributes)
