"""Provider adapters, one module per wire format, each with ``stream_chat`` and ``complete``."""

from __future__ import annotations

from bfstream.providers import anthropic, echo, gemini, openai, openai_responses
from bfstream.providers.events import Adapter
from bfstream.providers.gemini_payload import fetched_by_bfstream

ADAPTERS: dict[str, Adapter] = {
    "openai": openai,
    "openai-responses": openai_responses,
    "anthropic": anthropic,
    "gemini": gemini,
    "echo": echo,
}

# Per kind, which http(s) image URLs its provider cannot read itself: a stream fetches those once,
# before its first turn, and its adapter gets base64 data URIs in their place (providers/images.py).
IMAGE_FETCHES = {"gemini": fetched_by_bfstream}
