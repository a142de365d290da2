"""``lightly-server``: serve the API, or create, list and revoke tokens."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from lightly_protocol.logsafe import configure_logging
from lightly_protocol.options import OptionError, add_flags, flag_values, load

from .gc_pacing import tune_process
from .settings import CHILD_SETTINGS_ENV, ChildOptions, DatabaseSettings, ServeOptions, ServerSettings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lightly-server", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the API server")
    add_flags(s, ServeOptions)
    add_flags(s, ServerSettings)

    t = sub.add_parser("create-token", help="create a token for a user (printed alone on stdout, shown once)")
    add_flags(t, DatabaseSettings)
    t.add_argument("--user", required=True, help="user name (created if new)")
    t.add_argument(
        "--label",
        help="what the token is for, shown by list-tokens (e.g. the LightlyWorker fleet that uses it: one token "
        "per fleet, so each can be revoked alone)",
    )

    lt = sub.add_parser(
        "list-tokens", help="list the tokens: fingerprint, label, user, created, last used (never the tokens)"
    )
    add_flags(lt, DatabaseSettings)

    rt = sub.add_parser(
        "revoke-token",
        help="delete a token, named by its FINGERPRINT from list-tokens (or given itself with --token-file); "
        "every server refuses it within 5 s",
    )
    add_flags(rt, DatabaseSettings)
    rt.add_argument("fingerprint", nargs="?", help="the token's FINGERPRINT column in list-tokens")
    rt.add_argument(
        "--token-file",
        help="read the token itself from this file ('-': stdin) instead of naming its fingerprint",
    )

    sub.add_parser(
        "generate-secret-key",
        help="print a new random secret key (for --secret-key-file or LIGHTLY_SERVER_SECRET_KEY)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "generate-secret-key":
        from .crypto import generate_key

        print(generate_key())
        return 0
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, OperationalError

    try:  # flags, then the environment, then the defaults
        if args.command == "serve":
            settings: DatabaseSettings = load(ServerSettings, os.environ, flag_values(args, ServerSettings))
            serve = load(ServeOptions, os.environ, flag_values(args, ServeOptions))
        else:
            settings = load(DatabaseSettings, os.environ, flag_values(args, DatabaseSettings))
    except OptionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        backend = make_url(settings.database_url).get_backend_name()
    except ArgumentError:
        backend = ""
    if backend not in ("sqlite", "postgresql"):
        print(
            f"error: --database {settings.database_url!r}: use sqlite:///path/to/file.sqlite3 or "
            "postgresql://user:password@host:5432/dbname",
            file=sys.stderr,
        )
        return 2
    try:
        if isinstance(settings, ServerSettings):
            return _serve(settings, serve)
        return _run(args, settings.database_url)
    except OperationalError as exc:
        print(
            f"error: cannot open the database ({str(exc.orig).splitlines()[0]}); check --database and that "
            "the database server is running",
            file=sys.stderr,
        )
        return 1


def _run(args: argparse.Namespace, database_url: str) -> int:
    if args.command == "list-tokens":
        return _list_tokens(database_url)
    if args.command == "revoke-token":
        return _revoke_token(args, database_url)
    from .auth import create_token
    from .db import Database

    user = args.user.strip()
    if not 1 <= len(user) <= 200 or "\x00" in user:
        print("error: --user must be 1 to 200 characters without NUL", file=sys.stderr)
        return 2
    if args.label is not None:
        from .auth import label_problem

        problem = label_problem(args.label)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    db = Database(database_url)
    db.migrate()
    print(create_token(db, user, args.label))
    db.dispose()
    return 0


def _serve(settings: ServerSettings, serve: ServeOptions) -> int:
    import uvicorn

    from .app import create_app

    if not 1 <= serve.processes <= MAX_PROCESSES:
        print(f"error: --processes must be 1 to {MAX_PROCESSES} (got {serve.processes})", file=sys.stderr)
        return 2
    if serve.processes > 1 and settings.database_url.startswith("sqlite"):
        print(
            "error: --processes > 1 needs PostgreSQL (--database postgresql://...): the processes agree on who "
            "gets a run through PostgreSQL (NOTIFY, advisory locks); on one SQLite file they would hand each "
            "run to a worker in every process and queue their writes on the file lock",
            file=sys.stderr,
        )
        return 2
    if settings.lease_seconds <= 0 or settings.max_attempts < 1:
        print("error: --lease-seconds must be > 0 and --max-attempts >= 1", file=sys.stderr)
        return 2
    limits = (
        settings.max_body_bytes,
        settings.max_selection_bytes,
        settings.max_upload_bytes,
        settings.max_shard_bytes,
    )
    if min(limits) < 1024:
        print(
            "error: --max-body-bytes, --max-selection-bytes, --max-upload-bytes and --max-shard-bytes must be >= 1024",
            file=sys.stderr,
        )
        return 2
    from .crypto import SecretKeyError, load_keys

    try:
        load_keys(settings.secret_key_file)
    except SecretKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from .netsec import NetworkSettingError, check_tls, read_token_file

    try:
        tls = check_tls(serve.tls_cert, serve.tls_key)
        if settings.metrics_token_file:
            read_token_file(settings.metrics_token_file, "--metrics-token-file")
    except NetworkSettingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(serve.log_level)  # tokens redacted in every record
    # access_log off: uvicorn's access log would print ?token=... query strings
    options: dict[str, Any] = {
        "host": serve.host,
        "port": serve.port,
        "log_level": serve.log_level.lower(),
        "access_log": False,
        "timeout_keep_alive": 75,
    }
    if tls:  # uvicorn loads them in every process of --processes N
        options["ssl_certfile"], options["ssl_keyfile"] = tls
    if serve.processes > 1:
        return _serve_processes(settings, serve.processes, serve.log_level, options)
    app = create_app(settings)
    tune_process()  # the collector paced by the clock: thousands of waiting polls (gc_pacing.py)
    uvicorn.run(app, **options)
    return 0


def _when(ms: int | None) -> str:
    import datetime

    if ms is None:
        return "never"
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _list_tokens(database_url: str) -> int:
    """One tab-separated line per token after a header; the token itself is never stored, so never shown."""
    from .auth import list_tokens
    from .db import Database

    db = Database(database_url)
    try:
        db.migrate()
        found = list_tokens(db)
    finally:
        db.dispose()
    print("FINGERPRINT\tLABEL\tUSER\tCREATED\tLAST_USED")
    for t in found:
        print(f"{t.fingerprint}\t{t.label or '-'}\t{t.user}\t{_when(t.created_at)}\t{_when(t.last_used_at)}")
    return 0


def _revoke_token(args: argparse.Namespace, database_url: str) -> int:
    from .auth import TOKEN_TTL_S, TokenNotFound, revoke_token
    from .db import Database

    if (args.fingerprint is None) == (args.token_file is None):
        print(
            "error: name the token to revoke: its FINGERPRINT from 'lightly-server list-tokens', or the token "
            "itself with --token-file FILE ('-': stdin)",
            file=sys.stderr,
        )
        return 2
    token = None
    if args.token_file is not None:
        try:
            raw = sys.stdin.read() if args.token_file == "-" else Path(args.token_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            print(f"error: cannot read --token-file {args.token_file}: {type(exc).__name__}", file=sys.stderr)
            return 2
        token = raw.strip()
        if not token or len(token) > 1000:
            print("error: --token-file must hold the token (alone on one line)", file=sys.stderr)
            return 2
    db = Database(database_url)
    try:
        db.migrate()
        gone = revoke_token(db, fingerprint_or_hash=args.fingerprint, token=token)
    except TokenNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        db.dispose()
    print(
        f"revoked token {gone.fingerprint} (label {gone.label or '-'}, user {gone.user}); every server refuses it "
        f"within {TOKEN_TTL_S:g} s"
    )
    return 0


MAX_PROCESSES = 64


def _serve_processes(settings: ServerSettings, processes: int, log_level: str, options: dict[str, Any]) -> int:
    """``--processes N``: uvicorn's process manager runs N processes on one listening socket (it restarts
    one that dies). The database is migrated and the keys are set up here, once, before they start.

    They agree on who gets a run like replicas do (PostgreSQL NOTIFY and advisory locks,
    ``longpoll/schedule_broker.py``).
    What they share besides the database: a private folder (removed at the end) with the settings they
    start from and the Prometheus values of all of them (``PROMETHEUS_MULTIPROC_DIR``: any process
    answers ``/metrics`` for all).
    """
    import dataclasses
    import json
    import shutil
    import tempfile

    import uvicorn

    from .app import create_app

    create_app(settings).state.server.db.dispose()  # migrations, sealed credentials, signing key: once
    shared = Path(tempfile.mkdtemp(prefix="lightly-server-"))  # 0700: the settings may hold a password
    try:
        (shared / "metrics").mkdir()
        values = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(settings).items()}
        (shared / "settings.json").write_text(json.dumps({"settings": values, "log_level": log_level}))
        os.environ[CHILD_SETTINGS_ENV] = str(shared / "settings.json")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(shared / "metrics")
        uvicorn.run("lightly_server.cli:process_app", factory=True, workers=processes, **options)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    return 0


def process_app() -> object:
    """One process of ``--processes N`` (uvicorn calls this in each process it starts)."""
    import json

    from .app import create_app

    settings_file = load(ChildOptions, os.environ).settings_file
    if settings_file is None:
        raise RuntimeError(f"{CHILD_SETTINGS_ENV} is not set: process_app runs only in the processes of --processes N")
    raw = json.loads(settings_file.read_text())
    configure_logging(raw["log_level"])
    app = create_app(load(ServerSettings, {}, raw["settings"]))  # the parent's values, parsed by type
    tune_process()
    return app


if __name__ == "__main__":
    sys.exit(main())
