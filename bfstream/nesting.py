"""How deep JSON may nest in a request body or a frame.

Python's JSON decoder recurses once per level: a body of a hundred thousand ``[`` ends in a
RecursionError, which no handler expected (a 500, a connection closed without a word). No
BetterForms message needs more than a few levels, so past ``MAX_DEPTH`` the input is refused.

The depth is read off the raw text, at C speed, before anything decodes it: strings are cut out
(a bracket in a string is text), the brackets that remain are the shape, and the shape's depth is
its deepest running count of open brackets. Walking the decoded value instead cost ten times the
parse for a body of millions of empty objects, on the event loop.
"""

from __future__ import annotations

import re
from itertools import accumulate

MAX_DEPTH = 64

_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"')  # possessive: linear, whatever the input
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN_CLOSE = bytes.maketrans(b"[]", b"{}")
_SIGNS = bytes.maketrans(b"{}", b"\x01\xff")  # +1 and -1 as signed bytes
_LEAF_PASSES = 4


def nesting_problem(raw: str | bytes, max_depth: int = MAX_DEPTH) -> str | None:
    """Why ``raw`` nests too deeply, or None. Cheap for almost every input: JSON cannot nest deeper
    than it has brackets, so only inputs with more than ``max_depth`` of them are looked at."""
    opening = (b"[", b"{") if isinstance(raw, bytes) else ("[", "{")
    if raw.count(opening[0]) + raw.count(opening[1]) <= max_depth:  # type: ignore[arg-type]
        return None
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    if depth(data) > max_depth:
        return f"JSON may nest at most {max_depth} levels deep"
    return None  # not too deep, or not JSON at all: whoever reads it says so


def depth(data: bytes) -> int:
    """How deep the brackets of ``data`` nest, strings aside.

    Dropping every empty container (``{}`` once both kinds are one) lowers every container's
    height by exactly one, so a few such passes first make the common case, millions of tiny
    containers, nearly free; the running count over what is left gives the rest."""
    shape = _STRING.sub(b"", data).translate(_OPEN_CLOSE, _NOT_BRACKET)
    removed = 0
    while shape and removed < _LEAF_PASSES:
        shape, removed = shape.replace(b"{}", b""), removed + 1
    if not shape:
        return removed  # it emptied on this pass: exactly this deep
    return removed + max(0, max(accumulate(memoryview(shape.translate(_SIGNS)).cast("b"))))
