"""Response headers for browsers: security headers on every HTTP answer, so that a page of
bfstream cannot be framed, sniffed into another type, or made to load scripts from elsewhere; and
the per-app narrowing of CORS.

Every page bfstream serves gets a strict Content-Security-Policy: its scripts, styles, images and
connections come from this origin only (images also as ``data:`` URLs), with no inline script. The
API docs (``/docs``) are no exception: their viewer is bfstream's own copy (``api/docs.py``), so
a page works without the internet and no other origin runs script here.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_STRICT = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"


class SecurityHeaders:
    def __init__(self, app: ASGIApp, hsts: bool = False) -> None:
        self.app = app
        self.hsts = hsts  # only over TLS: a browser told so over plain HTTP would lock itself out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("Content-Security-Policy", _STRICT)
                if self.hsts:
                    headers.setdefault("Strict-Transport-Security", "max-age=31536000")
            await send(message)

        await self.app(scope, receive, send_with_headers)


# Kept in the request's state, the one dict that every middleware's copy of the scope shares.
APP_ORIGINS = "bfstream.app_origins"  # the origins of the app a request turned out to be for


def narrow_to_app(scope: Scope, origins: tuple[str, ...] | None) -> None:
    """Called by a handler once it knows the app: its answer may be read only by the app's origins."""
    if origins is not None and "*" not in origins and "state" in scope:
        scope["state"][APP_ORIGINS] = origins


class AppOrigins:
    """CORS per app. The preflight of a browser-callable endpoint cannot name its app (it has no
    body, and a stream id names none), so the server-wide ``cors_origins`` answer it; the answer
    itself then carries ``Access-Control-Allow-Origin`` only for an origin the app lists. Outside
    Starlette's CORSMiddleware, so this has the last word."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_narrowed(message: Message) -> None:
            origins = scope.get("state", {}).get(APP_ORIGINS)
            if message["type"] == "http.response.start" and origins is not None:
                headers = MutableHeaders(scope=message)
                origin = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"origin"), None)
                if origin is not None and origin.lower().rstrip("/") in origins:
                    headers["Access-Control-Allow-Origin"] = origin
                    if "origin" not in headers.get("vary", "").lower():
                        headers.add_vary_header("Origin")
                elif message.get("status", 200) < 400 and "access-control-allow-origin" in headers:
                    # A refusal stays readable (the page learns it is refused, and stops retrying);
                    # anything else is for the app's origins only.
                    del headers["Access-Control-Allow-Origin"]
            await send(message)

        await self.app(scope, receive, send_narrowed)
