"""The web console's test kit: a signed-in browser-less session over real HTTP, and a user's data made
through the API the way workers and clients make it (a dataset with a LOCAL datasource, a worker, a
completed run with a log, a selection that became a tag, a scheduled run waiting for a worker)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import httpx
from lightly_protocol import paths

#: what must show as text wherever a user's string lands on a page
SCRIPT = "<script>alert(1)</script>"
SCRIPT_FILE = f"x{SCRIPT}.png"
CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


def csrf_of(html: str) -> str:
    m = CSRF.search(html)
    assert m, "the page has no form with a CSRF token"
    return m.group(1)


class Console:
    """An HTTP client of ``/ui`` that keeps cookies, as a browser does (redirects not followed)."""

    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=30, follow_redirects=False, trust_env=False)

    def sign_in(self, token: str) -> httpx.Response:
        page = self.http.get("/ui/login")
        return self.http.post("/ui/login", data={"csrf_token": csrf_of(page.text), "token": token})

    def get(self, path: str, **kw: object) -> httpx.Response:
        return self.http.get(path, **kw)  # type: ignore[arg-type]

    def post_form(self, page_path: str, action: str, fields: dict[str, str]) -> httpx.Response:
        """Send a form of ``page_path`` to ``action`` with that page's CSRF token."""
        token = csrf_of(self.http.get(page_path).text)
        return self.http.post(action, data={"csrf_token": token, **fields})

    def close(self) -> None:
        self.http.close()


@dataclass
class Seeded:
    dataset_id: str
    worker_id: str
    run_id: str
    tag_id: str
    scheduled_id: str
    config_id: str


def _ok(r: httpx.Response) -> httpx.Response:
    assert r.status_code < 300, f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}"
    return r


def embeddings_csv(names: list[str], dims: int = 3) -> bytes:
    """Lightly's embeddings CSV: sample i at (i, 2i, 0, ...), so its projection is a line (computed by hand)."""
    lines = ["filenames," + ",".join(f"embedding_{d}" for d in range(dims)) + ",labels"]
    for i, name in enumerate(names):
        values = [float(i), float(2 * i)] + [0.0] * (dims - 2)
        quoted = '"' + name.replace('"', '""') + '"'
        lines.append(f"{quoted},{','.join(str(v) for v in values)},0")
    return ("\n".join(lines) + "\n").encode()


def upload_artifact(api: httpx.Client, run_id: str, name: str, data: bytes, kind: str = "LOG") -> str:
    """An artifact the way the worker uploads one: create, PUT to the signed URL, confirm."""
    created = _ok(api.post(paths.run_artifacts(run_id), json={"fileName": name, "type": kind})).json()
    url = httpx.URL(created["signedWriteUrl"])
    _ok(httpx.put(url, content=data, trust_env=False, timeout=30))
    _ok(api.put(paths.artifact_confirm(run_id, created["artifactId"])))
    return str(created["artifactId"])


def seed(base: str, token: str, files: list[str], dataset: str = "cats") -> Seeded:
    """One user's data, made through the API (the token travels as the API wants it: ``?token=``)."""
    api = httpx.Client(base_url=base, timeout=30, params={"token": token}, trust_env=False)
    try:
        did = _ok(api.post("/v1/datasets", json={"name": dataset})).json()["id"]
        _ok(api.put(f"/v1/datasets/{did}/datasource", json={"type": "LOCAL", "fullPath": "images", "purpose": "INPUT"}))
        wid = _ok(api.post("/v1/docker/worker", json={"name": f"{dataset}-worker", "labels": ["gpu"]})).json()["id"]
        rid = _ok(api.post("/v1/docker/runs", json={"dockerVersion": "1.0.0", "datasetId": did})).json()["id"]
        now = int(time.time() * 1000)
        logs = [
            {"ts": now - 5000, "level": "INFO", "group": "run", "msg": "starting", "state": "STARTED"},
            {"ts": now - 3000, "level": "INFO", "group": "run", "msg": f"embedding {SCRIPT}", "state": "EMBEDDING"},
            {"ts": now - 1000, "level": "INFO", "group": "run", "msg": "selecting", "state": "SAMPLING"},
        ]
        _ok(api.put(f"/v1/docker/runs/{rid}/logs", json=logs))
        upload_artifact(api, rid, "data/embeddings.csv", embeddings_csv([*files, "unselected.png"]))
        upload_artifact(api, rid, "report.json", b'{"ok": true}', "REPORT_JSON")
        _ok(api.put(f"/v1/docker/runs/{rid}/selection", json={"filenames": files, "tagName": "picked"}))
        _ok(api.put(f"/v1/docker/runs/{rid}", json={"state": "COMPLETED", "message": f"done {SCRIPT}"}))
        tag = next(t for t in _ok(api.get(f"/v1/datasets/{did}/tags")).json() if t["name"] == "picked")
        config = {
            "version": "V4",
            "config": {
                "worker_type": "FULL",
                "selection": {
                    "n_samples": 1,
                    "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}],
                },
            },
        }
        cid = _ok(api.post(paths.CONFIGS, json=config)).json()["id"]
        sid = _ok(api.post(paths.dataset_schedule(did), json={"configId": cid, "priority": "MID"})).json()["id"]
        return Seeded(did, wid, rid, tag["id"], sid, cid)
    finally:
        api.close()
