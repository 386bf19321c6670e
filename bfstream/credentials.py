"""Provider keys kept on the server for an app (``bfstream apps credentials``), sealed at rest.

A stored key is encrypted with AES-256-GCM from ``cryptography`` (no cipher of our own) under the
server's credentials key; the app id and the service name are the associated data, so a sealed
value copied to another app's or service's row does not open there. What is stored is
``v1.`` and the base64 of a 12-byte random nonce followed by the ciphertext and its tag: the
version lets a later scheme read the rows this one wrote.

The credentials key comes from the ``credentials_key`` setting (``BFSTREAM_CREDENTIALS_KEY``),
the same on every instance of a fleet; any string of 32 characters or more, stretched to 256 bits
with HKDF-SHA256. ``credentials_previous_keys`` still open what they sealed while a key is being
replaced (docs/security.md). Unset, a server on SQLite makes a random key on first use and keeps it
in the data directory, apart from the database (mode 0600), so a copy of the database file alone
does not give the keys away; on PostgreSQL, where each instance has its own directory, the setting
is required.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bfstream.config import Settings
from bfstream.errors import CredentialUnavailable
from bfstream.store.store import is_postgres

_VERSION = "v1."
_NONCE = 12
KEY_FILE = "credentials.key"


def _aes_key(secret: str) -> bytes:
    """256 bits from the configured string: HKDF, since the string is text an operator chose."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"bfstream credentials v1")
    return hkdf.derive(secret.encode())


def _associated(app_id: str, service: str) -> bytes:
    return f"{app_id}\0{service}".encode()


class CredentialSealer:
    """Seals with the current key and opens with it or any previous one."""

    def __init__(self, current: str, previous: list[str] | None = None) -> None:
        self._current = AESGCM(_aes_key(current))
        self._all = [self._current, *(AESGCM(_aes_key(k)) for k in previous or [])]

    def seal(self, app_id: str, service: str, provider_key: str) -> str:
        nonce = secrets.token_bytes(_NONCE)
        sealed = self._current.encrypt(nonce, provider_key.encode(), _associated(app_id, service))
        return _VERSION + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, app_id: str, service: str, stored: str) -> str:
        """The provider key, or ``CredentialUnavailable`` when no key this server has sealed it
        (another server's key, a key replaced without ``credentials_previous_keys``, a moved row)."""
        if not stored.startswith(_VERSION):
            raise _unreadable(service)
        try:
            raw = base64.urlsafe_b64decode(stored[len(_VERSION) :])
        except ValueError:
            raise _unreadable(service) from None
        for cipher in self._all:
            with contextlib.suppress(InvalidTag):
                return cipher.decrypt(raw[:_NONCE], raw[_NONCE:], _associated(app_id, service)).decode()
        raise _unreadable(service)


def _unreadable(service: str) -> CredentialUnavailable:
    return CredentialUnavailable(
        f"The app's stored key for {service!r} cannot be decrypted with this server's credentials_key;"
        " the operator must set the key it was stored with, or store the credential again",
        code="credential_unreadable",
    )


def sealer(settings: Settings, *, create: bool) -> CredentialSealer | None:
    """The sealer the settings give. Without ``credentials_key``: on SQLite, the key file in the data
    directory, made when ``create`` (a credential is being stored) and missing; None when there is
    no key to be had (nothing was ever stored with one, or PostgreSQL without the setting)."""
    if settings.credentials_key is not None:
        return CredentialSealer(settings.credentials_key, settings.credentials_previous_keys)
    if is_postgres(settings.database_url):
        return None
    path = settings.data_dir / KEY_FILE
    secret = _read_key_file(path)
    if secret is None and create:
        secret = _make_key_file(path)
    return CredentialSealer(secret, settings.credentials_previous_keys) if secret else None


def _read_key_file(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _make_key_file(path: Path) -> str:
    """Written whole to a private temporary file (mode 0600), then linked into place: of two
    commands making it at once, one link wins and the other reads the key it holds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".credentials-")  # mkstemp's mode is 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secret + "\n")
        os.link(temporary, path)
    except FileExistsError:
        return _read_key_file(path) or secret
    finally:
        os.unlink(temporary)
    return secret


def masked(provider_key: str) -> str:
    """What ``credentials list`` shows: the first three and last four characters of a long key
    (``sk-…abcd``), which tell keys apart without giving one away; of a short key, nothing."""
    return f"{provider_key[:3]}…{provider_key[-4:]}" if len(provider_key) >= 16 else "…"
