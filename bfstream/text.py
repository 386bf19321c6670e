"""Text at the edges: nothing that UTF-8 cannot encode gets into bfstream.

Python strings can hold lone UTF-16 surrogates: JSON's ``"\\ud800"`` decodes to one, and a
provider that cuts an emoji's surrogate pair between two chunks sends one half in each. No UTF-8
encoder takes them, so one such string published to a channel used to break every listener's
connection when its frame was sent. Requests are refused (their bodies and frames are checked
here), and provider text is repaired: a pair split across deltas is joined, a lone half becomes
U+FFFD.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

# A lone surrogate can only come from a \u escape: raw UTF-8 cannot encode one, and undecodable
# bytes are refused before this. So text without such an escape needs no closer look.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def may_hold_surrogates(raw: str | bytes) -> bool:
    """Cheap test of undecoded JSON; False means its decoded strings are all valid Unicode."""
    pattern = _SURROGATE_ESCAPE_BYTES if isinstance(raw, bytes) else _SURROGATE_ESCAPE
    return pattern.search(raw) is not None  # type: ignore[arg-type]


def _valid(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def has_lone_surrogate(value: Any) -> bool:
    """Whether any string in decoded JSON (keys too) holds a lone surrogate."""
    if isinstance(value, str):
        return not _valid(value)
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_lone_surrogate(v) for v in value)
    return False


def repair(text: str) -> str:
    """Join the surrogate pairs a string holds as two halves, and replace lone halves with U+FFFD."""
    if _valid(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def repair_json(value: Any) -> Any:
    """``repair`` every string of decoded JSON, keys included."""
    if isinstance(value, str):
        return repair(value)
    if isinstance(value, dict):
        return {repair(k): repair_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [repair_json(v) for v in value]
    return value


def not_json(constant: str) -> Any:
    """``parse_constant`` for ``json.loads``: NaN and Infinity are Python's, not JSON's, and a frame
    that carried one on would be refused by every browser's ``JSON.parse``."""
    raise ValueError(f"{constant} is not JSON")


def provider_json(text: str | bytes) -> Any:
    """Parse what a provider sent. Its ``NaN``, ``Infinity`` and numbers past a double become null:
    refusing them would fail a whole answer over one odd number, and passing them on would put a
    frame no browser can parse into every listener's channel (or make a ``stream: false`` answer
    impossible to encode).

    Every chunk of every stream comes through here, so orjson reads it (0.7 µs for a typical
    chunk against the standard decoder's 2.1). What orjson refuses (NaN, Infinity, ``1e400``, a
    lone surrogate) or would round (it reads integers of 19 digits or more as floats) goes to the
    standard decoder, which keeps the rules above."""
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    if _TWENTY_DIGITS not in data.translate(_DIGITS_AS_ZERO):  # 0.6 µs; a regular expression took 3
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    # One decoder made once: json.loads with hooks would build a new one for every chunk.
    return _PROVIDER_DECODER.decode(data.decode("utf-8", "surrogatepass"))


_TWENTY_DIGITS = b"0" * 20  # past 2**64: orjson would read the integer as a float


def _finite_or_none(literal: str) -> float | None:
    value = float(literal)
    return None if math.isinf(value) else value


_PROVIDER_DECODER = json.JSONDecoder(parse_constant=lambda _: None, parse_float=_finite_or_none)


def finite_float(literal: str) -> float:
    """``parse_float`` for ``json.loads``: a number past the largest double (``1e400``) is valid JSON,
    but Python reads it as infinity and ``json.dumps`` writes that back as ``Infinity``, which no
    browser's ``JSON.parse`` takes: one such number in a message broke the frame for every listener."""
    value = float(literal)
    if math.isinf(value):
        raise ValueError(f"the number {literal[:24]}{'...' if len(literal) > 24 else ''} is out of range")
    return value


# Numbers that may be too large for a double: a three-digit exponent, or 309 digits in a row. The
# run of digits is found as a run of zeros once every digit is one (two C passes), because a regex
# for it tries every position and costs twenty times more on a body of numbers.
_BIG_EXPONENT = re.compile(rb"[eE]\+?[0-9]{3}")
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 309


def _may_overflow(body: bytes) -> bool:
    return _BIG_EXPONENT.search(body) is not None or _LONG_NUMBER in body.translate(_DIGITS_AS_ZERO)


def body_problem(body: bytes) -> tuple[str, str] | None:
    """Why a request body is not JSON text bfstream can carry on, as (message, error type), or None."""
    if json.detect_encoding(body) != "utf-8":  # json.loads would take UTF-16 and UTF-32 too
        return "The request body is not valid JSON: JSON is sent as UTF-8", "invalid_json"
    try:
        body.decode("utf-8")  # strictly: json.loads would take surrogates written as bytes (CESU-8)
    except UnicodeDecodeError:
        return "The request body is not valid JSON: it is not UTF-8", "invalid_json"
    if may_hold_surrogates(body) or b"NaN" in body or b"Infinity" in body or _may_overflow(body):
        try:
            decoded = json.loads(body, parse_constant=not_json, parse_float=finite_float)
        except ValueError as exc:
            return ("The request body is not valid JSON: " + str(exc).partition(":")[0]), "invalid_json"
        except RecursionError:
            return None  # the nesting check answers this one
        if has_lone_surrogate(decoded):
            return "The request body holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape)", "invalid_text"
    return None


class SurrogateJoiner:
    """Deltas of one stream: a high surrogate ending one is held back for the low half the next
    one should open with."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, text: str) -> str:
        text, self._held = self._held + text, ""
        if text and "\ud800" <= text[-1] <= "\udbff":
            text, self._held = text[:-1], text[-1]
        return repair(text)

    def flush(self) -> str:
        held, self._held = self._held, ""
        return repair(held)
