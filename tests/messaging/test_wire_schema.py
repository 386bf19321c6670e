"""The wire schema (bfstream/static/protocol.json) is a valid JSON Schema, the docs' examples hold to
it, and it has teeth: frames the server must never send are outside it. (Every frame the rest of the
suite receives is checked against it as it arrives: tests/wire.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from tests.wire import problems, schema

DOCS = Path(__file__).parents[2] / "docs"


def test_the_schema_is_a_valid_json_schema() -> None:
    Draft202012Validator.check_schema(schema())


def frames_in_the_docs() -> list[dict]:
    """Every one-line JSON object with an op in docs/messaging.md's json code blocks."""
    text = (DOCS / "messaging.md").read_text()
    found = []
    for block in re.findall(r"```json\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            if line.startswith("{") and '"op"' in line:
                found.append(json.loads(line))
    return found


def test_every_frame_in_the_docs_holds_to_the_schema() -> None:
    frames = frames_in_the_docs()
    assert len(frames) >= 5
    for frame in frames:
        assert problems(frame, "serverFrame") == [] or problems(frame, "clientFrame") == [], frame


STREAM_EVENT = {
    "action": "namedAction",
    "name": "onStream",
    "options": {"type": "delta", "streamId": "s1", "seq": 3, "content": "Hi"},
}


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        ({"op": "pong"}, "a reply without its id"),
        ({"op": "error", "error": {"message": "x", "code": 200}, "id": None}, "an error code that is no error"),
        ({"op": "hello", "channels": []}, "a hello without its connection id"),
        ({"op": "nope", "id": 1}, "an op that does not exist"),
        (
            {"op": "message", "channel": "c", "offset": 1, "epoch": "e", "from": {"kind": "server"},
             "message": {"actions": [{"action": "showAlert"}]}},
            "a server message that is not a stream event",
        ),
        (
            {"op": "message", "channel": "c", "offset": 1, "epoch": "e", "from": {"kind": "server"},
             "message": {"actions": [{**STREAM_EVENT, "options": {**STREAM_EVENT["options"], "seq": -1}}]}},
            "a negative seq",
        ),
        (
            {"op": "message", "channel": "c", "offset": 1, "epoch": "e", "from": {"kind": "browser"},
             "message": {"actions": []}},
            "a browser's message without its connection",
        ),
        (
            {"op": "message", "channel": "c\u0085", "offset": 1, "epoch": "e", "from": {"kind": "api"},
             "message": {"actions": []}},
            "a channel name with a control character",
        ),
    ],
)  # fmt: skip
def test_frames_the_server_must_never_send_are_outside_it(frame: dict, why: str) -> None:
    assert problems(frame, "serverFrame") != [], why


def test_a_stream_event_from_the_server_is_inside_it() -> None:
    frame = {"op": "message", "channel": "c", "offset": 1, "epoch": "e", "from": {"kind": "server"},
             "message": {"actions": [STREAM_EVENT]}}  # fmt: skip
    assert problems(frame, "serverFrame") == []
