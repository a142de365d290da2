"""Command-line configuration: ``key=value`` overrides with dotted keys, as the original worker takes them.

``lightly-worker token=... worker.worker_id=... lightly.loader.batch_size=64``. Unknown keys are
rejected with a "did you mean" hint; values are parsed like YAML scalars (True/False, numbers,
``[a,b]`` lists, null). The worker's own options (their keys, defaults, environment variables) are
declared once, in ``settings.WorkerSettings``; ``lightly.*`` and worker-config keys are defaults for a run's
config. The token comes from ``token=``, else the file in ``LIGHTLY_TOKEN_FILE`` (a mounted Secret: what the
operator uses), else ``LIGHTLY_TOKEN``; it is never printed.
"""

from __future__ import annotations

import difflib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lightly_protocol import tls
from lightly_protocol.config_support import cli_refusal
from lightly_protocol.models import DockerConfigV4, LightlyConfigV3
from lightly_protocol.names import WORKER_NAME_RE
from pydantic import BaseModel

from .settings import KEYS, WorkerSettings, by_key, load_settings


class ConfigError(ValueError):
    """A bad command line; the message says what to fix."""


#: the ``strategy=`` choices of local mode's ``n_samples=N`` shorthand: the label-efficiency benchmark's best
#: (DIVERSITY + TYPICALITY), Lightly's DIVERSITY alone (exact semantics; picks outliers first), the extension
#: COVERAGE_EXT (selection/advice.py and docs/benchmarks.md say why)
LOCAL_STRATEGIES = ("recommended", "diversity", "coverage")


def _protocol_keys(model: type[BaseModel], prefix: str) -> list[str]:
    keys = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        members: tuple[object, ...] = getattr(ann, "__args__", (ann,))
        nested = next((a for a in members if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if nested is not None:
            keys += _protocol_keys(nested, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


#: ``lightly.*`` (training/embedding config) and the docker config's keys may also be given here
LIGHTLY_KEYS = _protocol_keys(LightlyConfigV3, "lightly.")
DOCKER_KEYS = [k for k in _protocol_keys(DockerConfigV4, "") if k not in KEYS]
KNOWN_KEYS = sorted(set(KEYS) | set(LIGHTLY_KEYS) | set(DOCKER_KEYS))


def parse_value(raw: str) -> Any:
    text = raw.strip()
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none", "~"):
        return None
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [parse_value(x) for x in inner.split(",")] if inner else []
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


@dataclass(frozen=True)
class WorkerArgs:
    """What the command line and the environment set: the worker's own ``settings`` (``WorkerSettings``)
    and ``extra``, the ``lightly.*`` and worker-config keys given (defaults for a run's config).
    ``args["worker.worker_id"]`` reads either by its key."""

    settings: WorkerSettings = field(default_factory=WorkerSettings)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def values(self) -> dict[str, Any]:
        """Every key's value: the options' (defaults included) and the extra keys given."""
        return {**by_key(self.settings), **self.extra}

    def __getitem__(self, key: str) -> Any:
        return getattr(self.settings, KEYS[key]) if key in KEYS else self.extra[key]

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self.settings, KEYS[key]) if key in KEYS else self.extra.get(key, default)

    def path(self, key: str) -> Path:
        value = self[key]
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key} must be a folder path, got {value!r} (e.g. {key}=./folder)")
        return Path(value).expanduser()

    def lightly_overrides(self) -> dict[str, Any]:
        """``lightly.*`` keys as a nested dict (snake_case), for merging under a run's lightly config."""
        out: dict[str, Any] = {}
        for key, value in self.extra.items():
            if key.startswith("lightly.") and key in LIGHTLY_KEYS:
                node = out
                parts = key.split(".")[1:]
                for part in parts[:-1]:
                    node = node.setdefault(part, {})
                node[parts[-1]] = value
        return out

    def docker_overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.extra.items() if k in DOCKER_KEYS}

    def redacted(self) -> dict[str, Any]:
        return {k: ("***" if k == "token" and v else v) for k, v in sorted(self.values.items())}

    def token(self) -> str | None:
        if self.settings.token:
            return str(self.settings.token)
        path = self.settings.token_file
        if path:
            try:
                token = Path(path).read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"LIGHTLY_TOKEN_FILE={path} cannot be read ({exc.strerror}); mount the token Secret"
                ) from None
            if not token:
                raise ConfigError(f"LIGHTLY_TOKEN_FILE={path} is empty; put the API token in it")
            return token
        return self.settings.env_token or None


def tls_verify(environ: Mapping[str, str] | None = None) -> ssl.SSLContext | bool:
    """``api_verify`` of the ``LIGHTLY_CA_CERTS`` in ``environ`` (the process's environment when None)."""
    return api_verify(load_settings(environ).ca_certs)


def api_verify(ca_certs: str | None) -> ssl.SSLContext | bool:
    """httpx's ``verify=`` for the API: the default CAs, or the system's plus the PEM file ``ca_certs``
    (``LIGHTLY_CA_CERTS``: a private CA; the same variable lightly's own client reads)."""
    try:
        return tls.trust_context(ca_certs)
    except tls.TrustFileError as exc:
        raise ConfigError(str(exc)) from None


def parse_args(argv: list[str], environ: Mapping[str, str] | None = None) -> WorkerArgs:
    """``key=value`` arguments over the settings of ``environ`` (the process's environment when None; the
    CLI hands ``os.environ``)."""
    loaded = load_settings(environ)
    values = by_key(loaded)
    for arg in argv:
        if "=" not in arg:
            hint = (
                " (use key=value, e.g. sanity_check=True)"
                if not arg.startswith("-")
                else (" (this worker takes key=value arguments, not flags; e.g. sanity_check=True)")
            )
            raise ConfigError(f"cannot read argument {arg!r}{hint}")
        key, raw = arg.split("=", 1)
        key = key.strip()
        if key.startswith("docker.") and key[len("docker.") :] in DOCKER_KEYS:
            key = key[len("docker.") :]  # the worker config's docker keys may be spelled as in the config
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(key, KNOWN_KEYS, n=3, cutoff=0.6)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"Unknown option {key!r}.{hint}")
        values[key] = parse_value(raw)
        refusal = _refusal(key, values[key])
        if refusal:
            raise ConfigError(refusal)
    _check(values)
    extra = {k: v for k, v in values.items() if k not in KEYS}
    return WorkerArgs(replace(loaded, **{KEYS[k]: v for k, v in values.items() if k in KEYS}), extra)


def _refusal(key: str, value: Any) -> str | None:
    """Why a run-config default given as ``key=value`` is not supported (the server's 400 for the same
    option, ``lightly_protocol.config_support``), or None."""
    if key in DOCKER_KEYS:
        return cli_refusal(f"docker.{key}", value)
    return cli_refusal(key, value) if key in LIGHTLY_KEYS else None


def _check(values: dict[str, Any]) -> None:
    if values["mode"] not in ("waiting", "local"):
        raise ConfigError(f"mode={values['mode']!r}: use mode=waiting (default) or mode=local")
    if values["device"] not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device={values['device']!r}: use auto, cpu or cuda")
    name = values.get("worker.name")
    if name is not None and not (isinstance(name, str) and WORKER_NAME_RE.match(name) and len(name) <= 300):
        raise ConfigError(
            f"worker.name={name!r}: Lightly's API takes 3 to 300 letters, digits, spaces, '_' and '-', starting "
            f"with a letter or digit (pattern {WORKER_NAME_RE.pattern}); e.g. worker.name=gpu-worker-1"
        )
    labels = values["worker.labels"]
    if isinstance(labels, str):
        values["worker.labels"] = [labels]
    elif not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise ConfigError("worker.labels must be a list of names, e.g. worker.labels=[gpu,a100]")
    for key in (
        "worker.poll_wait_seconds",
        "worker.poll_interval_seconds",
        "worker.heartbeat_seconds",
        "worker.shutdown_grace_seconds",
        "worker.request_timeout_seconds",
    ):
        if not isinstance(values[key], int | float) or isinstance(values[key], bool) or values[key] < 0:
            raise ConfigError(f"{key} must be a number >= 0, got {values[key]!r}")
    for key, low in (
        ("storage.request_timeout_seconds", 0.001),
        ("storage.backoff_seconds", 0),
        ("storage.max_backoff_seconds", 0),
        ("storage.attempts", 1),
        ("storage.max_object_bytes", 1),
        ("storage.prefetch", 1),
        ("storage.mirror_max_bytes", 0),
        ("storage.spill_max_bytes", 0),
    ):
        v = values[key]
        whole = key in (
            "storage.attempts",
            "storage.max_object_bytes",
            "storage.prefetch",
            "storage.mirror_max_bytes",
            "storage.spill_max_bytes",
        )
        if isinstance(v, bool) or not isinstance(v, int if whole else int | float) or v < low:
            raise ConfigError(f"{key} must be {'an integer' if whole else 'a number'} >= {low}, got {v!r}")
    port = values["metrics.port"]
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
        raise ConfigError(f"metrics.port must be a port number (0 disables), got {port!r}")
    n = values["n_samples"]
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ConfigError(f"n_samples must be a positive integer, got {n!r}")
    if values["strategy"] not in LOCAL_STRATEGIES:
        raise ConfigError(
            f"strategy={values['strategy']!r} is not one of {', '.join(LOCAL_STRATEGIES)} "
            "(the strategies of the n_samples shorthand; config=FILE takes any selection)"
        )
    for key in ("lightly.loader.batch_size", "lightly.collate.input_size", "lightly.trainer.max_epochs"):
        v = values.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < (0 if "epochs" in key else 1)):
            raise ConfigError(f"{key} must be a positive integer, got {v!r}")
