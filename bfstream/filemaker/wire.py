"""The FileMaker Data API's requests and answers, without I/O: URLs, headers, and what an answer means.

Every answer is JSON shaped ``{"response": {...}, "messages": [{"code": "0", "message": "OK"}]}``;
the code in ``messages`` (a string) says how it went, whatever the HTTP status: 401 with 952 for a
session token that expired or was never valid, 401 with 212 for a refused account or password at
login, 500 with FileMaker's own codes (104 no such script, 105 no such layout, 100 or 802 no such
database, 9 not allowed) for the rest. A script that ran answers 200 with code 0 and its own
outcome in ``response.scriptError`` (``"0"``: none) and ``response.scriptResult`` (what its Exit
Script step returned, as text; absent when it returned nothing).

A script runs with the documented GET request (``.../layouts/L/script/S?script.param=...``) when the
whole URI stays within the 2000 characters Claris advises (servers and proxies refuse longer ones,
the limit depends on which). A longer parameter, such as a completion event carrying the whole
answer, goes in the body of a "create record" request on the same layout instead, which runs the
script after creating one empty record there: the only Data API request that carries a script
parameter in its body without a query of the layout's fields. The record is the script's
current record, to delete or keep as a log.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from bfstream.errors import FileMakerError
from bfstream.text import provider_json

VERSION = "vLatest"
MAX_URI = 2000  # characters of one request's URI: Claris's advice for every host and proxy
INVALID_TOKEN = "952"

# What a code means to the operator reading bfstream's log and to the model reading a failed tool.
_MEANINGS = {
    "9": "the account may not do this (its privilege set needs the fmrest extended privilege and the script)",
    "100": "the database is not hosted on this server",
    "802": "the database cannot be opened on this server",
    "104": "there is no script of that name",
    "105": "there is no layout of that name",
    "212": "the account or password was refused",
    "952": "the session token was refused",
    "953": "the Data API is not enabled for this server or database",
}


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str  # percent-encoded already, to be sent as it is
    body: bytes | None


def base_url(host: str, database: str) -> str:
    return f"{host}/fmi/data/{VERSION}/databases/{_segment(database)}"


def login(host: str, database: str) -> Request:
    """Log in for a session token: POST with an empty JSON object (the account goes in ``basic``)."""
    return Request("POST", f"{base_url(host, database)}/sessions", b"{}")


def logout(host: str, database: str, token: str) -> Request:
    return Request("DELETE", f"{base_url(host, database)}/sessions/{_segment(token)}", None)


def basic(account: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{account}:{password}".encode()).decode()


def run_script(host: str, database: str, layout: str, script: str, parameter: str) -> Request:
    """The documented GET when it fits in ``MAX_URI``, else a "create record" POST with the
    parameter in its body (the module's docstring says why)."""
    layouts = f"{base_url(host, database)}/layouts/{_segment(layout)}"
    url = f"{layouts}/script/{_segment(script)}?script.param={quote(parameter, safe='')}"
    if len(url) - len(host) <= MAX_URI:
        return Request("GET", url, None)
    body = {"fieldData": {}, "script": script, "script.param": parameter}
    return Request("POST", f"{layouts}/records", json.dumps(body, ensure_ascii=False).encode())


def _segment(name: str) -> str:
    """A name as one path segment: a layout called "Calls/2024" must not become two."""
    return quote(name, safe="")


def answer_code(answer: Any) -> tuple[str, str]:
    """The first message's code and text; ("?", ...) for an answer that has none."""
    messages = answer.get("messages") if isinstance(answer, dict) else None
    first = messages[0] if isinstance(messages, list) and messages and isinstance(messages[0], dict) else {}
    return str(first.get("code", "?")), str(first.get("message", ""))


def refused_token(status: int, answer: Any) -> bool:
    """The session is gone (expired after 15 minutes unused, or the server restarted): log in again.
    Claris documents 401 on any call but the login as a token missing or not valid, with 952."""
    return status == 401 or answer_code(answer)[0] == INVALID_TOKEN


def parse(raw: bytes, status: int) -> Any:
    """The answer's JSON, or ``FileMakerError`` for one that is not (a proxy's HTML error page)."""
    try:
        return provider_json(raw)
    except ValueError:
        raise FileMakerError(f"The FileMaker Server answered HTTP {status} without the Data API's JSON") from None


def token_of(headers: dict[str, str], answer: Any) -> str:
    """The session token of a login's answer: the ``X-FM-Data-Access-Token`` header, or
    ``response.token`` in the body; either way, a code other than 0 is a refusal."""
    code, message = answer_code(answer)
    if code != "0":
        raise failure("log in", code, message)
    response = answer.get("response") if isinstance(answer, dict) else None
    token = headers.get("x-fm-data-access-token") or (response or {}).get("token")
    if not isinstance(token, str) or not token:
        raise FileMakerError("The FileMaker Server's login answer carried no session token")
    return token


def script_result(status: int, answer: Any, script: str) -> str | None:
    """What the script returned (``Exit Script``'s result, as text), None when it returned nothing;
    ``FileMakerError`` for a request that failed or a script that ended in an error."""
    code, message = answer_code(answer)
    if code != "0" or not 200 <= status < 300:
        raise failure(f"run the script {script!r}", code, message)
    response = answer.get("response") if isinstance(answer, dict) else None
    response = response if isinstance(response, dict) else {}
    error = str(response.get("scriptError", "0"))
    if error != "0":
        raise FileMakerError(f"The FileMaker script {script!r} ended with FileMaker error {error}", code=error)
    result = response.get("scriptResult")
    return None if result is None else str(result)


def failure(doing: str, code: str, message: str) -> FileMakerError:
    meaning = _MEANINGS.get(code) or message or "no reason given"
    return FileMakerError(f"The FileMaker Server could not {doing}: {meaning} (error {code})", code=code)


def tool_result(result: str | None, script: str) -> Any:
    """A script's result as the model reads it: JSON when it is JSON, else the text wrapped so the
    model sees it was the tool's answer; a script that returned nothing did its work and said so."""
    if result is None:
        return {"success": True, "message": f"The script {script} ran and returned nothing"}
    try:
        return provider_json(result)
    except ValueError:
        return {"result": result}
