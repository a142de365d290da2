"""What a failed TLS handshake means, for the messages of every client (pure: no I/O).

The token travels in the query string, so a client must never fall back to plain HTTP or skip
verification: an untrusted certificate is an error that says which setting names the CA.
"""

from __future__ import annotations

import ssl

#: the setting of our worker and operator (and of lightly's own client) naming a CA file to trust
CA_SETTING = "LIGHTLY_CA_CERTS"


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
