"""``lightly-worker``: the selection worker, with the command-line habits of Lightly's worker.

    lightly-worker sanity_check=True
    lightly-worker token=... worker.worker_id=...                      # waiting mode (the default)
    lightly-worker mode=local input_mount=./images output_dir=./out n_samples=100 [strategy=diversity]
    lightly-worker mode=local input_mount=./images output_dir=./out config=run.json

``run.json`` (local mode) holds what ``schedule_compute_worker_run`` takes:
``{"worker_config": {...}, "selection_config": {...}, "lightly_config": {...}}`` (snake_case).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from lightly_protocol.logsafe import LOG_FORMAT, configure_logging

from . import worker_version
from .config import ConfigError, WorkerArgs, api_verify, parse_args

BANNER = f"Lightly worker (lightly-worker-fleet) version {worker_version()}"


def _snake_to_camel_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """{worker_config, lightly_config, selection_config} → a V4 worker config (validated)."""
    from lightly_protocol.models import WorkerConfigV4

    unknown = set(cfg) - {"worker_config", "lightly_config", "selection_config"}
    if unknown:
        raise ConfigError(
            f"config file: unknown keys {sorted(unknown)}; use worker_config, lightly_config, selection_config"
        )
    body = {
        "worker_type": "FULL",
        "docker": cfg.get("worker_config") or {},
        "lightly": cfg.get("lightly_config") or {},
        "selection": cfg.get("selection_config"),
    }
    try:
        return WorkerConfigV4.model_validate(body).wire()
    except Exception as exc:  # pydantic's message names the bad key
        raise ConfigError(f"config file: {exc}") from None


def local_config(args: WorkerArgs) -> Any:
    from lightly_protocol.models import WorkerConfigV4

    if args["config"]:
        path = Path(args["config"]).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"config={path}: {exc.strerror}") from None
        try:
            raw = json.loads(text)
        except ValueError:
            import yaml

            raw = yaml.safe_load(text)
        if not isinstance(raw, dict):
            raise ConfigError(f"config={path} must hold a mapping")
        wire = _snake_to_camel_config(raw)
    elif args["n_samples"]:
        wire = {
            "workerType": "FULL",
            "selection": {"nSamples": args["n_samples"], "strategies": _shorthand_strategies(args["strategy"])},
        }
    else:
        raise ConfigError("mode=local needs n_samples=N (with strategy=recommended|diversity|coverage) or config=FILE")
    return WorkerConfigV4.model_validate(wire)


def _shorthand_strategies(choice: str) -> list[dict[str, Any]]:
    """The strategies of ``n_samples=N strategy=...``, each on EMBEDDINGS."""
    from .selection.advice import RECOMMENDED_STRATEGIES

    chosen = {
        "recommended": RECOMMENDED_STRATEGIES,
        "diversity": [{"type": "DIVERSITY"}],
        "coverage": [{"type": "COVERAGE_EXT"}],
    }[choice]
    return [{"input": {"type": "EMBEDDINGS"}, "strategy": dict(s)} for s in chosen]  # the model takes snake_case


def run_local(args: WorkerArgs) -> int:
    from .agent import merge_cli_defaults
    from .pipeline import JobError, JobOptions, JobPaths, NullReporter, run_job
    from .run_options import prepare_run

    config = prepare_run(merge_cli_defaults(local_config(args), args))
    out = args.path("output_dir")
    lightly_root = args.path("lightly_mount")
    paths = JobPaths(args.path("input_mount"), lightly_root if lightly_root.is_dir() else None, out)
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "log.txt")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger("lightly_worker.run").addHandler(handler)
    try:
        options = JobOptions.of(args)
        result = run_job(config, paths, NullReporter(echo=print), options)
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    s = result.report["summary"]
    print(
        f"Selected {s['n_selected']} of {s['n_candidates']} samples "
        f"({s['n_corrupt']} corrupt, {s['n_duplicates']} duplicates left out)."
    )
    print(f"Selected filenames: {out / 'filenames' / 'selected_filenames.txt'}")
    print(f"Report: {out / 'report.html'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv, os.environ)  # the one place the worker's environment is read (settings.py)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args["sanity_check"]:
        print(BANNER)
        print("Congratulations! It looks like the Lightly container is running!")
        return 0
    configure_logging(str(args["log_level"]))  # tokens redacted in every record, the uploaded run log too
    try:
        if args["mode"] == "local":
            return run_local(args)
        return run_waiting(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run_waiting(args: WorkerArgs) -> int:
    from . import startup_signals

    startup_signals.remember()  # before the heavy imports: a pod deleted while starting must still stop
    from .agent import WorkerAgent
    from .api import WorkerApi
    from .metrics import WorkerMetrics

    if not args.settings.server_location.strip():  # the token must never go to a default it did not name
        raise ConfigError(
            "LIGHTLY_SERVER_LOCATION is set but empty; set it to the API's URL (e.g. http://lightly-server:8080) "
            "or unset it for https://api.lightly.ai"
        )
    token = args.token()
    if not token:
        raise ConfigError("no token: mount it and set LIGHTLY_TOKEN_FILE, or set LIGHTLY_TOKEN, or pass token=...")
    metrics = WorkerMetrics()
    metrics.serve(int(args["metrics.port"]))
    timeout = float(args["worker.request_timeout_seconds"])
    api = WorkerApi(args.settings.server_location, token, timeout=timeout, verify=api_verify(args.settings.ca_certs))
    try:
        return WorkerAgent(args, api, metrics).serve()
    finally:
        api.close()


if __name__ == "__main__":
    sys.exit(main())
