"""The contract between a worker pod the operator builds and the worker that runs in it: where the pod
mounts things, which environment variables and ``key=value`` arguments it sets. The operator's builders
write these, the worker's settings read them (defaults, variable names, keys): one spelling for both.

Pure constants and tiny pure helpers; no I/O. tests/test_pod_contract.py builds a pod and starts the
worker's real settings parsing on its arguments and environment.
"""

from __future__ import annotations

__all__ = [
    "CA_DIR",
    "CA_FILE",
    "ENV_CA_CERTS",
    "ENV_SERVER_LOCATION",
    "ENV_TOKEN",
    "ENV_TOKEN_FILE",
    "ENV_WORKER_ID",
    "INPUT_MOUNT",
    "KEY_INPUT_MOUNT",
    "KEY_LABELS",
    "KEY_LIGHTLY_MOUNT",
    "KEY_METRICS_PORT",
    "KEY_OUTPUT_DIR",
    "KEY_SHUTDOWN_GRACE",
    "KEY_WORKER_ID",
    "LIGHTLY_MOUNT",
    "OUTPUT_DIR",
    "TOKEN_DIR",
    "TOKEN_FILE",
    "arg",
]

# mount paths: the worker's defaults are where the pod mounts the volumes (and where Dockerfile.worker
# creates the folders, so a local `docker run` finds them too)
#: the fleet's input volume (read-only): LOCAL datasources resolve under it
INPUT_MOUNT = "/input_mount"
#: the LIGHTLY datasource's volume (``.lightly/``: datapool, tags, metadata, predictions)
LIGHTLY_MOUNT = "/lightly_mount"
#: where runs write their outputs (an emptyDir unless the fleet names a volume)
OUTPUT_DIR = "/home/output_dir"
#: the token Secret's volume, and the file in it named by ``ENV_TOKEN_FILE``
TOKEN_DIR = "/var/run/secrets/lightly"
TOKEN_FILE = f"{TOKEN_DIR}/token"
#: the CA that signed the API's certificate, when the operator has one (named by ``ENV_CA_CERTS``)
CA_DIR = "/var/run/secrets/lightly-ca"
CA_FILE = f"{CA_DIR}/ca.crt"

# environment variables (the names lightly's own worker and client read)
#: the API's base URL
ENV_SERVER_LOCATION = "LIGHTLY_SERVER_LOCATION"
#: a file holding the API token (what the operator sets: the token never appears in the pod's spec)
ENV_TOKEN_FILE = "LIGHTLY_TOKEN_FILE"
#: the token itself (local use; never set by the operator)
ENV_TOKEN = "LIGHTLY_TOKEN"
#: the worker id as an environment variable (Lightly's own name); ``worker.worker_id=`` wins over it
ENV_WORKER_ID = "LIGHTLY_WORKER_ID"
#: a PEM file of CA certificates to trust for the API
ENV_CA_CERTS = "LIGHTLY_CA_CERTS"

# ``key=value`` argument keys
KEY_WORKER_ID = "worker.worker_id"
KEY_METRICS_PORT = "metrics.port"
KEY_SHUTDOWN_GRACE = "worker.shutdown_grace_seconds"
KEY_LABELS = "worker.labels"
KEY_INPUT_MOUNT = "input_mount"
KEY_LIGHTLY_MOUNT = "lightly_mount"
KEY_OUTPUT_DIR = "output_dir"


def arg(key: str, value: object) -> str:
    """One ``key=value`` argument as the worker reads it back (its values are YAML scalars: booleans are
    ``True``/``False``)."""
    text = ("True" if value else "False") if isinstance(value, bool) else str(value)
    return f"{key}={text}"
