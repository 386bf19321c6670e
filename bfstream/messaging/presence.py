"""Who is connected to this process, by app and user, so that changes to a user's channels reach
their open connections at once, and the listing endpoints can answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bfstream.messaging.session import Session


class Presence:
    def __init__(self) -> None:
        self._by_user: dict[tuple[str, str], set[Session]] = {}

    def add(self, session: Session) -> None:
        if session.user is not None:
            self._by_user.setdefault((session.app.id, session.user.id), set()).add(session)

    def remove(self, session: Session) -> None:
        if session.user is None:
            return
        key = (session.app.id, session.user.id)
        sessions = self._by_user.get(key)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._by_user[key]

    def sessions_of(self, app_id: str, user_id: str) -> Iterator[Session]:
        yield from tuple(self._by_user.get((app_id, user_id), ()))
