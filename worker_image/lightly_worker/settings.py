"""The worker's own settings, in the one settings idiom (``lightly_protocol.options``): ``WorkerSettings``
declares each top-level option once, with its default, its environment variable and its help.

**Keys, not flags.** The worker takes Lightly's ``key=value`` arguments with dotted keys
(``worker.worker_id=...``), not ``--flags``. An option that has such a key declares it in the idiom's
``flag`` slot (``option(None, flag="worker.worker_id", ...)``): ``flag`` is the spelling on the command
line, here a key. The field's name is only the Python name (the key with its dots as ``_``, without the
``worker.`` prefix: ``worker.worker_id`` is ``worker_id``, ``metrics.port`` is ``metrics_port``); ``KEYS``
maps each key to its field, so the key is written once. An option without a key (``flag`` None) comes from
its environment variable only: the token file, the server's location, the CA file. What a pod the operator
builds sets (mount paths, variable names, keys) is spelled once, in ``lightly_protocol.pod_contract``.
``reference(WorkerSettings)`` is the rows of docs/worker.md's option tables (tested against them).

**Where values come from.** ``load_settings(environ)`` gives the environment variables and the defaults;
``key=value`` arguments (``config.parse_args``) are then applied over them as given: their values are
YAML scalars (``config.parse_value``), checked by ``config.parse_args`` with a message per key, and kept as
parsed, so a key given wins over its option's environment variable (only ``worker.worker_id`` has both: Lightly's
``LIGHTLY_WORKER_ID``, what its docs' ``docker run -e`` examples set). The
token's three sources keep their order: ``token=``, else the file in ``LIGHTLY_TOKEN_FILE``, else
``LIGHTLY_TOKEN`` (two options here; ``config.WorkerArgs.token`` reads the file).

This module is the only one of the worker that reads the environment: the CLI hands ``os.environ`` to
``load_settings`` once and everything else gets values passed in (tests/test_code_rules.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightly_protocol import pod_contract as pod
from lightly_protocol.options import load, option, options

__all__ = ["KEYS", "WorkerSettings", "load_settings"]


@dataclass(frozen=True)
class WorkerSettings:
    """The worker's top-level options (``lightly.*`` and worker-config keys are not options of the worker
    but defaults for a run's config: ``config.WorkerArgs`` keeps them beside this)."""

    token: str | None = option(
        None, flag="token", help="API token; better LIGHTLY_TOKEN_FILE or LIGHTLY_TOKEN. Never logged or written"
    )
    token_file: str | None = option(
        None, env=pod.ENV_TOKEN_FILE, help="file holding the API token (a mounted Secret: what the operator uses)"
    )
    env_token: str | None = option(None, env=pod.ENV_TOKEN, help="the API token itself, when no file is given")
    server_location: str = option(
        "https://api.lightly.ai",
        env=pod.ENV_SERVER_LOCATION,
        keep_empty=True,  # set but empty is refused (cli.run_waiting), never silently Lightly's public API
        help="the API's base URL (waiting mode)",
    )
    ca_certs: str | None = option(
        None, env=pod.ENV_CA_CERTS, help="PEM file of a private CA the API's certificate is signed by"
    )
    sanity_check: bool = option(False, flag="sanity_check", help="print the banner and exit, no network")
    mode: str = option("waiting", flag="mode", help="waiting (a server's runs) or local (a folder, no server)")
    config: str | None = option(None, flag="config", help="local mode: a JSON/YAML file with the run's configs")
    n_samples: int | None = option(None, flag="n_samples", help="local mode without config=: select this many")
    strategy: str = option(
        "recommended", flag="strategy", help="local mode without config=: recommended, diversity or coverage"
    )
    #: the three folders: a ``key=value`` value is a YAML scalar, so ``WorkerArgs.path`` checks it is text
    input_mount: str = option(pod.INPUT_MOUNT, flag=pod.KEY_INPUT_MOUNT, help="root of LOCAL input datasources")
    lightly_mount: str = option(pod.LIGHTLY_MOUNT, flag=pod.KEY_LIGHTLY_MOUNT, help="root of the LIGHTLY datasource")
    output_dir: str = option(pod.OUTPUT_DIR, flag=pod.KEY_OUTPUT_DIR, help="where runs write their outputs")
    device: str = option("auto", flag="device", help="auto, cpu or cuda")
    shutdown_when_job_finished: bool = option(False, flag="shutdown_when_job_finished", help="exit after one run")
    log_level: str = option("INFO", flag="log_level", help="the log level")
    worker_id: str | None = option(
        None,
        flag=pod.KEY_WORKER_ID,
        env=pod.ENV_WORKER_ID,
        help="act as this registered worker (also LIGHTLY_WORKER_ID, as in Lightly's docs; the key wins)",
    )
    force_start: bool = option(
        True,
        flag="worker.force_start",
        help="Lightly's key, accepted as given: a worker here always starts, even while another runs with its id",
    )
    name: str | None = option(None, flag="worker.name", help="without an id: register under this name")
    labels: list[str] = option(default_factory=list, flag=pod.KEY_LABELS, help="labels of a worker it registers")
    poll_wait_seconds: float = option(25.0, flag="worker.poll_wait_seconds", help="long-poll wait offered")
    poll_interval_seconds: float = option(
        5.0, flag="worker.poll_interval_seconds", help="pause between polls when the server answers at once"
    )
    heartbeat_seconds: float = option(15.0, flag="worker.heartbeat_seconds", help="lease renewal while busy")
    shutdown_grace_seconds: float = option(
        240.0, flag=pod.KEY_SHUTDOWN_GRACE, help="after SIGTERM a busy worker finishes within this"
    )
    request_timeout_seconds: float = option(
        60.0, flag="worker.request_timeout_seconds", help="timeout of one API request"
    )
    metrics_port: int = option(0, flag=pod.KEY_METRICS_PORT, help="/metrics port; 0: none")
    #: bucket datasources (read through the API's presigned URLs; docs/worker.md, "Data in buckets")
    storage_request_timeout_seconds: float = option(
        30.0, flag="storage.request_timeout_seconds", help="timeout of one request to the store"
    )
    storage_attempts: int = option(6, flag="storage.attempts", help="tries of a read on 429/5xx/timeouts")
    storage_backoff_seconds: float = option(
        0.25, flag="storage.backoff_seconds", help="first retry's wait ceiling (doubles per try, full jitter)"
    )
    storage_max_backoff_seconds: float = option(15.0, flag="storage.max_backoff_seconds", help="longest wait")
    storage_max_object_bytes: int = option(
        512 * 1024**2, flag="storage.max_object_bytes", help="a file read whole is refused above this size"
    )
    storage_prefetch: int = option(16, flag="storage.prefetch", help="reads in flight per loader process")
    storage_mirror_max_bytes: int = option(
        8 * 1024**3, flag="storage.mirror_max_bytes", help="cap of the .lightly/ files a run copies from a bucket"
    )
    storage_spill_max_bytes: int = option(
        2 * 1024**3,
        flag="storage.spill_max_bytes",
        help="bucket images the check read, kept on local disk for the embedding (0: read them twice)",
    )
    storage_scratch_dir: str | None = option(
        None, flag="storage.scratch_dir", help="where a run keeps its copy of .lightly/ files (default: temp)"
    )
    embedding_model: str = option("efficientnet-lite0", flag="embedding.model", help="the pretrained embedder")
    embedding_input_size: int | None = option(
        None, flag="embedding.input_size", help="default: lightly.collate.input_size, else 224 (GPU) / 128 (CPU)"
    )

    def __repr__(self) -> str:  # the token never shows
        shown = {f.name: getattr(self, f.name) for f, _opt, _kind in options(WorkerSettings)}
        for secret in ("token", "env_token"):
            shown[secret] = "***" if shown[secret] else shown[secret]
        return f"WorkerSettings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


#: ``key=value`` key → field of ``WorkerSettings`` (the options that have a key)
KEYS: dict[str, str] = {opt.flag: f.name for f, opt, _kind in options(WorkerSettings) if opt.flag}


def load_settings(environ: Mapping[str, str] | None = None) -> WorkerSettings:
    """The settings from ``environ`` (the process's environment when None) and the defaults."""
    return load(WorkerSettings, os.environ if environ is None else environ)


def by_key(settings: WorkerSettings) -> dict[str, Any]:
    """The options that have a key, by key (what the command line shows and sets)."""
    return {key: getattr(settings, name) for key, name in KEYS.items()}
