"""What every provider adapter yields, whatever its wire format.

An adapter module has two functions:

- ``stream_chat(request, client, service)``, an async generator: ``Started`` first (the provider
  accepted the request), then any number of ``Delta``, ``Reasoning``, ``Sources`` and
  ``ToolCalls``, then ``Finished`` exactly once. Failures are raised as ``ProviderError``, before
  ``Started`` (the request was refused) or after it (the stream broke, or ended without the
  provider's end marker); adapters never swallow them into events, so the runner has one place
  that turns them into the ``error`` + ``end`` pair the channels see.
- ``complete(request, client, service)``: the whole answer as an OpenAI ``chat.completion`` object.
  Where a streamed turn would end in ``ToolCalls`` with ``thinking``, its message carries those
  items under ``THINKING`` for the tool loop, which takes them out before the answer goes back.

Whatever the provider, ``Finished.reason`` uses OpenAI's words (``stop``, ``length``,
``tool_calls``, ``content_filter``) and ``Finished.usage`` is ``{prompt_tokens,
completion_tokens, total_tokens}`` or None.

Reasoning is the model's thinking as the provider shows it (Anthropic's thinking blocks, Gemini's
thought parts, a Responses reasoning summary, the ``reasoning_content`` of compatible servers). An
adapter asks the provider for it only when ``ChatRequest.include_reasoning`` is set (some refuse
the fields on models that do not reason) and may yield it whenever the provider sends it anyway:
the stream relays it only to a request that asked. ``Sources`` are what the answer cites (web
search results, grounding), each ``{"url", "title"?, "snippet"?}``, yielded as soon as known; the
stream sends each URL once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bfstream.text import repair

if TYPE_CHECKING:
    from bfstream.config import ServiceConfig
    from bfstream.providers.http import ProviderClient


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A provider payload with the caller's provider key taken out of it.

    The key travels beside the payload so that nothing which logs, stores or echoes the payload
    can carry it along. ``provider_args`` (``/llm/query``'s ``providerArgs``) are merged into the
    provider's own request after the payload is translated (``translation.with_provider_args``)."""

    payload: dict[str, Any]
    model: str
    api_key: str | None = field(default=None, repr=False)
    provider_args: dict[str, Any] | None = None
    include_reasoning: bool = False


THINKING = "bfstream_thinking"  # see ``complete`` above: never part of an answer a caller gets


@dataclass(frozen=True, slots=True)
class Started:
    model: str


@dataclass(frozen=True, slots=True)
class Delta:
    text: str


@dataclass(frozen=True, slots=True)
class Reasoning:
    """A piece of the model's thinking. ``redacted``: the provider withheld a block of it
    (Anthropic's ``redacted_thinking``); ``text`` is then empty."""

    text: str
    redacted: bool = False


@dataclass(frozen=True, slots=True)
class Sources:
    """What the answer cites, each ``{"url", "title"?, "snippet"?}`` with string values only."""

    sources: list[dict[str, str]]


def source_of(url: Any, title: Any = None, snippet: Any = None) -> dict[str, str] | None:
    """One source as ``Sources`` carries it, or None when ``url`` is not an http(s) URL (a page
    renders it as a link: nothing else may pass for one)."""
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        return None
    found = {"url": repair(url)}
    for key, value in (("title", title), ("snippet", snippet)):
        if isinstance(value, str) and value.strip():
            found[key] = repair(value)  # a provider's lone surrogate must not fail the channel's JSON
    return found


@dataclass(frozen=True, slots=True)
class ToolCall:
    """``extra``: what the provider needs back with the call on the next turn, as keys of an OpenAI
    ``tool_calls`` entry (Gemini's thought signature travels as ``extra_content``)."""

    id: str | None
    name: str
    arguments: str
    extra: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ToolCalls:
    """Complete calls only: emitted once their argument fragments have all arrived.

    ``thinking``: content blocks the provider requires back, unchanged and first, in the assistant
    turn that made the calls (Anthropic's signed ``thinking``/``redacted_thinking`` blocks, the
    Responses API's ``reasoning`` items)."""

    calls: list[ToolCall]
    thinking: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Finished:
    reason: str | None
    usage: dict[str, Any] | None = None


ProviderEvent = Started | Delta | Reasoning | Sources | ToolCalls | Finished


class Adapter(Protocol):
    """What each adapter module provides (the contract in this module's docstring)."""

    def stream_chat(
        self, request: ChatRequest, client: ProviderClient, service: ServiceConfig
    ) -> AsyncGenerator[ProviderEvent, None]: ...

    async def complete(self, request: ChatRequest, client: ProviderClient, service: ServiceConfig) -> Any: ...
