"""Network security of the server: TLS files checked at start, the optional bearer token of ``/metrics``.

Lightly's protocol carries the API token in the query string (``?token=``): on plain HTTP anyone on the
path reads it. ``--tls-cert``/``--tls-key`` make uvicorn serve HTTPS itself (every process of
``--processes N`` loads the same files); the files are checked here first, so a wrong path or a key
that does not fit the certificate is a clear message at start rather than a failure in a child process.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from lightly_protocol import tls


class NetworkSettingError(ValueError):
    """A TLS or metrics-token setting that cannot work; the message says what to fix."""


def check_tls(cert: str | Path | None, key: str | Path | None) -> tuple[str, str] | None:
    """``(cert, key)`` as uvicorn takes them, None without TLS; both or neither must be given, and
    the key must belong to the certificate."""
    if not cert and not key:
        return None
    if not cert or not key:
        given, missing = ("--tls-cert", "--tls-key") if cert else ("--tls-key", "--tls-cert")
        raise NetworkSettingError(
            f"{given} needs {missing} too (env LIGHTLY_SERVER_TLS_CERT and LIGHTLY_SERVER_TLS_KEY): give both "
            "PEM files to serve HTTPS, or neither to serve plain HTTP"
        )
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        p = Path(path)
        if not p.is_file():
            raise NetworkSettingError(f"{flag} {path}: no such file; give the path of a PEM file")
        try:
            p.read_bytes()
        except OSError as exc:
            raise NetworkSettingError(f"{flag} {path} cannot be read ({exc.strerror}); check its permissions") from None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        raise NetworkSettingError(
            f"--tls-cert {cert} / --tls-key {key} cannot be used ({exc.reason or exc}): the certificate must be "
            "PEM (the server's first, then any intermediates) and the key the PEM private key of that certificate, "
            "unencrypted"
        ) from None
    return str(cert), str(key)


def read_token_file(path: str | Path, flag: str) -> str:
    """The bearer token in ``path`` (surrounding whitespace removed); never part of a message."""
    try:
        return tls.read_token_file(str(path), flag)
    except tls.TrustFileError as exc:
        raise NetworkSettingError(str(exc)) from None


bearer_matches = tls.bearer_matches
