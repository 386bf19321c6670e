"""What the adapters that rewrite an OpenAI-style payload for another provider share.

A payload that cannot be translated is refused before anything is sent, with every problem in
one 400, so a caller fixes them all at once instead of one per round trip.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


def each_object(items: list[Any], where: str, problems: Problems, noun: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, item) for each object of a payload's list (messages, content parts); anything else is a problem."""
    for i, item in enumerate(items):
        if isinstance(item, dict):
            yield f"{where}.{i}", item
        else:
            problems.add(f"{where}.{i}", f"{noun} must be an object")


def each_message(messages: list[Any], problems: Problems) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, message) for each message a translator can read. A message in Gemini's own shape
    (``parts``) or a user message with nothing in it is a problem: dropped without a word, the model
    would answer another conversation than the one sent."""
    for where, message in each_object(messages, "payload.messages", problems, "a message"):
        if "parts" in message:
            problems.add(f"{where}.parts", "parts is Gemini's own message shape: write content, or send it to gemini")
        elif message.get("role") == "user" and message.get("content") in (None, "", []):
            problems.add(f"{where}.content", "a user message needs content")
        else:
            yield where, message


def data_uri(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a ``data:<type>;base64,<data>`` URI, else None (data that is not
    base64 too: the provider would refuse it after the stream was set up)."""
    match = _DATA_URI.fullmatch(url.strip())
    if match is None:
        return None
    data = "".join(match["data"].split())
    try:
        base64.b64decode(data, validate=True)
    except ValueError:
        return None
    return match["mime"].lower(), data


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


class LegacyCalls:
    """The deprecated functions API has no call ids; Anthropic and the Responses API pair a call and
    its result by id.

    Each assistant ``function_call`` gets a made-up id (``prefix`` and a count), and the next
    ``function`` message naming that function answers it."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._open: list[tuple[str, str]] = []
        self._count = 0

    def call(self, name: str) -> str:
        self._count += 1
        call_id = f"{self._prefix}{self._count}"
        self._open.append((call_id, name))
        return call_id

    def answer(self, name: Any) -> str | None:
        for i, (call_id, called) in enumerate(self._open):
            if called == name:
                del self._open[i]
                return call_id
        return None


@dataclass(frozen=True, slots=True)
class Call:
    """One call an assistant message made, checked: ``arguments`` as given (a JSON string, usually),
    ``where`` their path for a problem, ``entry`` the message's own entry (a provider's extras ride on it)."""

    id: str
    name: str
    arguments: Any
    where: str
    entry: dict[str, Any]


def assistant_calls(message: dict[str, Any], where: str, problems: Problems, legacy: LegacyCalls) -> list[Call]:
    """The calls of an assistant message, ``tool_calls`` then a legacy ``function_call`` (given a made-up
    id); a call without a name or an id is a problem, as providers pair a call and its result by id."""
    tool_calls = message.get("tool_calls") or []
    if not isinstance(tool_calls, list):
        problems.add(f"{where}.tool_calls", "must be a list")
        tool_calls = []
    calls = []
    for k, call in enumerate(tool_calls):
        at = f"{where}.tool_calls.{k}"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            problems.add(at, "a tool call needs function.name")
        elif not isinstance(call.get("id"), str) or not call["id"]:
            problems.add(f"{at}.id", "a tool call needs its id, which pairs it with its result")
        else:
            arguments = function.get("arguments")
            calls.append(Call(call["id"], function["name"], arguments, f"{at}.function.arguments", call))
    function_call = message.get("function_call")
    if isinstance(function_call, dict) and isinstance(function_call.get("name"), str):
        name = function_call["name"]
        arguments, at = function_call.get("arguments"), f"{where}.function_call.arguments"
        calls.append(Call(legacy.call(name), name, arguments, at, function_call))
    return calls


def answered_call(message: dict[str, Any], where: str, problems: Problems, legacy: LegacyCalls) -> str | None:
    """The id of the call a ``tool`` message (or a legacy ``function`` one, by name) answers; None, the
    problem noted, when it names none."""
    if message.get("role") == "tool":
        call_id = message.get("tool_call_id")
        if isinstance(call_id, str) and call_id:
            return call_id
        problems.add(f"{where}.tool_call_id", "a tool message needs the tool_call_id it answers")
        return None
    call_id = legacy.answer(message.get("name"))
    if call_id is None:
        problems.add(f"{where}.name", "no earlier assistant function_call names this function")
    return call_id


def translate_tools(payload: dict[str, Any], problems: Problems, define: Callable[[dict[str, Any], str], Any]) -> list:
    """``tools`` and legacy ``functions`` in a provider's shape: each function definition goes through
    ``define(function, where)`` (None: refused, the problem noted); any other tool (a provider's own:
    a server tool, a built-in one) passes as it is."""
    tools: list[Any] = []
    for key in ("tools", "functions"):
        given = payload.get(key)
        if given is None:
            continue
        if not isinstance(given, list):
            problems.add(f"payload.{key}", "must be a list")
            continue
        for i, tool in enumerate(given):
            where = f"payload.{key}.{i}"
            if key == "functions" and isinstance(tool, dict):
                tool = define(tool, where)
            elif isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("function"), dict):
                tool = define(tool["function"], f"{where}.function")
            if tool is not None:
                tools.append(tool)
    return tools


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``: objects are merged key by key, anything else is replaced."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def with_provider_args(
    body: dict[str, Any],
    args: dict[str, Any] | None,
    aliases: dict[str, str] | None = None,
    nested: tuple[str, frozenset[str]] | None = None,
) -> dict[str, Any]:
    """The provider's request with ``providerArgs`` merged in, after translation, so they can name
    the provider's own fields. Friendly names are normalised first: ``aliases`` renames keys (an
    OpenAI word to the provider's), and ``nested`` = (object, fields) moves those fields into that
    object (Gemini's sampling settings live in ``generationConfig``, not at the top)."""
    if not args:
        return body
    top: dict[str, Any] = {}
    inner: dict[str, Any] = {}
    for key, value in args.items():
        key = (aliases or {}).get(key, key)
        if key in ("stop_sequences", "stopSequences") and isinstance(value, str):
            value = [value]
        if nested is not None and key in nested[1]:
            inner[key] = value
        else:
            top[key] = value
    if inner:
        top = merged(top, {nested[0]: inner})  # type: ignore[index]
    return merged(body, top)


def _tool_name(tool: Any) -> str | None:
    function = tool.get("function") if isinstance(tool, dict) else None
    name = (function if isinstance(function, dict) else tool).get("name") if isinstance(tool, dict) else None
    return name if isinstance(name, str) else None


def normalise_tools(payload: dict[str, Any]) -> dict[str, Any]:
    """The tool fields in the one shape the adapters translate, OpenAI's Chat Completions:

    - ``toolChoice`` (the reference's spelling) becomes ``tool_choice``;
    - a tool given flat, ``{"name", "description", "parameters"}`` (the reference's own example, and
      the Responses API's shape), is wrapped as ``{"type": "function", "function": {...}}``;
    - a tool choice of ``"any"`` (Anthropic's word) is ``"required"``, and a forced function given as
      ``{"name"}``, ``{"type": "function", "name"}`` or ``{"type": "tool", "name"}`` becomes
      ``{"type": "function", "function": {"name"}}``.

    Anything else is left for the adapter (and its provider) to judge."""
    out = dict(payload)
    if "toolChoice" in out:
        choice = out.pop("toolChoice")
        out.setdefault("tool_choice", choice)
    tools = out.get("tools")
    if isinstance(tools, list):
        out["tools"] = [
            {"type": "function", "function": tool}
            if isinstance(tool, dict) and "function" not in tool and isinstance(tool.get("name"), str)
            and tool.get("type") in (None, "function")
            else tool
            for tool in tools
        ]  # fmt: skip
        for tool in out["tools"]:
            if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
                tool["function"] = {k: v for k, v in tool["function"].items() if k != "type"}
    choice = out.get("tool_choice")
    if choice == "any":
        out["tool_choice"] = "required"
    elif isinstance(choice, dict) and "function" not in choice and isinstance(choice.get("name"), str):
        if choice.get("type") in (None, "function", "tool"):
            out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    return out


def offered_tools(payload: dict[str, Any], provider_args: dict[str, Any] | None = None) -> set[str]:
    """The names of every tool a request offers the model: ``tools`` and legacy ``functions``, and
    ``providerArgs.tools`` in the provider's own shape (Gemini's ``functionDeclarations`` too).
    Only these may be run: a model, or a prompt that talks it into it, cannot call anything else."""
    given = [*(payload.get("tools") or []), *(payload.get("functions") or [])]
    extra = (provider_args or {}).get("tools")
    given += extra if isinstance(extra, list) else []
    names = set()
    for tool in given:
        if not isinstance(tool, dict):
            continue
        declarations = tool.get("functionDeclarations") or tool.get("function_declarations")
        for item in declarations if isinstance(declarations, list) else [tool]:
            if (name := _tool_name(item)) is not None:
                names.add(name)
    return names


def frontend_tools(names: set[str]) -> list[str]:
    """The ``ui_*`` tools among ``names``: they need a page, so a stream, to answer them."""
    return sorted(name for name in names if name.startswith("ui_"))
