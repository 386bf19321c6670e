"""What the adapters that rewrite an OpenAI-style payload for another provider share.

A payload that cannot be translated is refused before anything is sent, with every problem in
one 400, so a caller fixes them all at once instead of one per round trip.
"""

from __future__ import annotations

import json
import re
from typing import Any

from bfstream.errors import ValidationFailed

_DATA_URI = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)(?:;[^,;]*)*?;base64,(?P<data>.*)", re.DOTALL)


class Problems:
    """Every untranslatable field, with its path under ``payload``."""

    def __init__(self, provider: str) -> None:
        self._provider = provider
        self.items: list[dict[str, str]] = []

    def add(self, field: str, message: str) -> None:
        path = field if field.startswith("payload.") else f"payload.{field}"
        self.items.append({"field": path, "message": message})

    def raise_if_any(self) -> None:
        if self.items:
            raise ValidationFailed(f"The payload cannot be translated for {self._provider}", details=self.items)


def data_uri(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a ``data:<type>;base64,<data>`` URI, else None."""
    match = _DATA_URI.fullmatch(url.strip())
    return (match["mime"].lower(), match["data"].strip()) if match else None


def tool_arguments(raw: Any, where: str, problems: Problems) -> dict[str, Any]:
    """OpenAI carries a tool call's arguments as a JSON string; other providers want the object."""
    if isinstance(raw, dict):
        return raw
    if raw is None or raw == "":
        return {}
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        problems.add(where, "tool call arguments must be a JSON object")
        return {}
    return parsed


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the ``text`` parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""
