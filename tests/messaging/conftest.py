"""The two ways a WebSocket frame leaves the server (bfstream/messaging/transports/websocket.py):
written straight to uvicorn's transport, or through its ASGI ``send``. Tests of the transport take
``write_path`` and run on both, with the same assertions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bfstream.messaging.transports import websocket
from tests.messaging.write_paths import WritePath


@pytest.fixture(params=["direct", "send"])
def write_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[WritePath]:
    """The path to test, and a check, once the test is done, that every connection took it: a
    direct path that had quietly fallen back would pass every test, and prove nothing."""
    path = WritePath(request.param)
    choose = websocket.direct_protocol

    def recorded(*args: Any) -> Any:
        protocol = choose(*args)
        path.taken.append(protocol is not None)
        return protocol

    monkeypatch.setattr(websocket, "direct_protocol", recorded)  # the server runs in this process
    yield path
    assert set(path.taken) <= {path.name == "direct"}, f"connections wrote frames {path.taken} on the {path.name} path"
