"""``/static/``: the files of ``bfstream/static/`` (the browser client ``bfstream.js``, the wire
schema ``protocol.json``), as browsers need them.

- Types set here, not guessed: a module script must come as JavaScript (the security headers say
  ``nosniff``, so a wrong type is refused), and Python 3.11's table, or the machine's
  ``/etc/mime.types``, may say ``application/javascript`` or nothing at all.
- ``Cache-Control: no-cache`` with the ETag and Last-Modified of StaticFiles: pages import the client
  at one fixed URL (there is no build step to put a hash in its name), so a browser must revalidate
  on each load, which costs a 304 when nothing changed, and gets the new client as soon as the server
  is upgraded: never an old client against a new server.
- ``Access-Control-Allow-Origin: *``: the client is public and carries no credentials, and a page on
  another origin imports it as a module, which browsers fetch in CORS mode. Who may then connect is
  still each app's list of origins.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"

TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


class ClientFiles(StaticFiles):
    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        headers = {"Cache-Control": "no-cache", "Access-Control-Allow-Origin": "*"}
        media_type = TYPES.get(Path(full_path).suffix.lower())
        response = FileResponse(
            full_path, status_code=status_code, headers=headers, media_type=media_type, stat_result=stat_result
        )
        if self.is_not_modified(response.headers, Headers(scope=scope)):
            return NotModifiedResponse(response.headers)
        return response


def static_files() -> ClientFiles:
    return ClientFiles(directory=STATIC_DIR)
