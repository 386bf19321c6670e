"""Provider adapters, one module per wire format, each with ``stream_chat`` and ``complete``."""

from __future__ import annotations

from types import ModuleType

from bfstream.providers import anthropic, echo, gemini, openai

ADAPTERS: dict[str, ModuleType] = {"openai": openai, "anthropic": anthropic, "gemini": gemini, "echo": echo}
