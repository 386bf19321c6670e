"""The checks of an app's FileMaker target, as ``bfstream apps update --filemaker`` sets it, and the
script parameters bfstream sends there.

The host is ``https://`` and a host name, optionally a port, and nothing else: bfstream adds the
Data API's paths itself. ``http://`` is refused but for a private address, when those are allowed
(``tools.allow_private_webhooks``: a server on the same machine or network), since the account's
password travels in every login's Authorization header.
"""

from __future__ import annotations

import unicodedata
from typing import Any
from urllib.parse import urlsplit

from bfstream.errors import ValidationFailed
from bfstream.webhooks import only_private, url_problem

MAX_NAME = 100  # FileMaker's own limit on the names of databases, layouts, scripts and accounts
MAX_PASSWORD = 1024


def _refused(field: str, why: str) -> ValidationFailed:
    return ValidationFailed(f"The FileMaker {field} cannot be used: {why}", details=[{"field": field, "message": why}])


async def check_host(value: str, allow_private: bool) -> str:
    """``scheme://host[:port]`` as it will be called, or ``ValidationFailed`` saying why not."""
    parts = urlsplit(value.strip())
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _refused("host", "give the server only, as https://fms.example.com: bfstream adds the Data API's path")
    if (why := await plain_http_problem(value, allow_private)) is not None:
        raise _refused("host", why)
    if (why := await url_problem(value, allow_private)) is not None:
        raise _refused("host", why)
    return f"{parts.scheme}://{parts.netloc.lower()}"


async def plain_http_problem(host: str, allow_private: bool) -> str | None:
    """Why the password may not go to ``host``, or None: over ``http://`` only to a host that
    resolves, now, to private addresses alone, with those allowed. Asked again at every login, as a
    name may resolve elsewhere later."""
    if urlsplit(host.strip()).scheme != "http" or (allow_private and await only_private(host)):
        return None
    return "it must be https://: the account's password is sent at every login (http:// only to a private address)"


def check_name(field: str, value: str | None) -> str:
    """A database, layout, account or script name: not empty, at most ``MAX_NAME`` characters, one
    line of printable characters."""
    name = (value or "").strip()
    if not name:
        raise _refused(field, "it is missing")
    if len(name) > MAX_NAME:
        raise _refused(field, f"at most {MAX_NAME} characters")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise _refused(field, "it holds control characters")
    return name


def check_password(value: str) -> str:
    """The password as read from standard input: its line ending dropped, nothing else."""
    password = value.removesuffix("\n").removesuffix("\r")
    if not password:
        raise _refused("password", "none on standard input: pipe it in, e.g. ... --account A < password.txt")
    if "\n" in password or len(password) > MAX_PASSWORD:
        raise _refused("password", f"one line of up to {MAX_PASSWORD} characters")
    return password


def tool_parameter(tool_call_id: str, name: str, arguments: Any, stream_id: str | None, metadata: Any) -> Any:
    """What a backend tool's script gets as its parameter (``Get ( ScriptParameter )``), as JSON text."""
    return {
        "toolCallId": tool_call_id,
        "name": name,
        "arguments": arguments,
        "streamId": stream_id,
        "metadata": metadata,
    }
