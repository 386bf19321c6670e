"""A FileMaker Server's Data API, as Claris documents it, for the tests: a real HTTP server on a free
port that logs every request and answers as the Data API does, its awkward parts included.

- Every answer is JSON ``{"response": {...}, "messages": [{"code": "0", "message": "OK"}]}``, the
  code a string; HTTP 401 with 952 for a session token that is missing, unknown or expired, 401 with
  212 for a refused account or password at login, 500 with FileMaker's code for the rest (104 no
  such script, 105 no such layout, 802 no such database), 415 without ``Content-Type:
  application/json``.
- A login (``POST .../sessions`` with Basic authorization and ``{}``) answers the token twice: in
  the ``X-FM-Data-Access-Token`` header and as ``response.token``. ``expire_tokens`` ends every
  session, as 15 minutes without a call or a server restart do.
- Scripts are the test's Python callables, given the parameter text (``Get ( ScriptParameter )``)
  and returning what ``Exit Script`` would (text, or None for nothing); ``ScriptFailed(code)`` is
  a script that ends in an error: 200 and code 0 all the same, with ``response.scriptError`` set.
  They run from the GET "run a script" request or after a "create record" POST that names them.
- A request whose URI is longer than ``max_uri`` (IIS's default query limit, near the 2000
  characters Claris advises) is refused with 414 and an HTML body, as a web server in front does.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

Script = Callable[[str], "str | Awaitable[str | None] | None"]

_VERSIONS = ("v1", "v2", "vLatest")
_OK = [{"code": "0", "message": "OK"}]


class ScriptFailed(Exception):
    """A script that ends with ``Get ( LastError )`` = ``code``."""

    def __init__(self, code: int, result: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.result = result


@dataclass
class Logged:
    method: str
    path: str  # decoded, without the query
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Ran:
    """One run of a script: its name and the parameter it got."""

    script: str
    parameter: str

    def json(self) -> Any:
        return json.loads(self.parameter)


@dataclass
class FakeFileMaker:
    database: str = "Shop"
    layout: str = "Bfstream"
    account: str = "bfstream"
    password: str = ""
    max_uri: int = 2048
    scripts: dict[str, Script] = field(default_factory=dict)
    requests: list[Logged] = field(default_factory=list)
    ran: list[Ran] = field(default_factory=list)
    logins: int = 0
    url: str = ""
    _tokens: set[str] = field(default_factory=set)
    _records: int = 0
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    def expire_tokens(self) -> None:
        """Every session ends, as after 15 minutes unused: the next call with one gets 952."""
        self._tokens.clear()

    def answers_to(self, method: str, part: str) -> list[Logged]:
        return [r for r in self.requests if r.method == method and part in r.path]

    async def _handle(self, request: Request) -> Response:
        raw_path = request.scope["raw_path"].decode("latin-1")
        raw_query = request.scope["query_string"].decode("latin-1")
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        segments = [unquote(s) for s in raw_path.split("/")[1:]]
        query = {k: v[0] for k, v in parse_qs(raw_query, keep_blank_values=True).items()}
        self.requests.append(Logged(request.method, "/" + "/".join(segments), query, headers, body))
        if len(raw_path) + len(raw_query) + 1 > self.max_uri:
            return HTMLResponse("<html><body><h1>414 Request-URI Too Long</h1></body></html>", status_code=414)
        if segments[:2] != ["fmi", "data"] or len(segments) < 5 or segments[2] not in _VERSIONS:
            return _answer(404, "-1", "Unknown error")  # no such endpoint: not JSON from the engine itself
        if segments[3] != "databases":
            return _answer(404, "-1", "Unknown error")
        if request.method in ("POST", "PATCH") and not headers.get("content-type", "").startswith("application/json"):
            return _answer(415, "-1", "Unknown error")
        database, rest = segments[4], segments[5:]
        if rest == ["sessions"] and request.method == "POST":
            return self._login(database, headers)
        if len(rest) == 2 and rest[0] == "sessions" and request.method == "DELETE":
            self._tokens.discard(rest[1])
            return JSONResponse({"response": {}, "messages": _OK})
        if not self._token_ok(headers):
            return _answer(401, "952", "Invalid FileMaker Data API token (*)")
        if database != self.database:
            return _answer(500, "802", "Unable to open file")
        if len(rest) < 3 or rest[0] != "layouts":
            return _answer(404, "-1", "Unknown error")
        if rest[1] != self.layout:
            return _answer(500, "105", "Layout is missing")
        if len(rest) == 4 and rest[2] == "script" and request.method == "GET":
            name = rest[3]
            if name not in self.scripts:
                return _answer(500, "104", "Script is missing")
            return JSONResponse({"response": await self._run(name, query.get("script.param", "")), "messages": _OK})
        if rest[2:] == ["records"] and request.method == "POST":
            return await self._create_record(body)
        return _answer(404, "-1", "Unknown error")

    def _login(self, database: str, headers: dict[str, str]) -> Response:
        scheme, _, encoded = headers.get("authorization", "").partition(" ")
        try:
            account, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            account, password = "", ""
        if scheme != "Basic" or account != self.account or password != self.password:
            return _answer(401, "212", "Invalid user account and/or password; please try again")
        if database != self.database:
            return _answer(500, "802", "Unable to open file")
        token = secrets.token_hex(24)
        self._tokens.add(token)
        self.logins += 1
        body = {"response": {"token": token}, "messages": _OK}
        return JSONResponse(body, headers={"X-FM-Data-Access-Token": token})

    def _token_ok(self, headers: dict[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return scheme == "Bearer" and token in self._tokens

    async def _create_record(self, body: bytes) -> Response:
        try:
            data = json.loads(body)
        except ValueError:
            return _answer(500, "1630", "URL format is incorrect")
        if not isinstance(data, dict) or not isinstance(data.get("fieldData"), dict):
            return _answer(500, "10", "Requested data is missing")
        self._records += 1
        response: dict[str, Any] = {"recordId": str(self._records), "modId": "0"}
        name = data.get("script")
        if isinstance(name, str):
            if name not in self.scripts:
                response["scriptError"] = "104"
            else:
                response.update(await self._run(name, str(data.get("script.param", ""))))
        return JSONResponse({"response": response, "messages": _OK})

    async def _run(self, name: str, parameter: str) -> dict[str, Any]:
        self.ran.append(Ran(name, parameter))
        try:
            result = self.scripts[name](parameter)
            if inspect.isawaitable(result):
                result = await result
        except ScriptFailed as failed:
            answer: dict[str, Any] = {"scriptError": str(failed.code)}
            if failed.result is not None:
                answer["scriptResult"] = failed.result
            return answer
        return {"scriptError": "0"} if result is None else {"scriptResult": result, "scriptError": "0"}

    async def __aenter__(self) -> FakeFileMaker:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        methods = ["GET", "POST", "PATCH", "DELETE"]
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        async with asyncio.timeout(10):
            while not self._server.started:
                await asyncio.sleep(0.005)
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        await asyncio.wait_for(self._task, 10)


def _answer(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"messages": [{"code": code, "message": message}], "response": {}}, status_code=status)
