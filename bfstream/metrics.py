"""What an operator graphs and alerts on, served at ``GET /metrics`` in Prometheus' text format.

Each app has a registry of its own rather than prometheus-client's global one: the tests run many
servers in one process, and each must count only what it did.

Two kinds of figures, so that the relay's hot path pays next to nothing:

- counted as they happen, per service: streams started and finished, deltas (added in batches, not
  one by one), time to first token, provider errors. A relay resolves its service's children once
  (``ServiceMetrics``) and touches only those.
- read when scraped, from what the server keeps anyway (``_Live``): running streams, open
  connections, channels and their members, messages published and delivered, broker and store
  errors (plain integers the hub, the control channel and the store keep), whether the broker is up.

Every label comes from a small, fixed set: ``service`` (the configured service names), ``outcome``,
``type`` (bfstream's error types), ``code`` (an HTTP status) and ``transport``. No label ever holds
a key, a prompt, a channel, a user, an app or a stream id: none of those is bounded, and some are
secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bfstream.errors import ProviderError

OUTCOMES = ("completed", "stopped", "failed", "interrupted")
TRANSPORTS = ("websocket", "sse")
# Seconds. From a few milliseconds (a local model, echo) to a minute (first_byte's default).
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)


@dataclass(frozen=True, slots=True)
class ServiceMetrics:
    """One service's series, resolved once: looking a child up by its labels costs more than counting."""

    started: Any
    finished: dict[str, Any]  # by outcome
    deltas: Any
    first_token: Any


def error_code(exc: ProviderError) -> str:
    """The HTTP status, when there is one (bfstream's own 502 or 504 when the provider sent none):
    providers also send codes of their own ("SAFETY", "overloaded_error"), which no one bounds, so
    those all read ``other``."""
    code = exc.code
    return str(code) if type(code) is int and 100 <= code <= 599 else "other"


class Metrics:
    def __init__(self, services: Iterable[str]) -> None:
        self.registry = registry = CollectorRegistry()
        self._started = Counter(
            "bfstream_streams_started",
            "Streams whose provider accepted the request, so that their events went to the channels.",
            ["service"],
            registry=registry,
        )
        self._finished = Counter(
            "bfstream_streams_finished",
            "Streams that ended, by outcome (the record's status; interrupted also when another "
            "instance ended the stream for this one).",
            ["service", "outcome"],
            registry=registry,
        )
        self._deltas = Counter(
            "bfstream_stream_deltas",
            "delta events sent to the channels (after coalescing), counted about once a second per stream.",
            ["service"],
            registry=registry,
        )
        self._first_token = Histogram(
            "bfstream_time_to_first_token_seconds",
            "From a stream's admission (before the provider is called, retries included) to its first delta.",
            ["service"],
            buckets=FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self._provider_errors = Counter(
            "bfstream_provider_errors",
            "Provider calls that failed: refused before a stream started, a stream: false call, or "
            "a stream broken off. code is the provider's HTTP status (502 or 504 when it sent none), or other.",
            ["service", "type", "code"],
            registry=registry,
        )
        # Open connections by transport, kept by ``ConnectionCounter``.
        self.connections = dict.fromkeys(TRANSPORTS, 0)
        self._services: dict[str, ServiceMetrics] = {}
        self._live: _Live | None = None
        for name in services:  # every series exists from the start, so rate() sees the first increase
            self.service(name)
        # What the default registry would show: CPU, memory, file descriptors, the garbage collector.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)

    def service(self, name: str) -> ServiceMetrics:
        found = self._services.get(name)
        if found is None:
            found = self._services[name] = ServiceMetrics(
                self._started.labels(name),
                {outcome: self._finished.labels(name, outcome) for outcome in OUTCOMES},
                self._deltas.labels(name),
                self._first_token.labels(name),
            )
        return found

    def provider_error(self, service: str, exc: ProviderError) -> None:
        self._provider_errors.labels(service, exc.type, error_code(exc)).inc()

    @contextmanager
    def provider_errors(self, service: str) -> Iterator[None]:
        """Count a provider call's failure as it passes by, for the calls whose error becomes the
        HTTP answer (a stream refused before it started, ``stream: false``)."""
        try:
            yield
        except ProviderError as exc:
            self.provider_error(service, exc)
            raise

    def watch(self, state: Any) -> None:
        """Read the live figures from the app's state (``streams``, ``hub``, ``control``, ``store``)
        at each scrape, once the lifespan has made them."""
        if self._live is not None:  # the app started again: read the new state
            self.registry.unregister(self._live)
        self._live = _Live(state, self.connections)
        self.registry.register(self._live)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Live(Collector):
    """Figures the server keeps anyway, read at scrape time: nothing is added to the hot path."""

    def __init__(self, state: Any, connections: dict[str, int]) -> None:
        self._state = state
        self._connections = connections

    def collect(self) -> Iterable[Metric]:
        state = self._state
        hub = state.hub
        yield GaugeMetricFamily(
            "bfstream_streams_running", "Streams this instance is relaying now.", value=len(state.streams)
        )
        connections = GaugeMetricFamily(
            "bfstream_connections", "Open browser connections on this instance.", labels=["transport"]
        )
        for transport, count in self._connections.items():
            connections.add_metric([transport], count)
        yield connections
        channels, members = hub.local_channels()
        yield GaugeMetricFamily(
            "bfstream_channels",
            "Channels with at least one listener on this instance (tab| channels left out).",
            value=channels,
        )
        yield GaugeMetricFamily(
            "bfstream_channel_members",
            "Joins on this instance: a connection in three channels counts three (tab| channels left out).",
            value=members,
        )
        yield CounterMetricFamily(
            "bfstream_messages_published",
            "Messages this instance published to a channel: stream events, sendmessage, browser publishes.",
            value=hub.published,
        )
        yield CounterMetricFamily(
            "bfstream_deliveries",
            "Messages handed to this instance's listeners: one message to 100 listeners counts 100.",
            value=hub.delivered,
        )
        yield CounterMetricFamily(
            "bfstream_broker_errors",
            "Broker operations that failed (publish, subscribe, history, control requests).",
            value=hub.broker_errors + state.control.broker_errors,
        )
        yield CounterMetricFamily("bfstream_store_errors", "Database statements that failed.", value=state.store.errors)
        yield GaugeMetricFamily(
            "bfstream_broker_up", "1 while the broker is reachable, else 0.", value=1 if hub.broker.up else 0
        )


class ConnectionCounter:
    """ASGI middleware keeping the open connections of each transport: one place for both, and none
    of the transports' own code has to know about metrics."""

    def __init__(self, app: Any, connections: dict[str, int]) -> None:
        self._app = app
        self._connections = connections

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path")
        if scope["type"] == "websocket" and path == "/message/ws":
            transport = "websocket"
        elif scope["type"] == "http" and path == "/message/sse":
            transport = "sse"
        else:
            await self._app(scope, receive, send)
            return
        self._connections[transport] += 1
        try:
            await self._app(scope, receive, send)
        finally:
            self._connections[transport] -= 1
