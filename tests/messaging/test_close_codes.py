"""The schema's tables of how a connection ends (``closeCode``, ``sseRefusal`` in
bfstream/static/protocol.json) against what the server says it sends: the close codes that
docs/messaging.md lists, and the statuses /message/sse is documented to answer. bfstream.js's copy of
the tables is checked against the schema by tests/js/codes.test.mjs."""

from __future__ import annotations

import re
from pathlib import Path

from bfstream.api.errors import ERRORS_BY_PATH
from bfstream.messaging import protocol
from tests.wire import schema

DOCS = Path(__file__).parents[2] / "docs"


def consts(name: str) -> set[int]:
    return {entry["const"] for entry in schema()["$defs"][name]["oneOf"]}


def documented_close_codes() -> set[int]:
    """The codes in the first column of the "Close codes" table of docs/messaging.md."""
    section = (DOCS / "messaging.md").read_text().split("### Close codes", 1)[1].split("\n#", 1)[0]
    codes: set[int] = set()
    for row in re.findall(r"^\| ([\d /]+) \|", section, re.MULTILINE):
        codes.update(int(code) for code in row.split("/"))
    return codes


def test_the_close_codes_are_the_documented_ones() -> None:
    assert consts("closeCode") == documented_close_codes()
    assert protocol.CLOSE_SLOW_CONSUMER in consts("closeCode")


def test_every_refusal_over_sse_has_its_close_code_twin_where_a_websocket_has_one() -> None:
    refusals = consts("sseRefusal")
    assert refusals == set(ERRORS_BY_PATH["/message/sse"])
    # 400 (a bad channel) is an error frame on a WebSocket, which joins by frames; the rest close it.
    assert {protocol.close_code(status) for status in refusals - {400}} <= consts("closeCode")
