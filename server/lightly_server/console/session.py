"""The console's sign-in session and CSRF tokens, both keyed by the server's own URL-signing key.

* **Session**: the cookie holds the API token sealed with Fernet (AES-128-CBC + HMAC-SHA256) under a key
  derived from the server's artifact URL key (``ArtifactStore.key``: from the secret key, else the shared
  artifacts directory's key file), so every replica opens every other replica's cookies, nobody can read or
  forge one, and it expires after ``SESSION_TTL_S``. Each request opens it and checks the token exactly as the
  API does (``TokenCache``), so a revoked token stops working in the console within ``TOKEN_TTL_S`` too.
  Signing out records the cookie's digest until it would expire (``store.signouts``): a copy of the cookie
  is refused from then on, on every replica.
* **CSRF**: a random ``CSRF_COOKIE`` per browser (SameSite=Strict, HttpOnly); every form carries the HMAC of
  it under a second derived key, and every POST must send that back. A forged cross-site POST has neither.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "lightly_console_session"
CSRF_COOKIE = "lightly_console_csrf"
CSRF_FIELD = "csrf_token"
#: how long a sign-in lasts (seconds)
SESSION_TTL_S = 12 * 3600
COOKIE_PATH = "/ui"


def _derive(key: bytes, purpose: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"lightly-server console {purpose} v1".encode()
    ).derive(key)


class SessionKeys:
    """The console's two keys, derived from the server's URL-signing key."""

    def __init__(self, url_key: bytes) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(url_key, "session")))
        self._csrf_key = _derive(url_key, "csrf")

    def seal(self, token: str) -> str:
        return self._fernet.encrypt(token.encode()).decode()

    def open(self, cookie: str | None) -> str | None:
        """The token a session cookie holds; None when it is missing, forged or expired."""
        if not cookie or not cookie.isascii():
            return None
        try:
            return self._fernet.decrypt(cookie.encode(), ttl=SESSION_TTL_S).decode()
        except (InvalidToken, ValueError):
            return None

    def expires_at(self, cookie: str) -> int | None:
        """When a genuine session cookie expires (unix seconds); None for anything else."""
        try:
            return self._fernet.extract_timestamp(cookie.encode()) + SESSION_TTL_S
        except (InvalidToken, ValueError):
            return None

    def csrf_token(self, browser_secret: str) -> str:
        return hmac.new(self._csrf_key, browser_secret.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, browser_secret: str | None, sent: str | None) -> bool:
        if not browser_secret or not sent or not sent.isascii() or not browser_secret.isascii():
            return False
        return hmac.compare_digest(self.csrf_token(browser_secret), sent)


def cookie_digest(cookie: str) -> str:
    """What a sign-out records of a session cookie (``store.signouts``): its SHA-256, never the cookie."""
    return hashlib.sha256(cookie.encode()).hexdigest()


def new_browser_secret() -> str:
    return secrets.token_urlsafe(32)


def served_over_tls(request: Request) -> bool:
    """HTTPS here, or at the proxy in front (``X-Forwarded-Proto: https``): cookies get ``Secure``."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=served_over_tls(request),
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="strict", secure=served_over_tls(request))
