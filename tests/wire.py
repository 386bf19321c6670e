"""The wire schema (``bfstream/static/protocol.json``) as the tests use it: every frame a test
client receives is checked against it (``WSClient.recv``, ``SSEClient.next`` in conftest.py)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator


@cache
def schema() -> dict[str, Any]:
    return json.loads((resources.files("bfstream") / "static" / "protocol.json").read_text())


@cache
def _validator(definition: str) -> Draft202012Validator:
    whole = schema()
    return Draft202012Validator({"$ref": f"#/$defs/{definition}", "$defs": whole["$defs"]})


def problems(value: Any, definition: str) -> list[str]:
    """Why ``value`` is not a ``definition`` of the schema (``serverFrame``, ``clientFrame``, ...)."""
    found = sorted(_validator(definition).iter_errors(value), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(frame)'}: {e.message[:200]}" for e in found]


def check_server_frame(frame: Any) -> None:
    if errors := problems(frame, "serverFrame"):
        raise AssertionError(f"a frame outside the wire schema: {json.dumps(frame)[:300]}\n" + "\n".join(errors[:5]))
