"""A hypothesis-driven WebSocket fuzzer against the real server, while a well-behaved client in the
same channel receives streams.

Every example opens a raw connection (the ``websockets`` sans-I/O protocol over a bare socket, so
frames can be anything: invalid UTF-8 in a text frame, CESU-8 surrogates, fragments cut inside a
character, protocol garbage) and sends a few hostile frames, or a flood, then a ping to flush. The
oracle: every reply is a documented frame (``docs/messaging.md``), one per request and in order,
echoing the request's id; or the connection is closed, with a close frame carrying one of the
documented close codes that fits what was sent. Meanwhile streams (echo and the fake OpenAI) run
into the channel the fuzzer publishes into: the well-behaved listener must get every one whole,
every channel offset once and in order; a client that joins afterwards finds the history intact;
and the server logs no error and no traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from tests.conftest import Server, ServerFactory, assert_well_formed, seed_body
from tests.fakes.openai_server import FakeOpenAI, StreamReply, text_stream

pytestmark = pytest.mark.anyio

CHANNEL = "anonymous"  # where the streams go, the well-behaved client listens and the fuzzer publishes
MAX_FRAME = 256 * 1024  # the fuzz server's messaging.max_frame_bytes: a bigger frame closes with 1009
MAX_DEPTH = 64  # bfstream.nesting.MAX_DEPTH
EXAMPLES = int(os.environ.get("BFSTREAM_FUZZ_EXAMPLES", "500"))

# Hypothesis drives the examples from a worker thread (the server runs on the test's event loop):
# the same examples every run, nothing written to the repository, no deadline (a flood takes a while).
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


# ---- what was sent, and what it may get back -------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One thing a client sends, and what the contract allows in return.

    ``replies``: the ops of the one reply it gets (empty: it gets none, e.g. a control frame);
    ``codes``: the error codes allowed when that reply is an ``error``; ``closes``: when not empty,
    the connection must close with one of these codes right after it. ``reply_id`` is the id the
    reply must echo."""

    label: str
    opcode: Opcode | None  # None: ``raw`` bytes written to the socket as they are
    payload: bytes = b""
    fragments: tuple[bytes, ...] = ()  # sent as a fragmented message (first one carries the opcode)
    replies: frozenset[str] = frozenset({"error"})
    codes: frozenset[int] = frozenset({400})
    closes: frozenset[int] = frozenset()
    reply_id: Any = None

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example: short
        shown = self.payload if len(self.payload) <= 160 else self.payload[:120] + b"...%d bytes" % len(self.payload)
        return f"Probe({self.label}, {self.opcode and self.opcode.name}, {shown!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


REPLY_OPS = {"ping": "pong", "join": "joined", "leave": "left", "publish": "published"}
REFUSALS = frozenset({400, 403, 413, 429})  # the documented error codes a request can get from this server


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is not a finite number")
    return value


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def strict_json(text: str) -> Any:
    """What a browser's JSON.parse accepts, and what it would turn into Infinity: neither NaN nor
    Infinity literals, nor numbers too large for a double."""
    return json.loads(text, parse_constant=_not_json, parse_float=_finite)


def _lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_lone_surrogate(v) for v in value)
    return False


def _depth(value: Any) -> int:
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            todo.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def text_probe(label: str, text: str | bytes, opcode: Opcode = Opcode.TEXT, **known: Any) -> Probe:
    """A text frame and its oracle, from the contract: a frame that is not a JSON object bfstream can
    carry on (too deep, NaN, a lone surrogate) gets a 400 with a null id; a ping gets its pong; join,
    leave and publish get their reply or a documented refusal; anything else is a 400."""
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_FRAME:
        return Probe(label, opcode, raw, replies=frozenset(), codes=frozenset(), closes=frozenset({1009}))
    if opcode is Opcode.BINARY:
        return Probe(label, opcode, raw, **known)  # "Binary frames are answered with an error"
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Probe(label, opcode, raw, replies=frozenset(), codes=frozenset(), closes=frozenset({1007}))
    try:
        request = strict_json(decoded)
    except (ValueError, RecursionError):
        return Probe(label, opcode, raw, **known)
    if not isinstance(request, dict) or _depth(request) > MAX_DEPTH:
        return Probe(label, opcode, raw, **known)
    if _lone_surrogate(request):
        request_id = request.get("id")
        return Probe(label, opcode, raw, reply_id=None if _lone_surrogate(request_id) else request_id, **known)
    op, request_id = request.get("op"), request.get("id")
    if op == "ping":
        return Probe(label, opcode, raw, replies=frozenset({"pong"}), codes=frozenset(), reply_id=request_id)
    if isinstance(op, str) and op in REPLY_OPS:
        known = {"replies": frozenset({REPLY_OPS[op], "error"}), "codes": REFUSALS, **known}
    else:
        known = {**known, "replies": frozenset({"error"}), "codes": frozenset({400})}
    return Probe(label, opcode, raw, reply_id=request_id, **known)


# ---- strategies -------------------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)
not_strings = json_values.filter(lambda v: not isinstance(v, str))
channels = st.sampled_from([CHANNEL, "room1", "room2", "tab|someone-else", "x" * 200, "x" * 201, "", "a\nb"]) | st.text(
    min_size=1, max_size=10
)
request_ids = json_values
since_values = st.fixed_dictionaries(
    {"offset": st.integers(min_value=0, max_value=2**40)}, optional={"epoch": st.text(max_size=10)}
) | st.just({"offset": 0})
actions = st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=3), max_size=3)
messages = st.fixed_dictionaries(
    {"actions": actions}, optional={"model": st.dictionaries(st.text(max_size=6), json_values, max_size=3)}
)


def _frame(fields: dict[str, Any], ascii_only: bool) -> str:
    return json.dumps(fields, ensure_ascii=ascii_only)


def _request(op: str, required: dict[str, Any], optional: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"op": st.just(op), **required}, optional={"id": request_ids, **optional})


well_formed = st.one_of(
    _request("ping", {}, {}),
    _request("join", {"channel": channels}, {"since": since_values}),
    _request("leave", {"channel": channels}, {}),
    _request("publish", {"channel": channels, "message": messages}, {}),
)


def _valid_since(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and type(value.get("offset")) is int
        and value["offset"] >= 0
        and isinstance(value.get("epoch"), str | None)
    )


def _valid_message(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("actions"), list)
        and all(isinstance(a, dict) for a in value["actions"])
        and set(value) <= {"actions", "model", "app"}
        and all(isinstance(value.get(k), dict | None) for k in ("model", "app"))
    )


# A known op with a field of the wrong type: always a refusal (403 for a publish to a channel the
# connection is not in, which is checked first).
wrong_types = st.one_of(
    _request("join", {"channel": not_strings}, {"since": since_values}),
    _request(
        "join",
        {"channel": st.just(CHANNEL), "since": json_values.filter(lambda v: v is not None and not _valid_since(v))},
        {},
    ),
    _request(
        "join",
        {
            "channel": st.just("room1"),
            "since": st.fixed_dictionaries({"offset": json_values}).filter(lambda v: not _valid_since(v)),
        },
        {},
    ),
    _request(
        "join", {"channel": st.just("room1"), "since": st.fixed_dictionaries({"offset": st.integers(max_value=-1)})}, {}
    ),
    _request(
        "join",
        {
            "channel": st.just("room1"),
            "since": st.fixed_dictionaries(
                {"offset": st.just(1), "epoch": not_strings.filter(lambda v: v is not None)}
            ),
        },
        {},
    ),
    _request("leave", {"channel": not_strings}, {}),
    _request("publish", {"channel": not_strings, "message": messages}, {}),
    _request(
        "publish", {"channel": st.just(CHANNEL), "message": json_values.filter(lambda v: not _valid_message(v))}, {}
    ),
    _request("publish", {"channel": st.just(CHANNEL)}, {}),  # no message at all
    _request(
        "publish",
        {
            "channel": st.just(CHANNEL),
            "message": st.fixed_dictionaries(
                {"actions": json_values}, optional={"extra": json_values, "model": json_values}
            ).filter(lambda v: not _valid_message(v)),
        },
        {},
    ),
)
unknown_ops = st.one_of(
    st.fixed_dictionaries({"op": not_strings}, optional={"id": request_ids, "channel": channels}),
    st.fixed_dictionaries(
        {"op": st.text(max_size=20).filter(lambda op: op not in REPLY_OPS)},
        optional={"id": request_ids, "channel": channels},
    ),
    st.fixed_dictionaries(
        {"op": st.sampled_from(["PING", "Join", "join ", "message", "hello", "error", "pong", "subscribe"])},
        optional={"id": request_ids},
    ),
    st.dictionaries(st.text(max_size=6).filter(lambda k: k != "op"), json_values, max_size=5),
)


@st.composite
def json_frames(draw: st.DrawFn) -> Probe:
    ascii_only = draw(st.booleans())
    kind = draw(st.sampled_from(["well-formed", "wrong-types", "unknown-op"]))
    if kind == "well-formed":
        return text_probe("json", _frame(draw(well_formed), ascii_only))
    if kind == "wrong-types":
        return text_probe(
            "wrong-types",
            _frame(draw(wrong_types), ascii_only),
            codes=frozenset({400, 403}),
            replies=frozenset({"error"}),
        )
    return text_probe("unknown-op", _frame(draw(unknown_ops), ascii_only), replies=frozenset({"error"}))


@st.composite
def non_objects(draw: st.DrawFn) -> Probe:
    value = draw(json_values.filter(lambda v: not isinstance(v, dict)))
    return text_probe("non-object", json.dumps(value))


@st.composite
def huge_strings(draw: st.DrawFn) -> Probe:
    """Strings from 64 KiB to past the frame limit, in each field a request has."""
    size = draw(
        st.sampled_from([64 * 1024, 65 * 1024, MAX_FRAME - 200, MAX_FRAME + 1])
        | st.integers(60_000, MAX_FRAME + 50_000)
    )
    char = draw(st.sampled_from(["a", "é", "漢", "😀", "\\u00e9", '\\"']))
    blob = char * (size // len(char.encode()))
    template = draw(
        st.sampled_from(
            [
                '{"op":"ping","id":"%s"}',
                '{"op":"join","channel":"%s","id":1}',
                '{"op":"%s","id":2}',
                '{"op":"publish","channel":"'
                + CHANNEL
                + '","message":{"actions":[{"action":"x","options":"%s"}]},"id":3}',
                '{"op":"publish","channel":"' + CHANNEL + '","message":{"actions":[{"%s":1}]},"id":4}',
                '{"op":"join","channel":"room1","since":{"offset":0,"epoch":"%s"},"id":5}',
            ]
        )
    )
    return text_probe("huge", template % blob)


@st.composite
def deep_nesting(draw: st.DrawFn) -> Probe:
    depth = draw(st.sampled_from([MAX_DEPTH - 2, MAX_DEPTH, MAX_DEPTH + 1, 1000, 100_000]) | st.integers(1, 5000))
    shape = draw(st.sampled_from(["list", "dict", "mixed", "unbalanced"]))
    if shape == "list":
        deep = "[" * depth + "]" * depth
    elif shape == "dict":
        deep = '{"a":' * depth + "1" + "}" * depth
    elif shape == "mixed":
        deep = '[{"a":' * (depth // 2) + "null" + "}]" * (depth // 2)
    else:
        deep = "[" * depth
    where = draw(
        st.sampled_from(
            [
                '{"op":"ping","id":%s}',
                '{"op":"join","channel":"room1","since":%s}',
                '{"op":"publish","channel":"' + CHANNEL + '","message":{"actions":[{"action":"x","options":%s}]}}',
                "%s",
            ]
        )
    )
    return text_probe("deep", where % deep)


NOT_FINITE = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1E+999",
    "0.5e309",
    "9" * 400 + ".0",
    "-" + "9" * 320 + "e0",
]


@st.composite
def not_finite_numbers(draw: st.DrawFn) -> Probe:
    """Numbers JSON.parse cannot give back: the NaN/Infinity literals, and numbers past a double."""
    literal = draw(st.sampled_from(NOT_FINITE))
    where = draw(
        st.sampled_from(
            [
                '{"op":"ping","id":%s}',
                '{"op":"ping","id":[1,{"a":%s}]}',
                '{"op":"join","channel":"' + CHANNEL + '","since":{"offset":%s}}',
                '{"op":"publish","channel":"'
                + CHANNEL
                + '","message":{"actions":[{"action":"x","options":{"v":%s}}]}}',
                '{"op":"publish","channel":"' + CHANNEL + '","message":{"actions":[],"model":{"v":[%s]}}}',
                '{"op":"leave","channel":"room9","id":%s}',
            ]
        )
    )
    return text_probe("not-finite", where % literal)


SURROGATES = [
    "\\ud800",
    "\\udfff",
    "\\uDBFF",
    "\\ude00\\ud83d",
    "a\\ud83d",
    "\\ud83d\\ude00",
]  # the last is a pair: fine


@st.composite
def surrogate_escapes(draw: st.DrawFn) -> Probe:
    escape = draw(st.sampled_from(SURROGATES))
    where = draw(
        st.sampled_from(
            [
                '{"op":"ping","id":"%s"}',
                '{"op":"ping","id":1,"x":"%s"}',
                '{"op":"join","channel":"%s","id":2}',
                '{"op":"%s","id":3}',
                '{"op":"publish","channel":"'
                + CHANNEL
                + '","message":{"actions":[{"action":"x","options":"%s"}]},"id":4}',
                '{"op":"publish","channel":"' + CHANNEL + '","message":{"actions":[{"%s":1}]},"id":5}',
                '{"op":"ping","id":{"%s":1}}',
            ]
        )
    )
    return text_probe("surrogate-escape", where % escape)


@st.composite
def bad_utf8(draw: st.DrawFn) -> Probe:
    """Text frames that are not UTF-8: lone surrogates as raw CESU-8 bytes, stray bytes, overlong
    forms, a character cut short. The close code for this is 1007."""
    bad = draw(
        st.sampled_from(
            [
                b"\xed\xa0\x80",  # U+D800 encoded as if it were a character (CESU-8)
                b"\xed\xa0\xbd\xed\xb8\x80",  # an emoji's surrogate pair, CESU-8 style
                b"\xed\xbf\xbf",
                b"\xff",
                b"\xfe\xff",
                b"\xc0\x80",  # overlong NUL
                b"\xe2\x82",  # a character cut short
                b"\xf4\x90\x80\x80",  # past U+10FFFF
                b"\x80",
            ]
        )
        | st.binary(min_size=1, max_size=40).filter(lambda b: not _is_utf8(b))
    )
    template = draw(st.sampled_from([b'{"op":"ping","id":"%s"}', b'{"op":"join","channel":"%s"}', b"%s"]))
    return text_probe("bad-utf8", template.replace(b"%s", bad))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@st.composite
def binary_frames(draw: st.DrawFn) -> Probe:
    payload = draw(st.binary(max_size=200) | st.just(b'{"op":"ping","id":1}') | st.just(b""))
    return text_probe("binary", payload, Opcode.BINARY)


@st.composite
def empty_and_blank(draw: st.DrawFn) -> Probe:
    return text_probe("blank", draw(st.sampled_from(["", " ", "\n", "{}", "null", "\ufeff{}", '{"op":null}'])))


@st.composite
def fragmented(draw: st.DrawFn) -> Probe:
    """A well-formed request sent in fragments, cut anywhere, inside a UTF-8 character too: it is one
    message, answered once."""
    request = draw(_request("ping", {}, {}) | _request("join", {"channel": channels}, {}))
    raw = json.dumps(request, ensure_ascii=False).encode()
    cuts = sorted(set(draw(st.lists(st.integers(0, len(raw)), min_size=1, max_size=4))))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    probe = text_probe("fragmented", raw)
    return Probe(probe.label, Opcode.TEXT, raw, tuple(pieces), probe.replies, probe.codes, probe.closes, probe.reply_id)


@st.composite
def control_frames(draw: st.DrawFn) -> Probe:
    """Pings and unsolicited pongs: the protocol answers, the application does not."""
    opcode = draw(st.sampled_from([Opcode.PING, Opcode.PONG]))
    return Probe("control", opcode, draw(st.binary(max_size=125)), replies=frozenset(), codes=frozenset())


def _masked(first: int, payload: bytes, mask: bytes = b"\x01\x02\x03\x04", length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    header = bytes([first]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


# Frames no conforming client sends: the connection fails with 1002 (protocol error), or with 1007
# when a close reason is not UTF-8.
GARBAGE = [
    ("unmasked", b"\x81\x05hello", 1002),
    ("reserved opcode", _masked(0x83, b"{}"), 1002),
    ("reserved opcode 0xB", _masked(0x8B, b""), 1002),
    ("rsv1 without extension", _masked(0xC1, b"{}"), 1002),
    ("rsv3", _masked(0x91, b"{}"), 1002),
    ("continuation first", _masked(0x80, b"{}"), 1002),
    ("fragmented ping", _masked(0x09, b"hi"), 1002),
    ("control frame too long", _masked(0x89, b"x" * 126), 1002),
    ("text inside a fragmented text", _masked(0x01, b'{"op":') + _masked(0x81, b"{}"), 1002),
    ("close with one byte", _masked(0x88, b"\x03"), 1002),
    ("close with code 999", _masked(0x88, (999).to_bytes(2, "big")), 1002),
    ("close with code 1005", _masked(0x88, (1005).to_bytes(2, "big")), 1002),
    ("close reason not UTF-8", _masked(0x88, (1000).to_bytes(2, "big") + b"\xff"), 1007),
]


@st.composite
def protocol_garbage(draw: st.DrawFn) -> Probe:
    label, raw, code = draw(st.sampled_from(GARBAGE))
    return Probe(f"garbage: {label}", None, raw, replies=frozenset(), codes=frozenset(), closes=frozenset({code}))


@st.composite
def client_closes(draw: st.DrawFn) -> Probe:
    """A client's own close: the server echoes its code."""
    code = draw(st.sampled_from([1000, 1001, 3000, 4000, 4999]))
    reason = draw(st.text(max_size=20)).encode()[:100]
    return Probe("close", Opcode.CLOSE, Close(code, reason.decode("utf-8", "ignore")).serialize(),
                 replies=frozenset(), codes=frozenset(), closes=frozenset({code}))  # fmt: skip


JOIN_CHANNEL = json.dumps({"op": "join", "channel": CHANNEL, "id": "join-first"})


def _split_events(body: bytes) -> list[bytes]:
    """One HTTP chunk per SSE event, so a paced reply is paced event by event."""
    return [event + b"\n\n" for event in body.split(b"\n\n") if event]


@st.composite
def floods(draw: st.DrawFn) -> list[Probe]:
    """Many requests sent ahead without waiting: every one gets its reply, in order."""
    kind = draw(st.sampled_from(["ping", "join-many", "publish", "join-since-0", "join-leave", "mixed"]))
    n = draw(st.integers(20, 150))
    if kind == "ping":
        n = draw(st.sampled_from([500, 1500, 3000]))
        return [text_probe("flood-ping", json.dumps({"op": "ping", "id": i})) for i in range(n)]
    if kind == "join-many":  # past messaging.max_channels (100 besides the private one) joins are refused
        return [
            text_probe(
                "flood-join",
                json.dumps({"op": "join", "channel": f"c{i}", "id": i}),
                replies=frozenset({"joined"} if i < 100 else {"error"}),
                codes=frozenset({400}),
            )
            for i in range(n)
        ]
    if kind == "publish":  # the first messaging.publish_burst (20) go out, the rest may get 429
        body = {"op": "publish", "channel": CHANNEL, "message": {"actions": [{"action": "fuzz", "options": {"n": 0}}]}}
        return [text_probe("join", JOIN_CHANNEL, replies=frozenset({"joined"}))] + [
            text_probe(
                "flood-publish",
                json.dumps({**body, "id": i}),
                replies=frozenset({"published"} if i < 20 else {"published", "error"}),
                codes=frozenset({429}),
            )
            for i in range(n)
        ]
    if kind == "join-since-0":  # each one replays the channel's whole history
        n = draw(st.integers(2, 8))
        request = {"op": "join", "channel": CHANNEL, "since": {"offset": 0}}
        return [
            text_probe("flood-replay", json.dumps({**request, "id": i}), replies=frozenset({"joined"}))
            for i in range(n)
        ]
    if kind == "join-leave":
        return [
            text_probe(
                "flood-join-leave",
                json.dumps({"op": op, "channel": CHANNEL, "id": i}),
                replies=frozenset({REPLY_OPS[op]}),
            )
            for i in range(n)
            for op in ("join", "leave")
        ]
    return draw(
        st.lists(json_frames() | surrogate_escapes() | not_finite_numbers() | binary_frames(), min_size=n, max_size=n)
    )


single = st.one_of(
    json_frames(),
    non_objects(),
    huge_strings(),
    deep_nesting(),
    not_finite_numbers(),
    surrogate_escapes(),
    bad_utf8(),
    binary_frames(),
    empty_and_blank(),
    fragmented(),
    control_frames(),
    protocol_garbage(),
    client_closes(),
)


@st.composite
def sessions(draw: st.DrawFn) -> list[Probe]:
    """What one connection sends: a few frames, maybe after joining the stream's channel (so its
    publishes reach the well-behaved client), or a flood."""
    if draw(st.integers(0, 9)) == 0:
        return draw(floods())
    probes = draw(st.lists(single, min_size=1, max_size=6))
    if draw(st.booleans()):
        probes.insert(0, text_probe("join", JOIN_CHANNEL, replies=frozenset({"joined"})))
    return probes


def _joined_then(*probes: Probe) -> list[Probe]:
    return [text_probe("join", JOIN_CHANNEL, replies=frozenset({"joined"})), *probes]


_PUBLISH = '{"op":"publish","channel":"%s","message":{"actions":[{"action":"x","options":%s}]},"id":"p"}'
# Run every time besides what hypothesis draws: one of each documented outcome, and the frames that
# found bugs (a number past a double echoed as Infinity; CESU-8 logged as a traceback).
EXPLICIT: list[list[Probe]] = [
    [text_probe("not-finite", '{"op":"ping","id":1e400}')],
    _joined_then(text_probe("not-finite", _PUBLISH % (CHANNEL, '{"v":-1e400}'))),
    [text_probe("bad-utf8", b'{"op":"ping","id":"\xed\xa0\x80"}')],
    [text_probe("surrogate-escape", '{"op":"ping","id":"\\ud800"}')],
    _joined_then(text_probe("huge", _PUBLISH % (CHANNEL, json.dumps("a" * 70_000)))),
    [text_probe("huge", '{"op":"ping","id":"%s"}' % ("a" * MAX_FRAME))],
    [text_probe("deep", '{"op":"ping","id":' + "[" * 100_000 + "]" * 100_000 + "}")],
    [
        text_probe(
            "join", '{"op":"join","channel":"tab|x","id":1}', replies=frozenset({"error"}), codes=frozenset({403})
        )
    ],
    _joined_then(
        text_probe("join", json.dumps({"op": "leave", "channel": CHANNEL, "id": 2}), replies=frozenset({"left"})),
        text_probe("publish", _PUBLISH % (CHANNEL, "{}"), replies=frozenset({"error"}), codes=frozenset({403})),
    ),
    [Probe("garbage: unmasked", None, GARBAGE[0][1], replies=frozenset(), codes=frozenset(), closes=frozenset({1002}))],
]


# ---- the server's side of the conversation, checked ------------------------------------------------------

ERROR_CODES = REFUSALS | {503}  # docs/messaging.md: "code in an error is an HTTP status: 400 ..."


def documented_close_codes() -> set[int]:
    """The first column of the close code table in docs/messaging.md ("| 1011 / 1006 | ..." is two)."""
    docs = (Path(__file__).parents[2] / "docs" / "messaging.md").read_text()
    table = docs.split("### Close codes", 1)[1].split("\n\n", 2)[1]
    return {int(code) for row in table.splitlines() for code in re.findall(r"\d{4}", row.split("|")[1])}


DOCUMENTED_CLOSES = documented_close_codes()


def check_frame(frame: Any) -> None:
    """A server frame, exactly as docs/messaging.md describes it: its op, and its fields, no others."""
    assert isinstance(frame, dict), frame
    op = frame.get("op")
    fields = {
        "hello": {"op", "connectionId", "channels"},
        "joined": {"op", "channel", "recovered", "offset", "epoch", "id"},
        "left": {"op", "channel", "id"},
        "message": {"op", "channel", "offset", "epoch", "from", "message"},
        "published": {"op", "channel", "offset", "epoch", "id"},
        "pong": {"op", "id"},
        "error": {"op", "error", "id"},
    }
    assert op in fields, frame
    if op == "message" and "log" in frame:  # a stream's event recovered from its log at a join
        assert frame["log"] is True and frame["from"] == {"kind": "server"}, frame
        assert set(frame) == fields[op] | {"log"}, frame
    else:
        assert set(frame) == fields[op], frame
    if "channel" in frame:
        assert isinstance(frame["channel"], str) and 0 < len(frame["channel"]) <= 200, frame
    if "offset" in frame:
        assert type(frame["offset"]) is int and frame["offset"] >= 0, frame
        assert isinstance(frame["epoch"], str) and frame["epoch"], frame
    if op == "hello":
        assert isinstance(frame["connectionId"], str) and frame["channels"] == ["tab|" + frame["connectionId"]]
    elif op == "joined":
        assert type(frame["recovered"]) is bool, frame
    elif op == "message":
        # A stream's event recovered from its log carries the joining client's own position, which may be 0.
        assert frame["offset"] >= (0 if frame.get("log") else 1), frame
        origin = frame["from"]
        assert origin in ({"kind": "server"}, {"kind": "api"}) or (
            set(origin) == {"kind", "connectionId", "user"} and origin["kind"] == "browser" and origin["user"] is None
        ), frame
        message = frame["message"]
        assert isinstance(message, dict) and isinstance(message.get("actions"), list), frame
        assert set(message) <= {"actions", "model", "app"}, frame
    elif op == "error":
        error = frame["error"]
        assert set(error) in ({"message", "code"}, {"message", "code", "retryAfter"}), frame
        assert isinstance(error["message"], str) and error["message"], frame
        assert error["code"] in ERROR_CODES, frame
        if "retryAfter" in error:
            assert error["code"] == 429 and type(error["retryAfter"]) is int and error["retryAfter"] >= 1, frame


class RawClient:
    """A WebSocket client that sends whatever it is given: the websockets library's sans-I/O protocol
    frames what can be framed, the rest goes to the socket as is. A reader task keeps reading, so
    a flood of replies never backs up into the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: ClientProtocol) -> None:
        self.reader, self.writer, self.protocol = reader, writer, protocol
        self.texts: list[Any] = []  # every text frame, decoded strictly
        self.eof = False
        self.changed = asyncio.Event()
        self._task = asyncio.create_task(self._read_forever())

    @classmethod
    async def open(cls, url: str) -> RawClient:
        uri = parse_uri(url)
        reader, writer = await asyncio.open_connection(uri.host, uri.port)
        protocol = ClientProtocol(uri, max_size=None)
        protocol.send_request(protocol.connect())
        writer.write(b"".join(protocol.data_to_send()))
        async with asyncio.timeout(5):
            while protocol.state is not State.OPEN:
                data = await reader.read(65536)
                assert data, "the server closed the connection during the handshake"
                protocol.receive_data(data)
                assert protocol.handshake_exc is None, protocol.handshake_exc
        return cls(reader, writer, protocol)

    async def _read_forever(self) -> None:
        data = b"-"  # the handshake's last read may have brought the first frames too
        try:
            while True:
                for event in self.protocol.events_received():
                    if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                        try:
                            self.texts.append(strict_json(bytes(event.data).decode("utf-8")))
                        except ValueError:  # not UTF-8, or not JSON a browser could parse
                            self.texts.append(("not JSON", bytes(event.data)[:300]))
                    elif isinstance(event, Frame) and event.opcode not in (Opcode.PING, Opcode.PONG, Opcode.CLOSE):
                        self.texts.append(("unexpected frame", event.opcode.name, bytes(event.data)[:100]))
                self._flush()  # pongs and the closing handshake
                self.changed.set()
                if not data:
                    return
                data = await self.reader.read(262144)
                if data:
                    self.protocol.receive_data(data)
                else:
                    self.protocol.receive_eof()
        except (ConnectionError, OSError):
            pass  # the server reset the connection: ``close_rcvd`` says whether a close frame came first
        finally:
            self.eof = True
            self.changed.set()

    def _flush(self) -> None:
        if not self.writer.is_closing():
            self.writer.write(b"".join(self.protocol.data_to_send()))

    async def send(self, probe: Probe) -> None:
        protocol = self.protocol
        if protocol.state is not State.OPEN:
            return
        if probe.opcode is None:
            self.writer.write(probe.payload)
        elif probe.fragments:
            first, *rest = probe.fragments
            protocol.send_text(first, fin=not rest)
            for i, piece in enumerate(rest):
                protocol.send_continuation(piece, fin=i == len(rest) - 1)
        elif probe.opcode is Opcode.TEXT:
            protocol.send_text(probe.payload)
        elif probe.opcode is Opcode.BINARY:
            protocol.send_binary(probe.payload)
        elif probe.opcode is Opcode.PING:
            protocol.send_ping(probe.payload)
        elif probe.opcode is Opcode.PONG:
            protocol.send_pong(probe.payload)
        elif probe.opcode is Opcode.CLOSE:
            close = Close.parse(probe.payload)
            protocol.send_close(close.code, close.reason)
        self._flush()
        try:
            await self.writer.drain()
        except (ConnectionError, OSError):
            pass  # closed by the server mid-write (a frame too big): what it sent before is checked

    async def wait_for(self, done: Any, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                self.changed.clear()
                await self.changed.wait()

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.writer.close()


SENTINEL = "__flush__"


async def exercise(server: Server, probes: list[Probe], seen: Counter[str]) -> None:
    """One connection: send the probes (up to the first that must close it), check every reply and
    how it ends. ``seen`` counts what was sent and what came back."""
    client = await RawClient.open(f"{server.ws_url}?app={server.app_id}")
    try:
        await client.wait_for(lambda: client.texts or client.eof, 5)
        hello = client.texts[0] if client.texts else None
        assert isinstance(hello, dict) and hello.get("op") == "hello", client.texts
        sent: list[Probe] = []
        for probe in probes:
            sent.append(probe)
            await client.send(probe)
            if probe.closes:
                break
        closing = sent[-1] if sent[-1].closes else None
        expected = [p for p in sent if p.replies]
        if closing is None:
            sent.append(text_probe("sentinel", json.dumps({"op": "ping", "id": SENTINEL})))
            expected.append(sent[-1])
            await client.send(sent[-1])

            def flushed() -> bool:
                return client.eof or any(isinstance(t, dict) and t.get("id") == SENTINEL for t in client.texts)

            await client.wait_for(flushed, 20)
        else:
            await client.wait_for(lambda: client.eof, 10)
        for frame in client.texts:
            check_frame(frame)
        replies = [t for t in client.texts[1:] if t["op"] != "message"]
        close = client.protocol.close_rcvd
        if closing is None and close is not None and close.code == 4408:
            # Documented, but only for a client that reads too slowly, which this one never does.
            raise AssertionError(f"a client reading as fast as it can was dropped as too slow ({len(replies)} replies)")
        if closing is None:
            assert close is None and not client.eof, f"closed with {close}, after {len(replies)} of {len(expected)}"
            assert len(replies) == len(expected), (len(replies), len(expected), replies[-3:])
        else:
            # A failing connection closes at once: replies still queued for it may be lost, never garbled.
            assert close is not None, f"{closing.label}: dropped without a close frame"
            assert close.code in closing.closes, (closing, close)
            # A client's own close is echoed; any other close code the server sends is documented.
            assert closing.opcode is Opcode.CLOSE or close.code in DOCUMENTED_CLOSES, (closing, close)
            assert len(replies) <= len(expected), replies
        seen.update(f"sent {p.label.partition(':')[0]}" for p in sent)
        seen.update(f"got {r['op']} {r['error']['code'] if r['op'] == 'error' else ''}".strip() for r in replies)
        seen["got message"] += len(client.texts) - 1 - len(replies)
        if close is not None:
            seen[f"closed {close.code}"] += 1
        for probe, reply in zip(expected, replies, strict=False):
            assert reply["op"] in probe.replies, (probe, reply)
            assert reply["id"] == probe.reply_id, (probe, reply)
            if reply["op"] == "error":
                assert reply["error"]["code"] in probe.codes, (probe, reply)
    finally:
        await client.close()


# ---- the well-behaved client, and streams while the fuzzer runs --------------------------------------------


@dataclass
class Listener:
    """A browser tab in the stream's channel, on the ``websockets`` client: it records every frame."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    ended: dict[str, asyncio.Event] = field(default_factory=dict)
    closed: BaseException | None = None

    def events(self, stream_id: str) -> list[dict[str, Any]]:
        return [
            action["options"]
            for frame in self.frames
            if frame["op"] == "message" and frame["from"] == {"kind": "server"}
            for action in frame["message"]["actions"]
            if action.get("options", {}).get("streamId") == stream_id
        ]

    def ended_event(self, stream_id: str) -> asyncio.Event:
        return self.ended.setdefault(stream_id, asyncio.Event())

    async def run(self, conn: Any) -> None:
        try:
            async for text in conn:
                frame = strict_json(text)
                check_frame(frame)
                self.raw.append(text)
                self.frames.append(frame)
                if frame["op"] == "message" and frame["from"] == {"kind": "server"}:
                    options = frame["message"]["actions"][0]["options"]
                    if options["type"] == "end":
                        self.ended_event(options["streamId"]).set()
        except BaseException as exc:  # kept for the test to report, not swallowed
            self.closed = exc
            raise


WORDS = " ".join(f"word{i}" for i in range(120))
PARTS = [f"part{i} " for i in range(120)]


async def stream_while(
    server: Server, fake: FakeOpenAI, listener: Listener, fuzzing: asyncio.Event
) -> list[tuple[str, str]]:
    """Start streams one after another (echo, then the fake OpenAI, ...) into the channel until the
    fuzzer is done, each waited for to end. Returns (stream id, service) of each."""
    started: list[tuple[str, str]] = []
    while not fuzzing.is_set() or len(started) < 2:
        service = "echo" if len(started) % 2 == 0 else "openAI"
        if service == "openAI":
            fake.enqueue(StreamReply(_split_events(text_stream(PARTS)), delay=0.004))
            body = seed_body(server)
        else:
            body = {**seed_body(server, messages=[{"role": "user", "content": WORDS}]), "service": "echo"}
        response = await server.post("/stream/create", body)
        assert response.status_code == 200, response.text
        stream_id = response.json()["streamId"]
        started.append((stream_id, service))
        async with asyncio.timeout(30):
            await listener.ended_event(stream_id).wait()
    return started


class Collect(logging.Handler):
    """Every log record of the server (bfstream, uvicorn, asyncio), with the example then under way.

    ``watch()`` once the server is up: uvicorn's logging set-up, done when a server is configured,
    removes the handlers of its loggers (and keeps them from the root logger)."""

    LOGGERS = ("", "uvicorn", "uvicorn.error", "bfstream", "asyncio")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[str, logging.LogRecord]] = []
        self.current = "setup"
        self._seen: set[int] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if id(record) not in self._seen:  # one record propagating through two watched loggers counts once
            self._seen.add(id(record))
            self.records.append((self.current, record))

    def watch(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self)

    def unwatch(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)

    def bad(self, since: int = 0) -> list[str]:
        """Errors, tracebacks and "unexpected error"s logged (since the ``since``-th record)."""
        found = []
        for label, record in self.records[since:]:
            text = record.getMessage()
            if (
                record.levelno >= logging.ERROR
                or record.exc_info
                or "Traceback" in text
                or "unexpected error" in text.lower()
                or "Exception" in text
            ):
                found.append(f"{record.levelname} {record.name}: {text[:300]} (during {label[:300]})")
        return found


@pytest.fixture
def server_log() -> Iterator[Collect]:
    handler = Collect()
    yield handler
    handler.unwatch()


async def test_hostile_frames_cost_no_one_anything(
    start_server: ServerFactory, fake_openai: FakeOpenAI, server_log: Collect
) -> None:
    server = await start_server(
        services={"echo": {"delay_ms": 4}},
        # The history keeps every message of the last stream, however big the fuzzer's publishes.
        messaging={"max_frame_bytes": MAX_FRAME, "history_bytes": 256 * 1024 * 1024},
    )
    server_log.watch()
    await server.allow_browser_publish()
    conn = await connect(f"{server.ws_url}?app={server.app_id}", max_size=None)
    listener = Listener()
    reading = asyncio.create_task(listener.run(conn))

    async def listener_request(frame: dict[str, Any]) -> None:
        """Send, and wait for the reply: every frame the server queued for the listener before it has arrived."""
        await conn.send(json.dumps(frame))
        async with asyncio.timeout(5):
            while not any(f.get("id") == frame["id"] and f["op"] != "message" for f in listener.frames):
                await asyncio.sleep(0.005)

    await listener_request({"op": "join", "channel": CHANNEL, "id": "listener"})
    loop = asyncio.get_running_loop()
    fuzzing_done = asyncio.Event()
    count = 0
    seen: Counter[str] = Counter()

    def fuzz(probes: list[Probe]) -> None:
        nonlocal count
        count += 1
        server_log.current = f"example {count}: {probes!r}"[:3000]
        logged = len(server_log.records)
        asyncio.run_coroutine_threadsafe(exercise(server, probes, seen), loop).result(timeout=60)
        assert not server_log.bad(logged)

    for explicit in EXPLICIT:
        fuzz = example(explicit)(fuzz)
    fuzz = FUZZ(given(sessions())(fuzz))
    started_at = time.monotonic()
    streams = asyncio.create_task(stream_while(server, fake_openai, listener, fuzzing_done))
    try:
        await asyncio.to_thread(fuzz)
    finally:
        fuzzing_done.set()
    started = await streams
    fuzz_seconds = time.monotonic() - started_at

    # The well-behaved client lost nothing: every stream whole, every offset of the channel once, in order.
    await listener_request({"op": "ping", "id": "after"})
    assert listener.closed is None and not reading.done(), listener.closed
    for stream_id, service in started:
        events = listener.events(stream_id)
        assert_well_formed(events, stream_id)
        deltas = [e["content"] for e in events if e["type"] == "delta"]
        assert events[-1]["finish_reason"] == "stop" and "".join(deltas) == events[-1]["text"], (service, events[-1])
        assert events[-1]["text"] == (WORDS if service == "echo" else "".join(PARTS)), service
    messages = [(raw, f) for raw, f in zip(listener.raw, listener.frames, strict=True) if f["op"] == "message"]
    offsets = [f["offset"] for _, f in messages]
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), "the listener missed or repeated offsets"
    assert len({f["epoch"] for _, f in messages}) == 1

    # A client that joins afterwards, from just before the last stream, replays that part of history
    # byte for byte as the listener got it live.
    last_id = started[-1][0]
    first = next(
        i for i, (_, f) in enumerate(messages)
        if f["from"] == {"kind": "server"} and f["message"]["actions"][0]["options"]["streamId"] == last_id
    )  # fmt: skip
    since = {"offset": messages[first][1]["offset"] - 1, "epoch": messages[first][1]["epoch"]}
    async with connect(f"{server.ws_url}?app={server.app_id}", max_size=None) as late:
        check_frame(strict_json(await late.recv()))
        await late.send(json.dumps({"op": "join", "channel": CHANNEL, "since": since, "id": "late"}))
        await late.send(json.dumps({"op": "ping", "id": "late"}))  # its pong follows the whole replay
        replayed: list[str] = []
        async with asyncio.timeout(10):
            while not (replayed and strict_json(replayed[-1])["op"] == "pong"):
                replayed.append(await late.recv())
    joined, *replay, _pong = (strict_json(t) for t in replayed)
    for frame in (joined, *replay):
        check_frame(frame)
    assert joined["op"] == "joined" and joined["recovered"] is True, joined
    assert replayed[1:-1] == [raw for raw, _ in messages[first:]]

    await conn.close()
    await asyncio.gather(reading, return_exceptions=True)
    assert not server_log.bad()  # those logged after their example ended, too
    print(f"fuzzed {count} connections in {fuzz_seconds:.1f} s, while {len(started)} streams ran")
    print(", ".join(f"{what}: {n}" for what, n in sorted(seen.items())))
    # The fuzzer reached what it is for (a strategy gone quietly empty would pass everything).
    for what in ("closed 1002", "closed 1007", "closed 1009", "got error 400", "got error 403", "got error 413"):
        assert seen[what] > 0, (what, seen)
    for what in ("got published", "got joined", "got left", "got pong", "sent fragmented", "sent control"):
        assert seen[what] > 0, (what, seen)
    browser = [f for _, f in messages if f["from"]["kind"] == "browser"]
    assert browser, "no publish of the fuzzer reached the well-behaved client"
