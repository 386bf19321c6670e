"""Provider adapters, one module per wire format, each with ``stream_chat`` and ``complete``."""

from __future__ import annotations

from bfstream.providers import anthropic, echo, gemini, openai, openai_responses
from bfstream.providers.events import Adapter

ADAPTERS: dict[str, Adapter] = {
    "openai": openai,
    "openai-responses": openai_responses,
    "anthropic": anthropic,
    "gemini": gemini,
    "echo": echo,
}
