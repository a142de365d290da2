"""Hostile input (issue 9, items 2, 6, 7, 8, 11, 12): every probe gets a clear 4xx, never a 5xx, and
nothing is written outside its folder."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from conftest import Api, Backend, ServerProcess, run_sql
from flows import config, dataset, lock, ok, register, run_state, schedule, start_run
from lightly_protocol.models import MAX_LOG_ENTRIES, MAX_LOG_MESSAGE_LENGTH
from lightly_server import bitmask

BODY_LIMIT = 8 * 1024**2


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = response.json()
    assert set(body) == {"code", "error"} and body["error"], body
    return body["error"]


def _run(api: Api) -> tuple[str, str]:
    wid = register(api)
    ds, cid = dataset(api), config(api)
    sid = schedule(api, ds, cid)
    ok(lock(api, ds, wid, sid), 204)
    return ds, start_run(api, ds, sid)


def _artifact(api: Api, run_id: str, name: str, content: bytes) -> tuple[str, str]:
    created = ok(api.post(f"/v1/docker/runs/{run_id}/artifacts", json={"fileName": name, "type": "LOG"}), 201)
    ok(httpx.put(created["signedWriteUrl"], content=content, timeout=30))
    return created["artifactId"], created["signedWriteUrl"]


# ---------------------------------------------------------------- item 2: artifact names


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../escape.txt", "a/../../b.txt", "a//b", "./x", "..", "C:/x.txt", "a\\b.txt", "a\nb"]
)
def test_unsafe_artifact_names_are_refused(api: Api, name: str) -> None:
    _, run_id = _run(api)
    msg = _error(api.post(f"/v1/docker/runs/{run_id}/artifacts", json={"fileName": name, "type": "LOG"}), 400)
    assert "fileName" in msg
    assert _sql_free_artifacts(api, run_id) == []


def _sql_free_artifacts(api: Api, run_id: str) -> list:
    return ok(api.get(f"/v1/docker/runs/{run_id}")).get("artifacts", [])


def test_stored_unsafe_names_are_never_served(api: Api, client, db_backend: Backend, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Names stored by an older server: the real client's download stays inside its folder."""
    _, run_id = _run(api)
    aid, _ = _artifact(api, run_id, "log.txt", b"hello")
    ok(api.put(f"/v1/docker/runs/{run_id}/artifacts/{aid}/confirmUpload"), 204)
    escape = tmp_path / "escape.txt"
    run_sql(db_backend, "UPDATE artifacts SET file_name = :n WHERE id = :id", n="../escape.txt", id=aid)
    aid2, _ = _artifact(api, run_id, "log2.txt", b"world")
    ok(api.put(f"/v1/docker/runs/{run_id}/artifacts/{aid2}/confirmUpload"), 204)
    run_sql(db_backend, "UPDATE artifacts SET file_name = :n WHERE id = :id", n=str(tmp_path / "abs.txt"), id=aid2)
    run_state(api, run_id, "COMPLETED")
    names = sorted(a["fileName"] for a in ok(api.get(f"/v1/docker/runs/{run_id}"))["artifacts"])
    assert names == sorted(["escape.txt", str(tmp_path / "abs.txt").lstrip("/")])
    out = tmp_path / "out"
    client.download_compute_worker_run_artifacts(run=client.get_compute_worker_run(run_id), output_dir=str(out))
    assert not escape.exists() and not (tmp_path / "abs.txt").exists()
    assert (out / "escape.txt").read_bytes() == b"hello"


# ---------------------------------------------------------------- item 8: confirmed artifacts are final


def test_a_confirmed_artifact_cannot_be_overwritten(api: Api) -> None:
    _, run_id = _run(api)
    aid, url = _artifact(api, run_id, "log.txt", b"first")
    ok(httpx.put(url, content=b"second", timeout=30))  # before confirming: a retried upload replaces it
    ok(api.put(f"/v1/docker/runs/{run_id}/artifacts/{aid}/confirmUpload"), 204)
    _error(httpx.put(url, content=b"evil", timeout=30), 409)
    read = ok(api.get(f"/v1/docker/runs/{run_id}/artifacts/{aid}/readurl"))
    assert httpx.get(read, timeout=30).content == b"second"


# ---------------------------------------------------------------- item 6: no 500 on bad input


def test_non_ascii_signature_needs_no_token_and_is_403(server: ServerProcess) -> None:
    aid = "a" * 24
    for method, path in (("GET", "download"), ("PUT", "upload")):
        r = httpx.request(
            method, f"{server.url}/v1/artifacts/{aid}/{path}", params={"expires": "9999999999", "signature": "é" * 64}
        )
        _error(r, 403)
    r = httpx.get(f"{server.url}/v1/artifacts/{aid}/download", params={"expires": str(10**30), "signature": "ab"})
    assert r.status_code in (400, 403), r.text


@pytest.mark.parametrize("value", [str(10**20), str(2**63), "-1", "1e400", "9" * 5000])
def test_huge_page_offsets_and_cursors(api: Api, value: str) -> None:
    ds, run_id = _run(api)
    for path in (
        "/v1/docker/runs",
        "/v1/datasets",
        f"/v1/docker/runs/query/datasetId/{ds}",
        f"/v1/datasets/{ds}/mappings",
    ):
        assert "pageOffset" in _error(api.get(path, params={"pageOffset": value}), 400)
    assert "cursor" in _error(api.get(f"/v1/docker/runs/{run_id}/logs", params={"cursor": value}), 400)


def test_the_largest_offsets_and_cursors_answer_empty(api: Api) -> None:
    _, run_id = _run(api)
    assert ok(api.get("/v1/docker/runs", params={"pageOffset": str(2**63 - 1)})) == []
    assert ok(api.get(f"/v1/docker/runs/{run_id}/logs", params={"cursor": str(2**63 - 1)}))["logs"] == []


NUL_BODIES = [
    ("POST", "/v1/datasets", {"name": "ab\x00cd"}),
    ("POST", "/v1/docker/worker", {"name": "worker-nul", "labels": ["gpu\x00"]}),
    ("POST", "/v1/docker/worker", {"name": "worker-nul", "dockerVersion": "1.0\x00"}),
    ("POST", "/v1/docker/runs", {"dockerVersion": "v\x00"}),
    ("POST", "/v1/docker/runs", {"dockerVersion": "v", "message": "hello\x00"}),
    (
        "POST",
        "/v1/docker/worker/config/vX",
        {"version": "V4", "config": {"workerType": "FULL", "docker": {"checkpoint": "x\x00"}}},
    ),
]


@pytest.mark.parametrize(("method", "path", "body"), NUL_BODIES, ids=[str(i) for i in range(len(NUL_BODIES))])
def test_nul_characters_anywhere_are_refused(api: Api, method: str, path: str, body: dict) -> None:
    before = {p: ok(api.get(p)) for p in ("/v1/datasets", "/v1/docker/worker", "/v1/docker/runs")}
    msg = _error(api.call(method, path, json=body), 400)
    assert "NUL" in msg or "pattern" in msg, msg
    after = {p: ok(api.get(p)) for p in before}
    assert before == after


def test_nul_in_logs_datasources_and_paths(api: Api) -> None:
    ds, run_id = _run(api)
    entry = {"ts": 1, "level": "INFO", "group": "g", "msg": "a\x00b"}
    assert "NUL" in _error(api.put(f"/v1/docker/runs/{run_id}/logs", json=[entry]), 400)
    src = {"purpose": "INPUT", "type": "LOCAL", "fullPath": "img\x00"}
    assert "NUL" in _error(api.put(f"/v1/datasets/{ds}/datasource", json=src), 400)
    assert "NUL" in _error(api.get("/v1/datasets/query/name/ab%00cd"), 400)
    assert "NUL" in _error(api.get("/v1/docker/worker/schedule", params={"labels": "a\x00"}), 400)


def test_names_longer_than_their_columns(api: Api) -> None:
    assert "300" in _error(api.post("/v1/datasets", json={"name": "d" * 301}), 400)
    assert "200" in _error(api.post("/v1/docker/worker", json={"name": "worker-v", "dockerVersion": "v" * 201}), 400)
    wid = register(api)
    r = api.put(f"/v1/docker/worker/{wid}", json={"state": "IDLE", "dockerVersion": "v" * 201})
    assert "200" in _error(r, 400)
    assert "200" in _error(api.post("/v1/docker/runs", json={"dockerVersion": "v" * 201}), 400)
    assert "at most" in _error(api.post("/v1/docker/worker", json={"name": "worker-l", "labels": ["l" * 201]}), 400)
    ds = dataset(api)
    long_path = {"purpose": "INPUT", "type": "LOCAL", "fullPath": "p" * 1001}
    assert "1000" in _error(api.put(f"/v1/datasets/{ds}/datasource", json=long_path), 400)
    assert ok(api.get("/v1/datasets/query/name/" + "n" * 2000)) == []


# ---------------------------------------------------------------- item 7: limits


def _raw(server: ServerProcess, head: bytes, body_iter, read_timeout: float = 30) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    u = urlparse(server.url)
    with socket.create_connection((u.hostname, u.port), timeout=read_timeout) as s:
        s.sendall(head)

        def pump() -> None:
            try:
                for chunk in body_iter:
                    s.sendall(chunk)
            except OSError:
                pass  # the server answered and closed: expected

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
            part = s.recv(65536)
            if not part:
                break
            data += part
        t.join(60)
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def _rss_kb(server: ServerProcess) -> int:
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_declared_oversized_body_is_refused_before_it_is_read(server: ServerProcess, token: str) -> None:
    size = 100 * 1024**2
    head = (
        f"POST /v1/datasets?token={token} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()
    before = _rss_kb(server)
    status, body = _raw(server, head, iter([b'{"name": "' + b"n" * (1024 * 1024)]))
    assert status == 413
    err = json.loads(body)
    assert err["code"] == "PAYLOAD_TOO_LARGE" and str(BODY_LIMIT) in err["error"]
    assert _rss_kb(server) - before < 20 * 1024


def test_a_streamed_oversized_body_is_cut_off(server: ServerProcess, token: str) -> None:
    """100 MB of log message sent chunked (no Content-Length): refused once 8 MiB arrived; memory stays flat."""
    _, run_id = _run(Api(server.url, token))
    head = (
        f"PUT /v1/docker/runs/{run_id}/logs?token={token} HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"x" * (1024 * 1024)

    def body():  # type: ignore[no-untyped-def]
        yield b"%x\r\n%s\r\n" % (
            len(b'[{"ts": 1, "level": "INFO", "group": "g", "msg": "'),
            b'[{"ts": 1, "level": "INFO", "group": "g", "msg": "',
        )
        for _ in range(100):
            yield b"%x\r\n%s\r\n" % (len(chunk), chunk)
        yield b'2\r\n"}\r\n1\r\n]\r\n0\r\n\r\n'

    before = _rss_kb(server)
    status, raw = _raw(server, head, body())
    assert status == 413 and json.loads(raw)["code"] == "PAYLOAD_TOO_LARGE"
    assert _rss_kb(server) - before < 40 * 1024, "the server buffered the body"
    assert ok(Api(server.url, token).get(f"/v1/docker/runs/{run_id}/logs"))["logs"] == []


def test_log_message_and_batch_limits(api: Api) -> None:
    _, run_id = _run(api)
    entry = {"ts": 1, "level": "INFO", "group": "g", "msg": "m" * MAX_LOG_MESSAGE_LENGTH}
    ok(api.put(f"/v1/docker/runs/{run_id}/logs", json=[entry]), 204)
    long = {**entry, "msg": "m" * (MAX_LOG_MESSAGE_LENGTH + 1)}
    assert str(MAX_LOG_MESSAGE_LENGTH) in _error(api.put(f"/v1/docker/runs/{run_id}/logs", json=[long]), 400)
    many = [{**entry, "msg": "x"}] * (MAX_LOG_ENTRIES + 1)
    assert str(MAX_LOG_ENTRIES) in _error(api.put(f"/v1/docker/runs/{run_id}/logs", json=many), 400)


def test_no_logs_after_a_run_ended(api: Api) -> None:
    _, run_id = _run(api)
    entry = {"ts": 1, "level": "INFO", "group": "g", "msg": "before"}
    ok(api.put(f"/v1/docker/runs/{run_id}/logs", json=[entry]), 204)
    run_state(api, run_id, "COMPLETED")
    msg = _error(api.put(f"/v1/docker/runs/{run_id}/logs", json=[{**entry, "msg": "after"}]), 409)
    assert "COMPLETED" in msg
    assert [e["msg"] for e in ok(api.get(f"/v1/docker/runs/{run_id}/logs"))["logs"]] == ["before"]


def test_a_dataset_name_of_100_mb_is_refused(api: Api) -> None:
    r = api.post(
        "/v1/datasets",
        content=json.dumps({"name": "n" * (100 * 1024**2)}),
        headers={"content-type": "application/json"},
    )
    assert _error(r, 413)
    assert ok(api.get("/v1/datasets")) == []


def test_selections_have_their_own_larger_limit(api: Api) -> None:
    ds, run_id = _run(api)
    names = [f"dir-{i:06d}/" + "f" * 200 + ".jpg" for i in range(45_000)]  # ~10 MB, over the general limit
    ok(api.put(f"/v1/docker/runs/{run_id}/selection", json={"filenames": names}), 204)
    run_state(api, run_id, "COMPLETED")
    (tag,) = [t for t in ok(api.get(f"/v1/datasets/{ds}/tags")) if t["name"] != "initial-tag"]
    assert ok(api.get(f"/v1/datasets/{ds}/tags/{tag['id']}/filenames")) == names


# ---------------------------------------------------------------- item 11: one filename, one line


@pytest.mark.parametrize("bad", ["a\nb.jpg", "a\rb.jpg", "tab\there.jpg", "sep\u2028x.jpg", "nul\x00.jpg", ""])
def test_filenames_with_line_breaks_or_controls_are_refused(api: Api, bad: str) -> None:
    _, run_id = _run(api)
    r = api.put(f"/v1/docker/runs/{run_id}/selection", json={"filenames": ["ok.jpg", bad]})
    assert "filenames" in _error(r, 400)


def test_the_tag_export_is_one_filename_per_line(api: Api, db_backend: Backend) -> None:
    ds, run_id = _run(api)
    names = ["a.jpg", "b c.jpg", "ü/ß.jpg"]
    ok(api.put(f"/v1/docker/runs/{run_id}/selection", json={"filenames": names}), 204)
    run_state(api, run_id, "COMPLETED")
    (tag,) = [t for t in ok(api.get(f"/v1/datasets/{ds}/tags")) if t["name"] != "initial-tag"]
    # a name with a newline stored by an older server is left out of the line-based export
    run_sql(db_backend, "UPDATE samples SET file_name = :n WHERE dataset_id = :ds AND idx = 1", n="evil\nname", ds=ds)
    export = ok(api.get(f"/v1/datasets/{ds}/tags/{tag['id']}/export/basic/filenames"))
    assert export.split("\n") == ["a.jpg", "ü/ß.jpg"]


# ---------------------------------------------------------------- item 10: tags in linear time


def test_bitmask_helpers_match_the_int_reference() -> None:
    import random

    rng = random.Random(7)
    for n in (1, 7, 8, 9, 63, 64, 65, 1000, 4099):
        chosen = rng.sample(range(n), rng.randint(0, n))
        ref = 0
        for i in chosen:
            ref |= 1 << i
        assert bitmask.encode(chosen, n) == hex(ref)
        assert bitmask.members(hex(ref), range(n + 9)) == [bool(ref >> i & 1) for i in range(n + 9)]


def test_bitmask_work_is_linear() -> None:
    """The shape without timing. Each index is read once by encode and once by members, and the store no
    longer grows or shifts a Python int per sample (``mask |= 1 << i`` and ``mask >> i & 1`` copy the whole
    growing int each time: quadratic; docs/benchmarks.md has the figures of bench/tag_bench.py)."""
    import ast
    import inspect

    from lightly_server import store

    class Counted:
        def __init__(self, n: int) -> None:
            self.n, self.reads = n, 0

        def __iter__(self):  # type: ignore[no-untyped-def]
            for i in range(self.n):
                self.reads += 1
                yield i

    for n in (1000, 100_000):
        chosen, probes = Counted(n), Counted(n)
        assert bitmask.members(bitmask.encode(chosen, n), probes) == [True] * n
        assert (chosen.reads, probes.reads) == (n, n)
    for fn in (store.materialize_selection_tag, store.tag_filenames):
        body = ast.parse(inspect.getsource(fn).lstrip()).body[0].body  # type: ignore[attr-defined]
        nodes = [node for stmt in body for node in ast.walk(stmt)]
        bit_ops = (ast.LShift, ast.RShift, ast.BitOr)
        shifts = [n for n in nodes if isinstance(n, ast.BinOp | ast.AugAssign) and isinstance(n.op, bit_ops)]
        assert shifts == [], f"{fn.__name__} does bit arithmetic on a Python int per sample"


# ---------------------------------------------------------------- item 12: the spec says what the server does


def test_the_openapi_document_has_the_servers_error_statuses(server: ServerProcess) -> None:
    doc = httpx.get(f"{server.url}/openapi.json").json()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert doc["components"]["schemas"]["ApiErrorResponse"]["required"] == ["code", "error"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert "422" not in op["responses"], (method, path)
            if op.get("parameters") or op.get("requestBody"):
                ref = op["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ApiErrorResponse"), (method, path)
    r = httpx.post(f"{server.url}/v1/datasets", params={"token": "x"}, content=b"{")
    assert r.status_code in (400, 401)


def test_long_utf8_filenames_and_tag_names_at_the_column_limit(api: Api) -> None:
    """Filenames are keys of a unique index (PostgreSQL holds ~2700 bytes an entry); a tag name that is
    taken gets the run id appended, still within its 300-character column."""
    ds, run_id = _run(api)
    assert "bytes" in _error(api.put(f"/v1/docker/runs/{run_id}/selection", json={"filenames": ["日" * 1000]}), 400)
    names = ["日" * 666 + ".j"]  # 2000 bytes
    tag = "t" * 300
    ok(api.put(f"/v1/docker/runs/{run_id}/selection", json={"filenames": names, "tagName": tag}), 204)
    run_state(api, run_id, "COMPLETED")
    wid = register(api)
    sid = schedule(api, ds, config(api))
    ok(lock(api, ds, wid, sid), 204)
    second = start_run(api, ds, sid)
    ok(api.put(f"/v1/docker/runs/{second}/selection", json={"filenames": names, "tagName": tag}), 204)
    run_state(api, second, "COMPLETED")
    got = sorted(t["name"] for t in ok(api.get(f"/v1/datasets/{ds}/tags")) if t["name"] != "initial-tag")
    assert got[-1] == tag and len(got[0]) == 300 and got[0].endswith(second)
    for t in ok(api.get(f"/v1/datasets/{ds}/tags")):
        assert ok(api.get(f"/v1/datasets/{ds}/tags/{t['id']}/filenames")) == names


def test_create_token_refuses_user_names_longer_than_the_column(db_backend: Backend, server: ServerProcess) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "lightly_server.cli", "create-token", "--database", db_backend.database_url,
         "--user", "u" * 201],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "200 characters" in out.stderr
