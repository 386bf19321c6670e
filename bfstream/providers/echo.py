"""A provider that needs no key: it streams the last user message back, word by word.

It exists so that anyone can watch the product work end to end before buying a key, and so a
page can be built against a predictable stream.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncGenerator
from typing import Any

from bfstream.config import ServiceConfig
from bfstream.providers.events import ChatRequest, Delta, Finished, ProviderEvent, Started
from bfstream.providers.http import ProviderClient
from bfstream.providers.translation import text_of

MODEL = "echo"
_WORDS = re.compile(r"\S+\s*|\s+")


def _answer(payload: dict[str, Any]) -> str:
    messages = payload.get("messages") or []
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def _usage(payload: dict[str, Any], words: int) -> dict[str, int]:
    prompt = sum(
        len(_WORDS.findall(text_of(m.get("content")))) for m in payload.get("messages") or [] if isinstance(m, dict)
    )
    return {"prompt_tokens": prompt, "completion_tokens": words, "total_tokens": prompt + words}


async def stream_chat(
    request: ChatRequest, client: ProviderClient, service: ServiceConfig
) -> AsyncGenerator[ProviderEvent, None]:
    yield Started(model=MODEL)
    words = _WORDS.findall(_answer(request.payload))
    for word in words:
        await asyncio.sleep(service.delay_ms / 1000)
        yield Delta(word)
    yield Finished("stop", _usage(request.payload, len(words)))


async def complete(request: ChatRequest, client: ProviderClient, service: ServiceConfig) -> dict[str, Any]:
    """Shaped like OpenAI's chat.completion, so code written against echo works against OpenAI."""
    text = _answer(request.payload)
    return {
        "id": "chatcmpl-echo-" + secrets.token_hex(12),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(request.payload, len(_WORDS.findall(text))),
    }
