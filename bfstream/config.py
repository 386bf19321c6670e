"""Settings: defaults, then a TOML file, then ``BFSTREAM_*`` environment variables, then CLI flags.

Nested keys use ``__`` in the environment: ``BFSTREAM_SERVICES__ECHO__DELAY_MS=5``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Timeouts(BaseModel):
    """Seconds. ``first_byte`` runs from sending the request to the first body byte of a stream;
    ``idle`` is the longest silence allowed between two reads after that; ``request`` bounds a
    whole non-streaming call, whose headers only arrive once the model has finished."""

    model_config = ConfigDict(extra="forbid")

    connect: float = Field(10.0, gt=0)
    first_byte: float = Field(60.0, gt=0)
    idle: float = Field(60.0, gt=0)
    request: float = Field(600.0, gt=0)


class ServiceConfig(BaseModel):
    """One LLM service. ``kind`` picks the wire format; any number of services may share one
    (e.g. ``[services.ollama] kind = "openai"``). A base URL only ever comes from here."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["openai", "openai-responses", "anthropic", "gemini", "echo"] = "openai"
    enabled: bool = True
    base_url: str | None = None
    # Used when a request brings no key of its own (local servers, a shared team key).
    api_key: str | None = Field(None, repr=False)
    headers: dict[str, str] = Field(default_factory=dict)
    # OpenAI sends the usage chunk only when asked; some compatible servers reject the field.
    stream_options: bool = True
    # Anthropic requires max_tokens; this is sent when the payload has none.
    max_tokens: int = Field(4096, gt=0)
    # Merge deltas that arrive within this many milliseconds into one event (0: off).
    coalesce_ms: float = Field(0.0, ge=0)
    # Connect errors, 429 and 5xx before any output are retried this many times.
    retries: int = Field(2, ge=0)
    # Longest line of a streamed answer, in characters; past it the stream fails (a few MB: a
    # base64 image in one event fits, a runaway line does not).
    max_line: int = Field(4 * 1024 * 1024, gt=0)
    # echo only: pause before each word, in milliseconds.
    delay_ms: float = Field(20.0, ge=0)
    timeouts: Timeouts = Timeouts()


class StreamSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_per_app: int = Field(50, gt=0)  # running streams per app; more get 429
    max_duration: float = Field(600.0, gt=0)  # seconds before a stream is ended with an error
    drain_seconds: float = Field(20.0, ge=0)  # on SIGTERM, how long running streams may finish
    retry_max_wait: float = Field(30.0, ge=0)  # longest Retry-After honoured between attempts
    # Open connections to providers, all hosts together: each running stream holds one. A stream
    # waiting for one would time out, so this is sized for the most streams an instance runs.
    provider_connections: int = Field(10_000, gt=0)
    # Every stream keeps a log of its events apart from channel history, for log_ttl seconds after
    # its last event, so a page joining late gets the whole answer however long it is. Past
    # log_bytes (of JSON) the oldest events are folded into one snapshot event, never dropped. At
    # least 10 s: a crashed instance's streams are ended from their logs, and its death takes up to
    # LEASE_TTL + RENEW_EVERY (6.5 s) to notice.
    log_ttl: float = Field(3600.0, ge=10)
    log_bytes: int = Field(4 * 1024 * 1024, ge=4096)


class MessagingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Each channel keeps its last history_size messages for history_ttl seconds, for recovery, and
    # at most history_bytes of them (UTF-8), so big messages cannot make one channel hold gigabytes.
    history_size: int = Field(1000, ge=0)
    history_bytes: int = Field(1024 * 1024, ge=0)
    history_ttl: float = Field(600.0, gt=0)
    # Frames waiting for one connection, and the bytes they hold (a frame's size in memory); a client
    # that falls this far behind is disconnected. One frame bigger than send_queue_bytes still goes
    # alone. The default holds a channel's whole history (history_bytes) eight times over.
    send_queue: int = Field(1024, gt=0)
    send_queue_bytes: int = Field(8 * 1024 * 1024, gt=0)
    # Channels one connection may join, and one request (sendmessage, a stream) may name.
    max_channels: int = Field(100, gt=0)
    max_message_bytes: int = Field(64 * 1024, gt=0)
    # A bigger WebSocket frame from a browser closes its connection with 1009 (message too big).
    max_frame_bytes: int = Field(256 * 1024, gt=0)
    # What one connection's frames may cost the server: beyond read_burst bytes at once, its frames
    # are read at read_rate bytes a second (the client is slowed by TCP, nothing is refused), so no
    # connection takes the event loop from the others. A frame counts 64 bytes more than its length.
    read_rate: float = Field(1024 * 1024, gt=0)
    read_burst: int = Field(1024 * 1024, gt=0)
    # Browser publishes per connection: a token bucket refilling `publish_rate` per second.
    publish_rate: float = Field(10.0, gt=0)
    publish_burst: int = Field(20, gt=0)
    # WebSocket pings go out after this much silence; no pong within the same time drops the connection.
    ping_interval: float = Field(20.0, gt=0)
    sse_keepalive: float = Field(15.0, gt=0)
    # permessage-deflate compresses every frame once per connection: a third of the server's CPU at
    # 1,000 listeners (bench/fanout.py) for frames of a few dozen bytes. Off unless bandwidth matters more.
    compression: bool = False
    # Frames written straight to uvicorn's transport, encoded once per message however many listen:
    # half of what a delivery costs (docs/benchmarks.md). Off, they go through the ASGI send, as with
    # any other server; only for comparing the two, or should a uvicorn release break the direct path.
    direct_writes: bool = True
    # With a shared broker, a dead instance's connections leave the listings within this many seconds.
    presence_ttl: float = Field(15.0, gt=0)
    token_ttl: int = Field(3600, gt=0)
    max_token_ttl: int = Field(7 * 24 * 3600, gt=0)


class Rate(BaseModel):
    """A token bucket: ``burst`` calls at once, then ``rate`` per second."""

    model_config = ConfigDict(extra="forbid")

    rate: float = Field(gt=0)
    burst: int = Field(gt=0)


class LimitSettings(BaseModel):
    """What one app, or one client address, may take; past it calls get 429 with Retry-After.
    With a shared broker each limit holds for the whole fleet, not per instance."""

    model_config = ConfigDict(extra="forbid")

    # Per app: /stream/create and /llm/query together, streaming or not.
    streams: Rate = Rate(rate=10, burst=50)
    # Per app: /message/sendmessage calls.
    messages: Rate = Rate(rate=100, burst=200)
    # Per app, all its browsers together (each connection also has messaging.publish_rate).
    publishes: Rate = Rate(rate=100, burst=200)
    # Request body bytes per client address, on each instance: parsing JSON costs the event loop
    # about 40 ns a byte, so this bounds what one address can take from everyone else's streams.
    body_bytes_per_address: Rate = Rate(rate=2 * 1024 * 1024, burst=24 * 1024 * 1024)
    # Open WebSocket and SSE connections, per app and per client address (behind a proxy, set
    # FORWARDED_ALLOW_IPS so the address is the browser's, not the proxy's).
    connections_per_app: int = Field(10_000, gt=0)
    connections_per_address: int = Field(1_000, gt=0)
    # Sockets one client address may hold open on each server process, counted from the connect,
    # before any request is read (plain HTTP and SSE; a WebSocket leaves this count at its upgrade,
    # for connections_per_address): past it a new socket gets 429 and is closed. None means
    # connections_per_address + 100, room for plain requests beside its SSE connections. A peer
    # trusted as a proxy (FORWARDED_ALLOW_IPS) is not counted: its sockets carry many clients.
    sockets_per_address: int | None = Field(None, gt=0)
    # Seconds a request's headers may take to arrive, from the socket's connect or the request's
    # first byte; past it the socket gets 408 and is closed (slow-header attacks, "slowloris").
    header_timeout: float = Field(10.0, gt=0)
    # Bytes a request's line and headers may take; past it the socket gets 431 and is closed.
    # httptools sets no bound of its own, so a 64 MB header was taken whole into memory. nginx
    # allows 32 KB by default, as here: cookies and tokens fit, a flood does not.
    max_header_bytes: int = Field(32 * 1024, ge=1024)

    def socket_limit(self) -> int:
        """``sockets_per_address``, or what it follows when unset."""
        return self.sockets_per_address or self.connections_per_address + 100


class ToolSettings(BaseModel):
    """The tool loop (docs/tools.md): frontend ``ui_*`` tools answered by a page, backend tools and
    listen/receive publishes by the app's webhook."""

    model_config = ConfigDict(extra="forbid")

    # Seconds a page has to answer a ui_* call (the reference's 90 s); a request may ask for another
    # within [1, max_timeout] with "toolTimeout".
    timeout: float = Field(90.0, gt=0)
    max_timeout: float = Field(600.0, gt=0)
    # Model turns that end in tool calls, per stream; past it the stream ends with finish_reason tool_calls.
    max_rounds: int = Field(8, ge=1)
    # A webhook call (a backend tool, a delivery) that takes longer fails.
    webhook_timeout: float = Field(30.0, gt=0)
    # Deliveries of browser publishes (listen/receive channels): tries in all, and how many may
    # wait per instance; past that the oldest are dropped (and counted), never the publisher slowed.
    delivery_attempts: int = Field(5, ge=1)
    delivery_queue: int = Field(10_000, gt=0)
    # Webhook URLs on loopback, private or link-local addresses are refused unless this is on (a
    # back end on the same host or network, tests).
    allow_private_webhooks: bool = False


class ImageSettings(BaseModel):
    """Image URLs bfstream fetches itself, for providers that take images only as bytes (Gemini):
    each is inlined as base64 before the first turn, or the request is refused with 400."""

    model_config = ConfigDict(extra="forbid")

    # One image's bytes; Gemini takes about 20 MB of inline data in one request, base64 included.
    max_bytes: int = Field(10 * 1024 * 1024, gt=0)
    # Seconds for one image, redirects and all; a request's images are fetched at once.
    timeout: float = Field(10.0, gt=0)
    # Image URLs one request may hold: what it may make this instance fetch and keep in memory.
    max_count: int = Field(8, gt=0)
    max_redirects: int = Field(5, ge=0)
    # Loopback, private and link-local addresses are refused unless this is on. Apart from
    # allow_private_webhooks: a webhook URL is the app owner's, an image URL comes in any request,
    # often from the app's users, and must not reach inside the network because a back end did.
    allow_private: bool = False


class DemoSettings(BaseModel):
    """The demo chat page at /demo (``bfstream serve --demo``). It streams from ``service``, echo
    unless the config names another (and then ``model``); whoever reaches the page can use it."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    service: str = "echo"
    model: str | None = None


def default_data_dir() -> Path:
    """The user's data directory on this platform, never the current one: every command then finds
    the same database whatever directory it is run from. One path does not need platformdirs."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        xdg = os.environ.get("XDG_DATA_HOME", "")
        base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"  # the spec ignores relative
    return base / "bfstream"


_DEFAULT_SERVICES: dict[str, dict[str, Any]] = {
    "openai": {"kind": "openai", "base_url": "https://api.openai.com/v1"},
    "openai-responses": {"kind": "openai-responses", "base_url": "https://api.openai.com/v1"},
    "anthropic": {"kind": "anthropic", "base_url": "https://api.anthropic.com"},
    "gemini": {"kind": "gemini", "base_url": "https://generativelanguage.googleapis.com"},
    "echo": {"kind": "echo"},
}

# The variables the providers' own SDKs read; honouring them lets users point bfstream at a proxy
# or a compatible server the same way they already do. They win over the config file.
_BASE_URL_ENV = {
    "openai": "OPENAI_BASE_URL",
    "openai-responses": "OPENAI_BASE_URL",
    "anthropic": "ANTHROPIC_BASE_URL",
    "gemini": "GEMINI_BASE_URL",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BFSTREAM_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path = Field(default_factory=default_data_dir)  # BFSTREAM_DATA_DIR, --data-dir
    # Several instances behind a load balancer share a broker and a database (docs/deployment.md):
    # "redis://host:6379/0" and "postgresql://user@host/db". The defaults need no service at all.
    broker_url: str = Field("memory://", pattern=r"^(memory://|rediss?://)")
    # Keys in a shared Redis start with this, so several fleets (or test runs) can share one server.
    broker_prefix: str = Field("bfstream", min_length=1, pattern=r"^[^\s]+$")
    database_url: str | None = Field(None, pattern=r"^(sqlite:///|postgres(ql)?://)")  # None: SQLite in data_dir
    # This instance's data center, the key /message/allusers groups connections under (never "_total",
    # the key of the sum: names start with a letter or digit).
    datacenter: str = Field("local", max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # Create an app on first start so a fresh install can be tried at once.
    create_first_app: bool = True
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    messaging: MessagingSettings = MessagingSettings()
    streams: StreamSettings = StreamSettings()
    limits: LimitSettings = LimitSettings()
    tools: ToolSettings = ToolSettings()
    images: ImageSettings = ImageSettings()
    demo: DemoSettings = DemoSettings()
    # Signs connection tokens. Set the same value on every instance of a fleet; when unset, a key
    # is made on first start and kept in the data directory.
    token_secret: str | None = Field(None, min_length=16)
    # Encrypts the provider keys apps keep on the server (bfstream apps credentials; docs/security.md):
    # 32 characters or more, the same on every instance of a fleet, required with PostgreSQL. Unset
    # on SQLite, a random key is made on first use and kept in the data directory (credentials.key).
    credentials_key: str | None = Field(None, min_length=32, repr=False)
    # Keys replaced by credentials_key: stored keys they sealed still open, until stored again.
    credentials_previous_keys: list[str] = Field(default_factory=list, repr=False)
    # GET /metrics (Prometheus) answers only requests bearing it (Authorization: Bearer ...); unset: 404.
    metrics_token: str | None = Field(None, min_length=16, repr=False)
    # Turns on the streams dashboard at /admin, for those who bring it (BFSTREAM_ADMIN_TOKEN).
    admin_token: str | None = Field(None, min_length=16, repr=False)
    # HTTPS and WSS directly, without a proxy in front: both paths (PEM files), or neither.
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    # Origins whose pages may call the API from the browser (the stop endpoint, SSE). Empty: none.
    # Each app may narrow this further (bfstream apps update APP --origins ...).
    cors_origins: list[str] = Field(default_factory=lambda: ["*"])
    services: dict[str, ServiceConfig] = Field(default_factory=dict)

    @field_validator("broker_url", "database_url")
    @classmethod
    def _readable_url(cls, value: str | None) -> str | None:
        """A URL whose authority cannot be read (a password's ``/`` not percent-encoded ends it early,
        and the rest is taken for a port) is refused here, in one line that quotes none of it, rather
        than as a traceback, or an error quoting the password, when the connection is opened."""
        if value is not None and "://" in value:
            try:
                _ = urlsplit(value).port  # reading it is the check
            except ValueError:
                raise ValueError(
                    "the URL cannot be read: percent-encode a password's /, :, @, # and + (%2F, %3A, %40, %23, %2B)"
                ) from None
        return value

    @field_validator("services", mode="before")
    @classmethod
    def _merge_default_services(cls, value: Any) -> Any:
        """A ``[services.openai]`` table changes only the keys it names, and built-ins never vanish."""
        given = dict(value or {})
        merged: dict[str, Any] = {}
        for name, default in _DEFAULT_SERVICES.items():
            override = given.pop(name, {})
            if isinstance(override, BaseModel):
                override = override.model_dump(exclude_unset=True)
            merged[name] = {**default, **override} if isinstance(override, dict) else override
        for name, conf in given.items():
            merged[name.lower()] = conf
        for name, env in _BASE_URL_ENV.items():
            if os.environ.get(env) and isinstance(merged.get(name), dict):
                merged[name] = {**merged[name], "base_url": os.environ[env]}
        return merged

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @model_validator(mode="after")
    def _tls_needs_both_files(self) -> Settings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile go together: set both, or neither")
        return self

    def enabled_services(self) -> dict[str, ServiceConfig]:
        return {name: conf for name, conf in sorted(self.services.items()) if conf.enabled}


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings; ``config_file`` (or ``BFSTREAM_CONFIG``) names the TOML file, if any."""
    path = config_file or (Path(os.environ["BFSTREAM_CONFIG"]) if os.environ.get("BFSTREAM_CONFIG") else None)
    cls: type[Settings] = Settings
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        # The TOML source reads its path from the class's config, so bind it on a throwaway subclass.
        cls = type("FileSettings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": path}})
    return cls(**{k: v for k, v in overrides.items() if v is not None})
