"""This instance's connections by user, and how a change to users' channels reaches them.

``adduser`` and ``removeuser`` may arrive at any instance while the user's connections are held by
others, so the change is stored first and then told to every instance (``"users"`` control
request); each applies it to the connections it holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from bfstream.errors import ClientError
from bfstream.messaging.protocol import error_frame

if TYPE_CHECKING:
    from bfstream.messaging.hub import Hub
    from bfstream.messaging.session import Session
    from bfstream.store.store import Store


class UserSessions:
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


async def apply_change(sessions: UserSessions, hub: Hub, store: Store, change: dict[str, Any]) -> None:
    """Apply ``{"app", "added": {user: [channel, ...]}, "removed": {...}}`` to this instance's connections."""
    app_id = change["app"]
    for user_id, names in change.get("added", {}).items():
        for session in sessions.sessions_of(app_id, user_id):
            for name in names:
                if name in session.channels:
                    continue  # in it already (it joined while the channel was anonymous): no second joined
                try:
                    await session.join(name, None)
                except ClientError as exc:  # e.g. that connection's channel limit: tell it, go on
                    session.push("error", error_frame(exc.message, exc.status))
    for user_id, names in change.get("removed", {}).items():
        for session in sessions.sessions_of(app_id, user_id):
            for name in names:
                if name in session.channels:
                    await session.leave(name)
    # A channel that just became authenticated is no longer open to everyone already in it.
    added = {name for names in change.get("added", {}).values() for name in names}
    if added:
        listening = dict(hub.listeners(app_id))
        for name in added & listening.keys():
            members = await store.channel_members(app_id, name) or set()
            for listener in tuple(listening[name]):
                if listener.user is None or listener.user.id not in members:
                    await listener.leave(name)
