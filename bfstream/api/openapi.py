"""What the OpenAPI document says about requests is what the server enforces.

Rules fixed in code are annotations on the request models (the types below). Rules that depend on
the settings (which services are configured, ``messaging.max_channels``, ``messaging.max_token_ttl``)
are written into the document when it is built, from the settings the server runs with.

The annotations only describe: the checks themselves stay where they were (``channel_problem``, the
provider key check of ``/stream/create``...), with their own messages, and
``tests/api/test_openapi_fuzz.py`` holds the two to each other.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints

from bfstream.config import Settings
from bfstream.messaging.protocol import MAX_CHANNEL_LENGTH, PRIVATE_PREFIX

# --- fixed rules, as pydantic annotations ------------------------------------------------------

# ``channel_problem``: 1 to 200 characters, none of them a control character (C0, DEL or C1).
CHANNEL_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
CHANNEL_RULES: dict[str, Any] = {"minLength": 1, "maxLength": MAX_CHANNEL_LENGTH, "pattern": CHANNEL_PATTERN}
ChannelName = Annotated[
    str,
    StringConstraints(min_length=1),
    Field(json_schema_extra={"maxLength": MAX_CHANNEL_LENGTH, "pattern": CHANNEL_PATTERN}),
]
# The same, for a query parameter checked by the endpoint itself (with ``channel_problem``'s messages).
ChannelParameter = Annotated[str, Field(json_schema_extra=dict(CHANNEL_RULES))]
# Channels users are added to: never a connection's private ``tab|`` channel.
UserChannelName = Annotated[
    str,
    StringConstraints(min_length=1),
    Field(
        json_schema_extra={
            "maxLength": MAX_CHANNEL_LENGTH,
            "pattern": CHANNEL_PATTERN,
            "not": {"pattern": "^" + PRIVATE_PREFIX.replace("|", r"\|")},
        }
    ),
]

# App keys are ``BFAPI_`` and 32 random bytes in base64url (``store._new_key``). Any other string is
# answered 401, as a wrong key is: the pattern describes keys, the server does not pre-screen them.
APP_KEY_PATTERN = r"^BFAPI_[A-Za-z0-9_-]{43}$"
AppKey = Annotated[str, Field(description="The app's key (BFAPI_...).", json_schema_extra={"pattern": APP_KEY_PATTERN})]

# A provider key becomes an HTTP header: printable ASCII without spaces, at most 1024 characters.
PROVIDER_KEY_MAX = 1024
PROVIDER_KEY_PATTERN = r"^[!-~]+$"

# providerArgs may set any provider field but these: whether the answer streams (the relay reads it
# as a stream or not) and the conversation (the tool loop appends to it), in each provider's word.
RESERVED_PROVIDER_ARGS = frozenset({"stream", "messages", "contents"})

# --- rules from the settings --------------------------------------------------------------------

# What ``str.strip()`` removes (every character whose ``isspace()`` is true) and the characters
# ``str.lower()`` maps onto an ASCII letter besides its two cases: a service name is matched after
# ``.strip().lower()``, and the pattern says the same.
PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
LOWERS_TO_ASCII = {"k": "\u212a"}  # KELVIN SIGN


def _char_class(chars: str) -> str:
    """A regex character class of ``chars``, in ``\\uXXXX`` escapes, consecutive ones as ranges."""
    codes = sorted(map(ord, chars))
    runs: list[list[int]] = []
    for code in codes:
        if runs and code == runs[-1][1] + 1:
            runs[-1][1] = code
        else:
            runs.append([code, code])
    parts = (f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in runs)
    return "[" + "".join(parts) + "]"


# Some character that ``str.strip()`` keeps: what a required name needs (an actionName of spaces is none).
NOT_BLANK = "[^" + _char_class(PY_WHITESPACE)[1:]


def service_pattern(names: list[str]) -> str:
    """Any of ``names`` in any case, with any whitespace around it (as ``.strip().lower()`` reads it)."""

    def letter(c: str) -> str:
        if "a" <= c <= "z":
            return "[" + c + c.upper() + LOWERS_TO_ASCII.get(c, "") + "]"
        if c.isascii() and (c.isalnum() or c in "_-"):
            return c
        return f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else c

    space = _char_class(PY_WHITESPACE) + "*"
    alternatives = "|".join("".join(letter(c) for c in name) for name in names)
    return f"^{space}({alternatives}){space}$"


def _service_is(names: list[str], top_level: bool = True) -> dict[str, Any]:
    """The bodies whose service is one of ``names``: ``service`` (CreateStream only), or when it is
    absent or null ``payload.provider``, or when that is too, openai."""
    named = {"type": "string", "pattern": service_pattern(names)}
    no_service = {"service": {"type": "null"}} if top_level else {}  # absent or null
    branches: list[dict[str, Any]] = [
        {"properties": {**no_service, "payload": {"required": ["provider"], "properties": {"provider": named}}}},
    ]
    if top_level:
        branches.insert(0, {"required": ["service"], "properties": {"service": named}})
    if "openai" in names:
        branches.append({"properties": {**no_service, "payload": {"properties": {"provider": {"type": "null"}}}}})
    return {"anyOf": branches}


# A tool offered to the model whose name starts with ui_ (flat, or OpenAI's {"function": {...}}).
_FRONTEND_TOOL = {
    "type": "object",
    "anyOf": [
        {"required": ["name"], "properties": {"name": {"type": "string", "pattern": "^ui_"}}},
        {
            "required": ["function"],
            "properties": {
                "function": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string", "pattern": "^ui_"}},
                }
            },
        },
    ],
}


def _body_rules(services: dict[str, Any], max_channels: int, top_level: bool) -> list[dict[str, Any]]:
    """What CreateStream and LlmQuery share: a configured service, a model unless echo, and the
    streaming rules (channels and an action to stream to; ui_* tools only when streaming)."""
    names = list(services)
    echo = [name for name, service in services.items() if service.kind == "echo"]
    not_streaming = {"properties": {"payload": {"required": ["stream"], "properties": {"stream": {"const": False}}}}}
    return [
        # A configured service, named by ``service`` or ``payload.provider``.
        _service_is(names, top_level),
        # Echo needs no model; every other service does.
        {"if": _service_is(echo, top_level), "else": _needs_model()} if echo else _needs_model(),
        {
            "if": not_streaming,
            # Nothing can answer a ui_* tool without a stream to a page.
            "then": {
                "properties": {
                    "payload": {
                        "properties": {"tools": {"anyOf": [{"type": "null"}, {"not": {"contains": _FRONTEND_TOOL}}]}}
                    }
                }
            },
            # A stream needs channels and a named action; a ``stream: false`` call needs neither.
            "else": {
                "required": ["channels", "actionName"],
                "properties": {
                    # Names are checked only for a stream: a stream:false call does not use them.
                    "channels": {"minItems": 1, "maxItems": max_channels, "items": dict(CHANNEL_RULES)},
                    "actionName": {"type": "string", "minLength": 1},
                },
            },
        },
    ]


def _tool_timeout(schema: dict[str, Any], settings: Settings) -> None:
    for branch in schema["properties"]["toolTimeout"].get("anyOf", []):
        if branch.get("type") == "number":
            branch["minimum"], branch["maximum"] = 1, settings.tools.max_timeout


def _example(echo: str) -> dict[str, Any]:
    """The README's first stream: the BetterForms example body, answered by the echo service."""
    return {
        "apiKey": "BFAPI_" + "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG",
        "channels": ["anonymous"],
        "actionName": "assistantReceiveResultsStream",
        "service": echo,
        "payload": {
            "apiKey": "sk-not-needed-for-echo",
            "stream": True,
            "model": "gpt-4-turbo-preview",
            "messages": [
                {"content": "You are a Chuck Norris Joke teller.", "role": "system"},
                {"content": "create a joke about software developers", "role": "user"},
            ],
        },
    }


def _needs_model() -> dict[str, Any]:
    model = {"type": "string", "minLength": 1}
    return {"properties": {"payload": {"required": ["model"], "properties": {"model": model}}}}


def describe(openapi: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Write into the document the rules that come from ``settings``, and the health answer."""
    schemas = openapi.get("components", {}).get("schemas", {})
    services = settings.enabled_services()
    max_channels = settings.messaging.max_channels

    names = list(services)
    echo = [name for name, service in services.items() if service.kind == "echo"]
    create = schemas.get("CreateStream")
    if create is not None:
        service = create["properties"]["service"]
        service["anyOf"] = [{"type": "string", "pattern": service_pattern(names)}, {"type": "null"}]
        service["description"] = f"One of {', '.join(names)}, in any case (default: payload.provider, else openai)."
        create["allOf"] = _body_rules(services, max_channels, top_level=True)
        _tool_timeout(create, settings)
        if echo:
            create["examples"] = [_example(echo[0])]

    query = schemas.get("LlmQuery")
    if query is not None:
        query["allOf"] = _body_rules(services, max_channels, top_level=False)
        _tool_timeout(query, settings)
        payload = schemas.get("QueryPayload")
        if payload is not None:
            provider = payload["properties"]["provider"]
            provider["anyOf"] = [{"type": "string", "pattern": service_pattern(names)}, {"type": "null"}]
            for branch in payload["properties"]["providerArgs"].get("anyOf", []):
                if branch.get("type") == "object":
                    branch["propertyNames"] = {"not": {"enum": sorted(RESERVED_PROVIDER_ARGS)}}

    answer = schemas.get("ToolResponse")
    if answer is not None:
        # The result nested, or its fields flat as the reference's llmToolCallResponse sends them.
        result = {"type": "object", "required": ["success", "message"], "properties": _RESULT_FIELDS}
        answer["anyOf"] = [
            {"required": ["result"], "properties": {"result": result}},
            {"required": ["success", "message"], "properties": {"result": {"type": "null"}, **_RESULT_FIELDS}},
        ]

    send = schemas.get("SendMessage")
    if send is not None:
        send["properties"]["channels"]["maxItems"] = max_channels

    token = schemas.get("TokenRequest")
    if token is not None:
        for branch in token["properties"]["ttl"].get("anyOf", []):
            if branch.get("type") == "integer":
                branch["maximum"] = settings.messaging.max_token_ttl

    sse = openapi.get("paths", {}).get("/message/sse", {}).get("get")
    if sse is not None:
        for parameter in sse.get("parameters", []):
            if parameter["name"] == "channel":
                parameter["schema"]["maxItems"] = max_channels

    health = openapi.get("paths", {}).get("/healthz", {}).get("get")
    if health is not None:
        for status in ("200", "503"):
            health["responses"].setdefault(status, {})["content"] = {"application/json": {"schema": _HEALTH}}
    return openapi


_RESULT_FIELDS = {"success": {"type": "boolean"}, "message": {"type": "string"}}

# ``GET /healthz``, whatever its status: 503 says draining or broker_down.
_HEALTH = {
    "type": "object",
    "required": ["status", "broker", "version"],
    "properties": {
        "status": {"enum": ["ok", "draining", "broker_down"]},
        "broker": {"enum": ["up", "down"]},
        "version": {"type": "string"},
    },
}
