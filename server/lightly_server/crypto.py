"""The server's secret key, kept outside the database: datasource credentials at rest, artifact URL keys.

The key comes from ``--secret-key-file`` (``LIGHTLY_SERVER_SECRET_KEY_FILE``) or from the environment
variable ``LIGHTLY_SERVER_SECRET_KEY``; never from the database. From it HKDF-SHA256 derives

- the Fernet key (AES-128-CBC + HMAC-SHA256, from ``cryptography``) that seals datasource
  credentials before they are stored, and
- the HMAC key of signed artifact URLs, so every replica started with the same key accepts every
  other replica's URLs.

A key file may hold several keys, one a line: the first seals new credentials and signs URLs; the
others still open what they sealed (key rotation). Without a key the server still runs: datasources
without credentials (LOCAL, LIGHTLY, S3DelegatedAccess) work, storing credentials is refused with a
message that says how to configure the key, and the artifact URL key is a random key in a file of the
shared artifacts directory (``.url-signing-key``), not in the database.

Credentials are write-only: answers carry ``REDACTED`` in their place (a non-empty string, so the real
client's models still parse). A PUT that sends ``REDACTED`` back keeps the stored value.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from lightly_protocol.enums import ApiErrorCode
from sqlalchemy import select, update

from .db import Database
from .errors import ApiError
from .schema import datasources, settings

log = logging.getLogger("lightly_server")

ENV_KEY = "LIGHTLY_SERVER_SECRET_KEY"
ENV_KEY_FILE = "LIGHTLY_SERVER_SECRET_KEY_FILE"
MIN_KEY_LENGTH = 32
#: what answers carry in place of a credential
REDACTED = "REDACTED"
#: the stored config's key holding the sealed credentials
SEALED = "_sealed"
#: credential fields per datasource type (write-only; sealed at rest)
SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    "S3": ("s3AccessKeyId", "s3SecretAccessKey"),
    "AZURE": ("accountKey",),
    "GCS": ("gcsCredentials",),
    "OBS": ("obsAccessKeyId", "obsSecretAccessKey"),
}
URL_KEY_FILE = ".url-signing-key"
_LEGACY_SIGNING_ROW = "artifact_signing_key"


class SecretKeyError(ValueError):
    """The configured key cannot be used (the message says how to fix it)."""


def generate_key() -> str:
    return secrets.token_urlsafe(48)


def load_keys(key_file: Path | None, env: dict[str, str] | None = None) -> list[bytes]:
    """The configured keys, current first; [] when none is configured."""
    env = dict(os.environ) if env is None else env
    if key_file is None and env.get(ENV_KEY_FILE):
        key_file = Path(env[ENV_KEY_FILE])
    if key_file is not None:
        try:
            lines = key_file.read_text().splitlines()
        except OSError as exc:
            raise SecretKeyError(f"cannot read the secret key file {key_file}: {exc.strerror or exc}") from None
        keys = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        where = f"the secret key file {key_file}"
        if not keys:
            raise SecretKeyError(f"{where} holds no key; generate one with 'lightly-server generate-secret-key'")
    elif env.get(ENV_KEY):
        keys, where = [env[ENV_KEY].strip()], ENV_KEY
    else:
        return []
    for k in keys:
        if len(k) < MIN_KEY_LENGTH:
            raise SecretKeyError(
                f"a key in {where} has {len(k)} characters; use at least {MIN_KEY_LENGTH} random characters "
                "(generate one with 'lightly-server generate-secret-key')"
            )
    return [k.encode() for k in keys]


def _derive(key: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"lightly-server {purpose} v1".encode()).derive(
        key
    )


class Keyring:
    def __init__(self, keys: list[bytes]) -> None:
        self.configured = bool(keys)
        self._fernet = (
            MultiFernet([Fernet(base64.urlsafe_b64encode(_derive(k, "datasource secrets"))) for k in keys])
            if keys
            else None
        )
        self.url_key = _derive(keys[0], "artifact url signing") if keys else None

    def seal(self, values: dict[str, str]) -> str:
        if self._fernet is None:
            raise missing_key_error(sorted(values))
        return self._fernet.encrypt(json.dumps(values).encode()).decode()

    def open(self, token: str) -> dict[str, str]:
        if self._fernet is None:
            raise missing_key_error([])
        try:
            opened: dict[str, str] = json.loads(self._fernet.decrypt(token.encode()))
            return opened
        except InvalidToken:
            raise ApiError(
                409,
                ApiErrorCode.DATASET_DATASOURCE_INVALID,
                "the stored credentials were sealed with a key this server does not have: start it with that key "
                "(a key file may list old keys after the current one) or set the credentials again",
            ) from None


def missing_key_error(fields: list[str]) -> ApiError:
    what = f" ({', '.join(fields)})" if fields else ""
    return ApiError(
        400,
        ApiErrorCode.DATASET_DATASOURCE_INVALID,
        f"this server has no secret key, so it does not store datasource credentials{what}: its operator must "
        f"start it with --secret-key-file or {ENV_KEY} (see docs/server.md, 'Secrets'); datasources without "
        "credentials (LOCAL, S3DelegatedAccess) need no key",
    )


def seal_datasource(keyring: Keyring, config: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """The form to store: credentials moved into one sealed value. ``REDACTED`` keeps a stored credential."""
    fields = SECRET_FIELDS.get(config.get("type", ""), ())
    values = {f: config[f] for f in fields if f in config}
    if not values:
        return config
    if any(v == REDACTED for v in values.values()):
        old: dict[str, str] = {}
        if previous is not None and previous.get("type") == config.get("type"):
            if SEALED in previous:
                old = keyring.open(previous[SEALED])
            else:
                old = {f: previous[f] for f in fields if f in previous}
        for f, v in values.items():
            if v == REDACTED:
                if f not in old:
                    raise ApiError(
                        400,
                        ApiErrorCode.DATASET_DATASOURCE_INVALID,
                        f"{f}: {REDACTED!r} stands for a stored credential, and none is stored for this purpose "
                        "and type; send the credential itself",
                    )
                values[f] = old[f]
    stored = {k: v for k, v in config.items() if k not in fields}
    stored[SEALED] = keyring.seal(values)
    return stored


def redact_datasource(stored: dict[str, Any]) -> dict[str, Any]:
    """The answer form of a stored config: every credential replaced by ``REDACTED``."""
    out = {k: v for k, v in stored.items() if not k.startswith("_")}  # _sealed, the server's own keys
    for f in SECRET_FIELDS.get(stored.get("type", ""), ()):
        out[f] = REDACTED
    return out


def open_datasource(keyring: Keyring, stored: dict[str, Any]) -> dict[str, Any]:
    """The stored config with its credentials opened (in memory only: for the bucket clients)."""
    if SEALED not in stored:
        return dict(stored)
    out = {k: v for k, v in stored.items() if k != SEALED}
    out.update(keyring.open(stored[SEALED]))
    return out


def seal_stored_datasources(db: Database, keyring: Keyring) -> int:
    """Migration: seal credentials stored in plain text by older servers. Returns how many rows hold plain
    credentials afterwards (0 when a key is configured)."""
    plain = 0
    with db.write() as conn:
        for r in conn.execute(select(datasources.c.id, datasources.c.config)).all():
            try:
                config = json.loads(r.config)
            except ValueError:
                continue
            fields = SECRET_FIELDS.get(config.get("type", ""), ())
            if not any(f in config for f in fields):
                continue
            if not keyring.configured:
                plain += 1
                continue
            sealed = seal_datasource(keyring, config, None)
            conn.execute(update(datasources).where(datasources.c.id == r.id).values(config=json.dumps(sealed)))
            log.info("datasource %s: credentials sealed with the server's secret key", r.id)
    if plain:
        log.warning(
            "%d datasource(s) hold credentials in plain text from an older server; start the server with "
            "--secret-key-file or %s to seal them (they are never returned by the API either way)",
            plain,
            ENV_KEY,
        )
    return plain


def url_signing_key(db: Database, keyring: Keyring, artifacts_dir: Path) -> bytes:
    """The artifact URL key: derived from the secret key, else a random key in the shared artifacts
    directory. A key that older servers kept in plain text in the database is removed from it (moved to
    the file when no secret key is configured, so URLs handed out before the upgrade stay valid)."""
    with db.write() as conn:
        row = conn.execute(select(settings.c.value).where(settings.c.key == _LEGACY_SIGNING_ROW)).first()
        legacy = bytes.fromhex(row.value) if row else None
        if row:
            conn.execute(settings.delete().where(settings.c.key == _LEGACY_SIGNING_ROW))
        if keyring.url_key is not None:
            return keyring.url_key
        return _key_file(artifacts_dir / URL_KEY_FILE, legacy)


def _key_file(path: Path, initial: bytes | None) -> bytes:
    with contextlib.suppress(FileNotFoundError):
        return bytes.fromhex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write((initial or secrets.token_bytes(32)).hex())
    try:
        os.link(tmp, path)  # atomic: the first replica's key wins
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return bytes.fromhex(path.read_text().strip())
