"""``AsyncClient``: the API from asyncio code (FastAPI, aiohttp, an async worker); every method of
``Client`` is here too, awaited."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
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


class AsyncClient:
    """A back end's client of one bfstream server, for one app (its API key). Close it when done
    (``await client.aclose()``), or use it in an ``async with`` block."""

    verify_webhook = staticmethod(verify_webhook)

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 120.0) -> None:
        self._api_key = api_key
        self._http = httpx.AsyncClient(**options(base_url, timeout))

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return f"AsyncClient({str(self._http.base_url)!r})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _calls.Call[T]) -> T:
        with translated():
            response = await self._http.request(call.method, call.path, json=call.body, headers=call.headers)
        return call.answer(response.status_code, response.headers, response.content)

    async def create(self, **fields: Unpack[CreateFields]) -> Started | Answer:
        """``POST /stream/create``: ``Started`` when streaming, the ``Answer`` with ``stream=False``."""
        return await self._send(_calls.create(self._api_key, fields))

    async def query(self, **fields: Unpack[QueryFields]) -> Started | Answer:
        """``POST /llm/query``: ``Started`` when streaming, the ``Answer`` with ``stream=False``."""
        return await self._send(_calls.query(self._api_key, fields))

    async def stop(self, stream_id: str) -> bool:
        """Stop a stream: True if it was running, False if it had ended or is unknown."""
        return await self._send(_calls.stop(stream_id))

    async def status(self, stream_id: str) -> StreamStatus:
        return await self._send(_calls.status(self._api_key, stream_id))

    async def send_message(self, channels: Channels, message: Mapping[str, Any]) -> None:
        """Publish a BetterForms message ``{"actions": [...], "model"?, "app"?}`` to the channels."""
        await self._send(_calls.send_message(self._api_key, channels, message))

    async def token(self, user_id: str, *, email: str | None = None, ttl: int | None = None) -> Token:
        return await self._send(_calls.token(self._api_key, user_id, email, ttl))

    async def add_user(self, user_id: str, channels: Channels, *, mode: ChannelMode = "ignore") -> None:
        await self._send(_calls.users(self._api_key, "/message/adduser", user_id, channels, mode))

    async def remove_user(self, user_id: str, channels: Channels) -> None:
        await self._send(_calls.users(self._api_key, "/message/removeuser", user_id, channels, None))

    def events(self, stream_id: str, *, offset: str = START) -> AsyncEventStream:
        """The stream's events from ``offset`` (the start by default) to its ``end``, as they come:
        ``async for event in client.events(stream_id)``."""
        return AsyncEventStream(self._http, stream_id, EventCursor(offset))


class AsyncEventStream:
    """An async iterator of one stream's events, ending after its ``end``. ``offset`` stands after
    the last event taken, to resume from. Close it (or use ``async with``) when leaving early."""

    def __init__(self, http: httpx.AsyncClient, stream_id: str, cursor: EventCursor) -> None:
        self._http, self._path, self._cursor = http, _calls.events_path(stream_id), cursor
        self._events = self._read()

    @property
    def offset(self) -> str:
        return self._cursor.offset

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._events

    async def __anext__(self) -> StreamEvent:
        return await anext(self._events)

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._events.aclose()

    async def _read(self) -> AsyncIterator[StreamEvent]:
        cursor = self._cursor
        with translated():
            while not cursor.done:
                async with self._http.stream("GET", self._path, params=cursor.params()) as response:
                    if response.status_code != 200:
                        raise api_error(response.status_code, response.headers, await response.aread())
                    async for line in response.aiter_lines():
                        for event in cursor.feed(line):
                            yield event
                            if cursor.done:
                                return
