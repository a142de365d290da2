"""Server settings in the one settings idiom (``lightly_protocol.options``): each setting's default,
environment variable, flag and help are declared once, here; ``cli.py`` builds its parsers from them and
loads them from the command line, then the environment, then the defaults.

* ``DatabaseSettings``: the database, for every subcommand that opens it (``serve``, the token commands).
* ``ServerSettings``: what a server process uses (``Server``, the routes); the processes of
  ``--processes N`` start from the same object.
* ``ServeOptions``: what ``serve`` itself needs to listen (address, processes, TLS, logging).
* ``ChildOptions``: what a process of ``--processes N`` starts from (set by its parent, not by users).

Nothing here reads the environment: the CLI hands ``os.environ`` to ``load``. Two variables are read
where they are used instead: ``LIGHTLY_SERVER_SECRET_KEY`` (the key itself, by ``crypto.load_keys``: never
kept in settings, which ``--processes N`` writes to a file) and ``PROMETHEUS_MULTIPROC_DIR`` (set by
``--processes N`` for prometheus_client, which reads it itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lightly_protocol.options import option
from sqlalchemy.engine import make_url

DEFAULT_DATABASE = "sqlite:///lightly-server.sqlite3"


@dataclass(frozen=True)
class DatabaseSettings:
    database_url: str = option(
        DEFAULT_DATABASE,
        env="LIGHTLY_SERVER_DATABASE",
        flag="--database",
        help="SQLAlchemy URL: sqlite:///path.sqlite3 or postgresql://user@host/db",
    )


@dataclass(frozen=True)
class ServerSettings(DatabaseSettings):
    artifacts_dir: Path | None = option(
        None,
        env="LIGHTLY_SERVER_ARTIFACTS_DIR",
        flag="--artifacts-dir",
        help="where uploaded artifacts live (shared by all replicas); default: next to the SQLite file, "
        "else ./lightly-artifacts",
    )
    lease_seconds: float = option(
        120.0,
        env="LIGHTLY_SERVER_LEASE_SECONDS",
        flag="--lease-seconds",
        help="a worker silent this long is marked OFFLINE and its run reopened",
    )
    max_attempts: int = option(
        3,
        env="LIGHTLY_SERVER_MAX_ATTEMPTS",
        flag="--max-attempts",
        help="a scheduled run lost this many times ends DONE with the failure recorded",
    )
    max_wait_seconds: float = option(60.0, flag="--max-wait-seconds", help="cap of the waitSeconds long-poll extension")
    public_url: str | None = option(
        None,
        env="LIGHTLY_SERVER_PUBLIC_URL",
        flag="--public-url",
        help="base URL of signed artifact URLs (default: the URL the request came in on)",
    )
    max_upload_bytes: int = option(
        20 * 1024**3, env="LIGHTLY_SERVER_MAX_UPLOAD_BYTES", flag="--max-upload-bytes", help="largest artifact upload"
    )
    max_body_bytes: int = option(
        8 * 1024**2,
        env="LIGHTLY_SERVER_MAX_BODY_BYTES",
        flag="--max-body-bytes",
        help="largest request body (413 beyond), except selections and artifact uploads",
    )
    max_selection_bytes: int = option(
        256 * 1024**2,  # 800k filenames fit
        env="LIGHTLY_SERVER_MAX_SELECTION_BYTES",
        flag="--max-selection-bytes",
        help="largest body of PUT /v1/docker/runs/{id}/selection",
    )
    max_shard_bytes: int = option(
        256 * 1024**2,
        env="LIGHTLY_SERVER_MAX_SHARD_BYTES",
        flag="--max-shard-bytes",
        help="largest shard listing (gzip body and uncompressed) and shard result (extension, /v1/ext/)",
    )
    secret_key_file: Path | None = option(
        None,
        env="LIGHTLY_SERVER_SECRET_KEY_FILE",
        flag="--secret-key-file",
        help="file with the secret key that seals datasource credentials and signs artifact URLs (one key a "
        "line, current first; never stored in the database); or set LIGHTLY_SERVER_SECRET_KEY",
    )
    local_datasource_root: Path | None = option(
        None,
        env="LIGHTLY_SERVER_LOCAL_DATASOURCE_ROOT",
        flag="--local-datasource-root",
        help="the folder a LOCAL datasource's fullPath is relative to, as this server sees it (the workers' "
        "mount): its signed sample read URLs (tag exports, download_dataset) serve files from there; "
        "without it they answer 404 saying so",
    )
    bucket_url_seconds: int = option(
        900,
        env="LIGHTLY_SERVER_BUCKET_URL_SECONDS",
        flag="--bucket-url-seconds",
        help="how long the presigned URLs of bucket datasources (S3, GCS, AZURE, OBS) are valid",
    )
    bucket_timeout_seconds: float = option(
        10.0,
        env="LIGHTLY_SERVER_BUCKET_TIMEOUT_SECONDS",
        flag="--bucket-timeout-seconds",
        help="timeout of each request to a bucket datasource's store (retried at most twice, with backoff)",
    )
    gcs_endpoint_url: str | None = option(
        None,
        env="STORAGE_EMULATOR_HOST",
        flag="--gcs-endpoint-url",
        help="the GCS endpoint for GCS datasources and their signed URLs (default Google's; the variable is the "
        "Google SDKs' own, e.g. an emulator's http://127.0.0.1:9023)",
    )
    azure_blob_endpoint: str | None = option(
        None,
        env="LIGHTLY_SERVER_AZURE_BLOB_ENDPOINT",
        flag="--azure-blob-endpoint",
        help="the blob service URL of AZURE datasources, {account} replaced by the account name (default "
        "https://{account}.blob.core.windows.net; Azurite: http://127.0.0.1:10000/{account})",
    )
    metrics_token_file: Path | None = option(
        None,
        env="LIGHTLY_SERVER_METRICS_TOKEN_FILE",
        flag="--metrics-token-file",
        help="file with a token: /metrics then answers only requests with 'Authorization: Bearer <token>' "
        "(401 otherwise); read at every scrape, so a rotated file takes effect at once",
    )

    def resolved_artifacts_dir(self) -> Path:
        if self.artifacts_dir is not None:
            return self.artifacts_dir
        u = make_url(self.database_url)
        if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
            p = Path(u.database).expanduser().resolve()
            return p.parent / f"{p.stem}-artifacts"
        return Path("lightly-artifacts").resolve()


@dataclass(frozen=True)
class ServeOptions:
    host: str = option("127.0.0.1", env="LIGHTLY_SERVER_HOST", flag="--host", help="listen address")
    port: int = option(8080, env="LIGHTLY_SERVER_PORT", flag="--port", help="listen port")
    processes: int = option(
        1,
        env="LIGHTLY_SERVER_PROCESSES",
        flag="--processes",
        help="server processes sharing the port, each using up to one core (PostgreSQL only)",
    )
    tls_cert: str | None = option(
        None,
        env="LIGHTLY_SERVER_TLS_CERT",
        flag="--tls-cert",
        help="serve HTTPS with this PEM certificate (chain); needs --tls-key. Without both: plain HTTP, "
        "which shows every ?token= to whoever is on the path",
    )
    tls_key: str | None = option(
        None, env="LIGHTLY_SERVER_TLS_KEY", flag="--tls-key", help="the PEM private key of --tls-cert"
    )
    log_level: str = option("info", env="LIGHTLY_SERVER_LOG_LEVEL", flag="--log-level", help="log level")


#: set by ``serve --processes N`` for its processes
CHILD_SETTINGS_ENV = "LIGHTLY_SERVER_CHILD_SETTINGS"


@dataclass(frozen=True)
class ChildOptions:
    settings_file: Path | None = option(
        None,
        env=CHILD_SETTINGS_ENV,
        help="the settings a process of --processes N starts from (JSON, written by its parent)",
    )
