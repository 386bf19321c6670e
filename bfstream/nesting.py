"""How deep JSON may nest in a request body or a frame.

Python's JSON decoder recurses once per level: a body of a hundred thousand ``[`` ends in a
RecursionError, which no handler expected (a 500, a connection closed without a word). No
BetterForms message needs more than a few levels, so past ``MAX_DEPTH`` the input is refused.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64


def nesting_problem(raw: str | bytes, max_depth: int = MAX_DEPTH) -> str | None:
    """Why ``raw`` nests too deeply, or None. Cheap for almost every input: JSON cannot nest deeper
    than it has brackets, so only inputs with more than ``max_depth`` of them are decoded here."""
    opening = (b"[", b"{") if isinstance(raw, bytes) else ("[", "{")
    if raw.count(opening[0]) + raw.count(opening[1]) <= max_depth:  # type: ignore[arg-type]
        return None
    too_deep = f"JSON may nest at most {max_depth} levels deep"
    try:
        decoded = json.loads(raw)
    except RecursionError:
        return too_deep
    except ValueError:
        return None  # not JSON at all: whoever reads it says so
    return too_deep if _depth(decoded) > max_depth else None


def _depth(value: Any) -> int:
    """Without recursion, so that the check cannot fail the way the decoder does."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            todo.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest
