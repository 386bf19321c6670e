"""Running scripts on an app's FileMaker Server through the Data API, on the shared aiohttp session.

One session token per app target (app, host, database, account) per instance, reused across calls:
FileMaker Server limits how many sessions it keeps, and a login per call would spend one each
time. Concurrent callers wait for one login rather than each making its own. A token lives until 15
minutes after its last use; when the server refuses it (952, HTTP 401) the caller logs in again,
once, and repeats its call once: a second refusal is a failure, not a loop.

The account's password is read from the store and decrypted (``credentials.CredentialSealer``)
only to log in, and is scrubbed by value from every text while it is in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from bfstream.config import Settings
from bfstream.credentials import CredentialSealer, sealer
from bfstream.errors import CredentialUnavailable, FileMakerError, StoreError
from bfstream.filemaker import wire
from bfstream.filemaker.target import plain_http_problem
from bfstream.providers.http import ProviderClient
from bfstream.scrub import hold, scrub
from bfstream.store.records import App, FileMakerTarget
from bfstream.store.store import FILEMAKER_PASSWORD, Store
from bfstream.webhooks import MAX_ANSWER_BYTES, url_problem

log = logging.getLogger("bfstream.filemaker")

_LOGOUT_GRACE = 2.0  # seconds to log the sessions out at shutdown; after that the server expires them


@dataclass
class _Session:
    key: tuple[str, str, str]  # (host, database, account): a changed target gets a new session
    token: str | None = None
    login: asyncio.Lock = field(default_factory=asyncio.Lock)


class FileMaker:
    """The Data API client of one instance, for every app that has a FileMaker target."""

    def __init__(self, http: ProviderClient, store: Store, settings: Settings) -> None:
        self._http = http
        self._store = store
        self._settings = settings
        self._sealer: CredentialSealer | None = None
        self._sessions: dict[str, _Session] = {}  # by app id
        self.logins = 0

    async def run_script(self, app: App, script: str, parameter: Any) -> str | None:
        """Run ``script`` with ``parameter`` as its JSON text; what it returned (None: nothing).
        ``FileMakerError`` for a server that cannot be reached or refuses, a script that does not
        exist or ends in an error, or no answer within ``tools.webhook_timeout`` (login included)."""
        target = app.filemaker
        if target is None:
            raise FileMakerError("The app has no FileMaker Server")
        tools = self._settings.tools
        text = json.dumps(parameter, ensure_ascii=False, separators=(",", ":"))
        request = wire.run_script(target.host, target.database, target.layout, script, text)
        seconds = tools.webhook_timeout
        try:
            async with asyncio.timeout(seconds):
                # Checked at each call, as webhooks are: a name may resolve elsewhere now.
                why = await url_problem(target.host, tools.allow_private_webhooks) or await plain_http_problem(
                    target.host, tools.allow_private_webhooks
                )
                if why is not None:
                    raise FileMakerError(f"The FileMaker Server cannot be called: {why}")
                session = self._session(app.id, target)
                token = await self._token(session, app, target)
                status, answer, _ = await self._send(request, f"Bearer {token}")
                if wire.refused_token(status, answer):
                    self._forget(session, token)
                    token = await self._token(session, app, target)
                    status, answer, _ = await self._send(request, f"Bearer {token}")
                    if wire.refused_token(status, answer):
                        self._forget(session, token)
        except TimeoutError:
            raise FileMakerError(f"The FileMaker Server did not answer within {seconds:g} s", code=504) from None
        return wire.script_result(status, answer, script)

    def _session(self, app_id: str, target: FileMakerTarget) -> _Session:
        key = (target.host, target.database, target.account)
        session = self._sessions.get(app_id)
        if session is None or session.key != key:
            session = self._sessions[app_id] = _Session(key)
        return session

    async def _token(self, session: _Session, app: App, target: FileMakerTarget) -> str:
        async with session.login:  # the first caller logs in; the others wait and use its token
            if session.token is None:
                session.token = await self._login(app, target)
            return session.token

    @staticmethod
    def _forget(session: _Session, token: str) -> None:
        """Only the token that was refused: another caller may have logged in again already."""
        if session.token == token:
            session.token = None

    async def _login(self, app: App, target: FileMakerTarget) -> str:
        password = await self._password(app)
        release = hold(password)
        try:
            authorization = wire.basic(target.account, password)
            _, answer, headers = await self._send(wire.login(target.host, target.database), authorization)
        finally:
            release()
        self.logins += 1
        return wire.token_of(headers, answer)

    async def _password(self, app: App) -> str:
        try:
            sealed = await self._store.credential(app.id, FILEMAKER_PASSWORD)
        except StoreError as exc:
            raise FileMakerError(f"The app's FileMaker password could not be read: {exc.message}") from None
        if sealed is None:
            raise FileMakerError("The app keeps no FileMaker password: set the target again with apps update")
        # Looked up again until found: on SQLite, the key file may be made by the CLI after start-up.
        box = self._sealer or sealer(self._settings, create=False)
        if box is None:
            raise FileMakerError("This server has no credentials_key to decrypt the app's FileMaker password")
        self._sealer = box
        try:
            return box.open(app.id, FILEMAKER_PASSWORD, sealed)
        except CredentialUnavailable as exc:
            raise FileMakerError(exc.message) from None

    async def _send(self, request: wire.Request, authorization: str | None) -> tuple[int, Any, dict[str, str]]:
        """One request; its status, JSON answer and headers (names in lower case)."""
        headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "bfstream-filemaker"}
        if authorization is not None:
            headers["Authorization"] = authorization
        try:
            sending = self._http.request(
                request.method, URL(request.url, encoded=True), data=request.body, headers=headers,
                allow_redirects=False,
            )  # fmt: skip
            async with sending as response:
                raw = b""
                async for piece in response.content.iter_any():
                    raw += piece
                    if len(raw) > MAX_ANSWER_BYTES:
                        raise FileMakerError(f"The FileMaker Server's answer is larger than {MAX_ANSWER_BYTES} bytes")
                status = response.status
                answer_headers = {name.lower(): value for name, value in response.headers.items()}
        except (aiohttp.ClientError, OSError) as exc:
            detail = scrub(str(exc)) or type(exc).__name__
            raise FileMakerError("The FileMaker Server could not be reached", details=detail) from None
        return status, wire.parse(raw, status), answer_headers

    async def close(self) -> None:
        """Log the sessions out, so they do not count against the server's limit for 15 minutes;
        what does not answer within ``_LOGOUT_GRACE`` expires there by itself."""
        sessions = [s for s in self._sessions.values() if s.token is not None]
        self._sessions.clear()
        if not sessions:
            return

        async def logout(session: _Session) -> None:
            host, database, _ = session.key
            assert session.token is not None
            try:
                await self._send(wire.logout(host, database, session.token), None)
            except FileMakerError as exc:
                log.info("a FileMaker session could not be logged out: %s", exc.message)

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_LOGOUT_GRACE):
                await asyncio.gather(*(logout(s) for s in sessions))
