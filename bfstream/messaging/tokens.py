"""Connection tokens: what lets a browser connect as one of the app's users without the app key.

The app's back end asks for a token (``POST /message/token``) and hands it to its page. A token
is ``<payload>.<signature>``, both base64url: the payload names the app, the user and the expiry;
the signature is HMAC-SHA256 under the server's signing key, checked in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from bfstream.errors import Forbidden, Unauthorized


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str | None = None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def issue(key: bytes, app_id: str, user: User, ttl: int) -> tuple[str, int]:
    expires_at = int(time.time()) + ttl
    claims = {"app": app_id, "sub": user.id, "email": user.email, "exp": expires_at}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{payload}.{_sign(key, payload)}", expires_at


def verify(key: bytes, token: str, app_id: str) -> User:
    """The token's user; ``Unauthorized`` if forged, malformed or expired, ``Forbidden`` if for another app."""
    payload, _, signature = token.partition(".")
    if not signature or not hmac.compare_digest(signature, _sign(key, payload)):
        raise Unauthorized("Invalid connection token")
    try:
        claims = json.loads(_unb64(payload))
        user = User(str(claims["sub"]), claims.get("email"))
        expires_at, token_app = int(claims["exp"]), claims["app"]
    except (ValueError, KeyError, TypeError):
        raise Unauthorized("Invalid connection token") from None
    if expires_at <= time.time():
        raise Unauthorized("Connection token expired")
    if token_app != app_id:
        raise Forbidden("Connection token belongs to another app")
    return user
