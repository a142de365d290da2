"""TLS and bearer tokens as every component needs them: what a failed handshake means (pure), the trust
of a private CA and the token of a protected /metrics (each reads only the local file a setting names).

The token travels in the query string, so a client must never fall back to plain HTTP or skip
verification: an untrusted certificate is an error that says which setting names the CA.
"""

from __future__ import annotations

import hmac
import ssl

from .pod_contract import ENV_CA_CERTS

#: the setting of our worker and operator (and of lightly's own client) naming a CA file to trust
CA_SETTING = ENV_CA_CERTS


def tls_problem(exc: BaseException) -> str | None:
    """Why a TLS handshake in ``exc``'s chain failed, as a sentence with what to change; None when the
    failure was not about TLS. Never contains a URL (ours carry the token)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError):
            why = e.verify_message or e.reason or "verification failed"
            return (
                f"its TLS certificate is not trusted ({why}); set {CA_SETTING} to the PEM file of the CA that "
                "signed the server's certificate"
            )
        if isinstance(e, ssl.SSLError):
            why = e.reason or type(e).__name__
            hint = (
                "; the server may speak plain HTTP: use an http:// URL, or serve TLS (--tls-cert/--tls-key)"
                if why in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG")
                else ""
            )
            return f"the TLS handshake failed ({why}){hint}"
        e = e.__cause__ or e.__context__
    return None


class TrustFileError(ValueError):
    """A CA or token file named by a setting that cannot be used; the message says what to fix (never the
    file's content)."""


def trust_context(path: str | None, setting: str = CA_SETTING) -> ssl.SSLContext | bool:
    """httpx's ``verify=`` for the API: True (the default CAs) without ``path``, else the system's CAs
    plus the PEM CA certificates in ``path``. Reads only that local file; ``TrustFileError`` if unusable."""
    if not path:
        return True
    ctx = ssl.create_default_context()
    try:
        ctx.load_verify_locations(cafile=path)
    except FileNotFoundError:
        raise TrustFileError(f"{setting}={path}: no such file; mount the CA's PEM file there") from None
    except (OSError, ssl.SSLError) as exc:
        why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise TrustFileError(
            f"{setting}={path} cannot be used ({why}); it must be a readable file of PEM CA certificates "
            "(-----BEGIN CERTIFICATE-----)"
        ) from None
    return ctx


def read_token_file(path: str, setting: str) -> str:
    """The bearer token in the local file ``path`` (surrounding whitespace removed); ``TrustFileError``,
    naming ``setting`` and never the token, when it cannot be used."""
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except OSError as exc:
        raise TrustFileError(
            f"{setting} {path} cannot be read ({exc.strerror}); give a file holding the token /metrics asks for"
        ) from None
    except UnicodeDecodeError:
        raise TrustFileError(f"{setting} {path} is not text; put the token (one line) in it") from None
    if not token or any(c.isspace() for c in token):
        raise TrustFileError(f"{setting} {path}: put one token (no spaces, not empty) in the file")
    return token


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <token>`` (compared in constant time)."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
