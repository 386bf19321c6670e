"""What a test of the WebSocket transport knows of the write path it runs on (tests/messaging/conftest.py)."""

from __future__ import annotations

from typing import Any


class WritePath:
    def __init__(self, name: str) -> None:
        self.name = name  # "direct" (straight to uvicorn's transport) or "send" (its ASGI send)
        self.taken: list[bool] = []  # one per connection that reached its writer: written straight?

    @property
    def settings(self) -> dict[str, Any]:
        """The server's ``messaging`` settings for this path."""
        return {"direct_writes": self.name == "direct"}

    def assert_taken(self) -> None:
        """Connections were served, all on this path."""
        assert self.taken and set(self.taken) == {self.name == "direct"}, (self.name, self.taken)
