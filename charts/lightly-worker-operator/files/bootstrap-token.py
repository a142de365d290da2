"""Token bootstrap of the bundled lightly-server (an init container of its pod, the server image).

Runs ``lightly-server create-token`` once and stores the token in the Secret TOKEN_SECRET_NAME (key
TOKEN_SECRET_KEY) in every namespace of TOKEN_NAMESPACES, through the Kubernetes API with the pod's
projected service-account token (standard library only: the server image has no Kubernetes client).

Idempotent: when one of the Secrets exists, its token is reused for the missing ones and nothing is
created; an existing Secret is never overwritten. The token is never printed or logged.

With SECRET_KEY_SECRET_NAME set it also makes sure the server's secret key (LIGHTLY_SERVER_SECRET_KEY:
it encrypts datasource credentials at rest and signs artifact URLs) exists: a random key is stored
once in that Secret in SECRET_KEY_NAMESPACE, and an existing one is never replaced.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

SA = os.environ.get("SA_DIR", "/var/run/secrets/kubernetes.io/serviceaccount")


def api(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    with open(f"{SA}/token") as f:
        bearer = f.read().strip()
    req = urllib.request.Request(
        f"https://{host}:{port}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"},
    )
    ctx = ssl.create_default_context(cafile=f"{SA}/ca.crt")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def create_secret(ns: str, name: str, key: str, value: str, what: str, labels: dict | None = None) -> str:
    """Create Secret ns/name holding ``value`` under ``key`` (with ``labels`` besides the bootstrap's own);
    an existing one is kept. "created", "exists" (made meanwhile by another pod) or "failed"."""
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app.kubernetes.io/managed-by": "lightly-server-token-bootstrap", **(labels or {})},
        },
        "data": {key: base64.b64encode(value.encode()).decode()},
    }
    status, _ = api("POST", f"/api/v1/namespaces/{ns}/secrets", body)
    if status == 409:
        print(f"Secret {ns}/{name} was created meanwhile; kept it")
        return "exists"
    if status not in (200, 201):
        print(f"cannot create Secret {ns}/{name}: HTTP {status} (RBAC?)", file=sys.stderr)
        return "failed"
    print(f"stored {what} in Secret {ns}/{name} (key {key})")
    return "created"


def hand_over_secret_key(value: str) -> None:
    """Write the key where the server reads it (SECRET_KEY_OUT_FILE, an in-memory volume), readable by us alone."""
    out = os.environ.get("SECRET_KEY_OUT_FILE")
    if out:  # a new file replaces the old one: a restarted init container finds the 0400 file of its last try
        tmp = f"{out}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "w") as fh:
            fh.write(value + "\n")
        os.replace(tmp, out)


def ensure_secret_key() -> int:
    name = os.environ.get("SECRET_KEY_SECRET_NAME")
    if not name:
        return 0
    key, ns = os.environ.get("SECRET_KEY_SECRET_KEY", "secret-key"), os.environ["SECRET_KEY_NAMESPACE"]
    for _ in range(2):  # a second look when another replica created it meanwhile
        status, secret = api("GET", f"/api/v1/namespaces/{ns}/secrets/{name}")
        if status == 200:
            raw = (secret.get("data") or {}).get(key)
            if not raw:
                print(f"Secret {ns}/{name} exists without key {key!r}; add it or delete the Secret", file=sys.stderr)
                return 1
            print(f"secret key Secret {ns}/{name} exists; handed to the server")
            hand_over_secret_key(base64.b64decode(raw).decode().strip())
            return 0
        if status != 404:
            print(f"cannot read Secret {ns}/{name}: HTTP {status} (RBAC?)", file=sys.stderr)
            return 1
        value = secrets.token_urlsafe(48)
        status = create_secret(ns, name, key, value, "a new server secret key")
        if status == "created":
            hand_over_secret_key(value)
            return 0
        if status == "failed":
            return 1
    print(f"Secret {ns}/{name} keeps changing; try again", file=sys.stderr)
    return 1


def main() -> int:
    if ensure_secret_key() != 0:
        return 1
    name, key = os.environ["TOKEN_SECRET_NAME"], os.environ["TOKEN_SECRET_KEY"]
    namespaces = [ns for ns in os.environ["TOKEN_NAMESPACES"].split(",") if ns]
    user = os.environ.get("TOKEN_USER", "lightly")
    token, missing = None, []
    for ns in namespaces:
        status, secret = api("GET", f"/api/v1/namespaces/{ns}/secrets/{name}")
        if status == 404:
            missing.append(ns)
        elif status == 200:
            raw = (secret.get("data") or {}).get(key)
            if not raw:
                print(f"Secret {ns}/{name} exists without key {key!r}; add it or delete the Secret", file=sys.stderr)
                return 1
            token = token or base64.b64decode(raw).decode().strip()
        else:
            print(f"cannot read Secret {ns}/{name}: HTTP {status} (RBAC?)", file=sys.stderr)
            return 1
    if not missing:
        print(f"token Secret {name} exists in {', '.join(namespaces)}; nothing to do")
        return 0
    if token is None:
        out = subprocess.run(["lightly-server", "create-token", "--user", user], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"lightly-server create-token failed: {out.stderr.strip()}", file=sys.stderr)
            return 1
        token = out.stdout.strip()
        print(f"created a token for user {user!r}")
    for ns in missing:
        # the operator uses a token Secret only when it carries the fleet-secret label (its policy.secretLabel)
        opt_in = os.environ.get("FLEET_SECRET_LABEL", "")
        if create_secret(ns, name, key, token, "the token", {opt_in: "true"} if opt_in else None) == "failed":
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
