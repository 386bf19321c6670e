"""The one scrubber: every error body, error frame, stream record's error and log line passes here
on its way out, so no provider key, app key or connection token leaves the process in them.

Two nets. Keys in flight are replaced by value: a request's provider key (its own, or the one its
app keeps on the server: the key in use, ``ChatRequest.api_key``) is held (``hold``) for as long
as its stream runs, and the configured services' keys for the server's life, so even a
key of no known shape (a local server's "ollama-secret") is caught, quoted whole or in part of
an exception's text. Then shapes: app keys (``BFAPI_...``), the usual provider key forms
(``sk-...``, Google's ``AIza...``), the masked copies providers quote in their refusals
(``sk-test-****1234``), ``Bearer`` credentials and ``key=`` / ``token=`` in URLs.

The model's own answer is never scrubbed: it is the user's content, and altering it would corrupt
the very text a page shows. A key that reaches a prompt is the caller's to keep out. Nor is a key
shorter than ``MIN_SECRET`` characters matched by value anywhere: local servers are routinely given
keys such as ``ollama``, ``none`` or ``x``, and replacing those would rewrite ordinary words of
every log line and error text (``"inde***"``). A real secret is longer; the shapes still apply.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

MASK = "***"
MIN_SECRET = 16  # characters: shorter "keys" are placeholders that ordinary text is full of

_SHAPES = re.compile(
    r"""
      \bBFAPI_[A-Za-z0-9_-]{8,}                              # an app key
    | \bwhsec_[A-Za-z0-9_-]{8,}                              # an app's webhook signing secret
    | \bsk-[A-Za-z0-9_-]{12,}                                # OpenAI, Anthropic and their lookalikes
    | \bAIza[0-9A-Za-z_-]{20,}                               # a Google API key
    | \b(?:sk|key|api)[-_][A-Za-z0-9_-]*(?:\*+|\.{3}|…)[A-Za-z0-9_*.-]*   # a masked copy quoted in a refusal
    """,
    re.VERBOSE | re.IGNORECASE,
)
# The credential after a label that announces one; the label stays, so a log still says what was there.
_LABELLED = re.compile(
    r"""(\b(?:bearer|x-api-key:|x-goog-api-key:)\s*|[?&](?:key|token|apiKey)=)[^\s&"',;]+""", re.IGNORECASE
)

_held: Counter[str] = Counter()
_exact: re.Pattern[str] | None = None


def _rebuild() -> None:
    global _exact
    # Longest first, so a key that contains another is replaced whole.
    keys = sorted(_held, key=len, reverse=True)
    _exact = re.compile("|".join(map(re.escape, keys))) if keys else None


def hold(secret: str | None) -> Callable[[], None]:
    """Scrub ``secret`` by value until the returned function is called (once)."""
    if not secret or len(secret) < MIN_SECRET:  # too short to tell from ordinary text; shapes still apply
        return lambda: None
    _held[secret] += 1
    if _held[secret] == 1:
        _rebuild()
    released = False

    def release() -> None:
        nonlocal released
        if released:
            return
        released = True
        _held[secret] -= 1
        if _held[secret] <= 0:
            del _held[secret]
            _rebuild()

    return release


def scrub(text: str, *known: str | None) -> str:
    """``text`` with every secret it holds replaced by ``***``; ``known`` are more keys to remove."""
    for secret in known:
        if secret and len(secret) >= MIN_SECRET:
            text = text.replace(secret, MASK)
    if _exact is not None:
        text = _exact.sub(MASK, text)
    text = _SHAPES.sub(MASK, text)
    return _LABELLED.sub(lambda m: m.group(1) + MASK, text)


def scrub_json(value: Any, *known: str | None) -> Any:
    """Every string in a JSON value scrubbed (keys of objects too), the structure kept."""
    if isinstance(value, str):
        return scrub(value, *known)
    if isinstance(value, dict):
        return {scrub(str(k), *known): scrub_json(v, *known) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_json(v, *known) for v in value]
    return value


def without_key(error: Any, secret: str | None) -> Any:
    """An error body a provider answered with (a 200 that holds ``error`` and no answer, say), with
    the caller's own key replaced wherever it is quoted, and nothing else touched. Never for an
    answer: that is content, and a key it quotes is the caller's own text."""
    if not secret or len(secret) < MIN_SECRET:
        return error
    if isinstance(error, str):
        return error.replace(secret, MASK)
    if isinstance(error, dict):
        return {without_key(k, secret): without_key(v, secret) for k, v in error.items()}
    if isinstance(error, list):
        return [without_key(v, secret) for v in error]
    return error


class _ScrubbedRecord(logging.LogRecord):
    """A log record scrubbed when it is made, so every handler (console, file, a collector) gets
    the same clean text. Arguments are scrubbed one by one rather than formatted early, because
    uvicorn's access formatter reads them by position."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(self.msg, str):
            self.msg = scrub(self.msg)
        if isinstance(self.args, tuple):
            self.args = tuple(_scrub_argument(a) for a in self.args)
        elif isinstance(self.args, dict):
            self.args = {k: _scrub_argument(v) for k, v in self.args.items()}
        if self.exc_info and self.exc_info[0] is not None:
            self.exc_text = scrub(logging.Formatter().formatException(self.exc_info))


def _scrub_argument(value: Any) -> Any:
    if value is None or isinstance(value, int | float | bool):
        return value  # kept as they are, for %d and %.2f
    return scrub(value if isinstance(value, str) else str(value))


def install_log_scrubber() -> None:
    """Make every log record of the process a scrubbed one (idempotent)."""
    if logging.getLogRecordFactory() is not _ScrubbedRecord:
        logging.setLogRecordFactory(_ScrubbedRecord)
