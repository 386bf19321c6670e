"""``Client``: the API from ordinary, blocking code (a script, a Django or Flask view, a worker)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

from bfstream.client import _calls
from bfstream.client._calls import Channels, CreateFields, QueryFields
from bfstream.client._errors import api_error
from bfstream.client._events import START, EventCursor
from bfstream.client._http import options, translated
from bfstream.client._types import Answer, ChannelMode, Started, StreamEvent, StreamStatus, Token
from bfstream.client._webhook import verify_webhook

T = TypeVar("T")


class Client:
    """A back end's client of one bfstream server, for one app (its API key). Close it when done, or
    use it in a ``with`` block; one client may serve many threads."""

    verify_webhook = staticmethod(verify_webhook)

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 120.0) -> None:
        self._api_key = api_key
        self._http = httpx.Client(**options(base_url, timeout))

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return f"Client({str(self._http.base_url)!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _calls.Call[T]) -> T:
        with translated():
            response = self._http.request(call.method, call.path, json=call.body, headers=call.headers)
        return call.answer(response.status_code, response.headers, response.content)

    def create(self, **fields: Unpack[CreateFields]) -> Started | Answer:
        """``POST /stream/create``: ``Started`` when streaming, the ``Answer`` with ``stream=False``."""
        return self._send(_calls.create(self._api_key, fields))

    def query(self, **fields: Unpack[QueryFields]) -> Started | Answer:
        """``POST /llm/query``: ``Started`` when streaming, the ``Answer`` with ``stream=False``."""
        return self._send(_calls.query(self._api_key, fields))

    def stop(self, stream_id: str) -> bool:
        """Stop a stream: True if it was running, False if it had ended or is unknown."""
        return self._send(_calls.stop(stream_id))

    def status(self, stream_id: str) -> StreamStatus:
        return self._send(_calls.status(self._api_key, stream_id))

    def send_message(self, channels: Channels, message: Mapping[str, Any]) -> None:
        """Publish a BetterForms message ``{"actions": [...], "model"?, "app"?}`` to the channels."""
        self._send(_calls.send_message(self._api_key, channels, message))

    def token(self, user_id: str, *, email: str | None = None, ttl: int | None = None) -> Token:
        return self._send(_calls.token(self._api_key, user_id, email, ttl))

    def add_user(self, user_id: str, channels: Channels, *, mode: ChannelMode = "ignore") -> None:
        self._send(_calls.users(self._api_key, "/message/adduser", user_id, channels, mode))

    def remove_user(self, user_id: str, channels: Channels) -> None:
        self._send(_calls.users(self._api_key, "/message/removeuser", user_id, channels, None))

    def events(self, stream_id: str, *, offset: str = START) -> EventStream:
        """The stream's events from ``offset`` (the start by default) to its ``end``, as they come."""
        return EventStream(self._http, stream_id, EventCursor(offset))


class EventStream:
    """An iterator of one stream's events, ending after its ``end``. ``offset`` stands after the last
    event taken, to resume from. Close it (or use ``with``) when leaving the loop early."""

    def __init__(self, http: httpx.Client, stream_id: str, cursor: EventCursor) -> None:
        self._http, self._path, self._cursor = http, _calls.events_path(stream_id), cursor
        self._events = self._read()

    @property
    def offset(self) -> str:
        return self._cursor.offset

    def __iter__(self) -> Iterator[StreamEvent]:
        return self._events

    def __next__(self) -> StreamEvent:
        return next(self._events)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._events.close()

    def _read(self) -> Iterator[StreamEvent]:
        cursor = self._cursor
        with translated():
            while not cursor.done:
                with self._http.stream("GET", self._path, params=cursor.params()) as response:
                    if response.status_code != 200:
                        raise api_error(response.status_code, response.headers, response.read())
                    for line in response.iter_lines():
                        for event in cursor.feed(line):
                            yield event
                            if cursor.done:
                                return
