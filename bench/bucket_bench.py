"""Bucket datasources (issue 23): embedding from S3 with latency vs local disk, a 1,000,000-key listing, and
the bytes and requests each image costs.

    .venv/bin/python bench/bucket_bench.py                          # both phases (defaults below)
    .venv/bin/python bench/bucket_bench.py --phase throughput --n 300 --pairs 2 --delay-ms 20
    .venv/bin/python bench/bucket_bench.py --phase listing --keys 1000000

Everything is real: moto's S3 server (its own process), ``lightly-server`` (SQLite) with ``AWS_ENDPOINT_URL``
pointing at the store, and the real ``lightly-worker`` CLI in waiting mode.

throughput
  ``--n`` generated 1920x1080 JPEGs (photo-like, as bench/embedding_bench.py) on local disk and in a moto
  bucket. The store is reached only through ``lightly_devkit.latency_proxy`` adding ``--delay-ms`` before
  every request (the server's listing and the worker's reads of presigned URLs alike); a second proxy with
  no delay sits between the worker and the API server and counts its API requests. One worker process runs
  the same selection on a LOCAL dataset (the files under its input_mount) and on an S3 dataset (the same
  files in the bucket), ``--pairs`` times back to back. Throughput = images / (CHECKING_CORRUPTNESS +
  EMBEDDING seconds of the run's report.json); the ratio S3/LOCAL is taken per pair, inside one run of this
  script. Per image: store requests and bytes, API requests and bytes, for each datasource type.

listing
  ``--keys`` keys are put into moto's in-process backend in moto's own server process (one PUT per key over
  HTTP would take hours; this takes about a minute per million), then ``lightly-server`` lists them page by
  page for a client: the whole listing through ``GET /v1/datasets/{id}/datasource/list`` (cursor paging,
  ``pageSize`` 1000 and 10000), timed, with the server's peak RSS; then the worker's own listing code
  (``lightly_worker.sources``) in a fresh process, timed, with its peak RSS. moto's ListObjectsV2 sorts
  the whole bucket for every page (O(keys) per page: a million keys would take about an hour of moto's
  time); the moto process of this benchmark replaces it with a sorted index and bisection (same answers,
  same continuation tokens), so the figures are our server's and worker's, not moto's.

Prints one JSON document (``--json FILE`` writes it too); docs/benchmarks.md, "Data in buckets", has the
figures and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from lightly_devkit.latency_proxy import LatencyProxy  # noqa: E402
from lightly_devkit.net import free_port  # noqa: E402
from lightly_devkit.processes import proc_cpu_s, proc_mem_mb, stop_process  # noqa: E402
from lightly_devkit.servers import SERVER_CLI, create_token, loopback_env, start_server  # noqa: E402
from lightly_protocol import paths  # noqa: E402

BUCKET = "bench-bucket"
REGION = "us-east-1"
ACCESS_KEY, SECRET_KEY = "AKIABENCHBUCKET00001", "bench-secret-access-key"
END_STATES = ("COMPLETED", "FAILED", "CRASHED", "ABORTED")


# ------------------------------------------------------------------ moto, in its own process


def serve_moto(port: int, keys: int, prefix: str) -> None:
    """(Run in a child process.) moto's S3 server on 127.0.0.1:``port``, with ``keys`` empty objects put into
    the backend directly and ListObjectsV2 answered from a sorted index; prints one JSON line when ready."""
    import bisect
    import hashlib

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import FakeDeleteMarker, S3Backend, s3_backends
    from moto.server import ThreadedMotoServer

    original = S3Backend.list_objects_v2
    index: dict[int, tuple[int, list[str]]] = {}

    def list_objects_v2(self, bucket, prefix, delimiter, continuation_token, start_after, max_keys):  # type: ignore[no-untyped-def]
        if delimiter:
            return original(self, bucket, prefix, delimiter, continuation_token, start_after, max_keys)
        held = index.get(id(bucket))
        if held is None or held[0] != len(bucket.keys):  # rebuilt after a put or delete of a key
            held = (len(bucket.keys), sorted(bucket.keys.keys()))
            index[id(bucket)] = held
        names = held[1]
        prefix = prefix or ""
        at = bisect.bisect_left(names, prefix)
        after = self._pagination_tokens.get(continuation_token) if continuation_token else start_after
        if after:
            at = max(at, bisect.bisect_right(names, after))
        page: list[Any] = []
        while at < len(names) and names[at].startswith(prefix) and len(page) <= max_keys:
            key = bucket.keys[names[at]]
            if not isinstance(key, FakeDeleteMarker):
                page.append(key)
            at += 1
        truncated = len(page) > max_keys
        token = None
        if truncated:
            page = page[:max_keys]
            token = hashlib.md5(page[-1].name.encode()).hexdigest()
            self._pagination_tokens[token] = page[-1].name
        return page, truncated, token

    S3Backend.list_objects_v2 = list_objects_v2  # type: ignore[method-assign]
    started = time.perf_counter()
    if keys:
        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        backend.create_bucket(BUCKET, REGION)
        for i in range(keys):
            backend.put_object(BUCKET, f"{prefix}d{i % 1000:03d}/img_{i:07d}.jpg", b"")
    put_s = time.perf_counter() - started
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print(json.dumps({"ready": True, "keys": keys, "put_s": round(put_s, 1)}), flush=True)
    try:
        sys.stdin.read()  # until the parent closes our stdin
    finally:
        server.stop()


class Moto:
    """``serve_moto`` in a child process; ``stop`` ends it."""

    def __init__(self, keys: int = 0, prefix: str = "big/", timeout: float = 1800) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, __file__, "serve-moto", str(self.port), str(keys), prefix]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=loopback_env())
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline and not line:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                raise SystemExit(f"moto exited with {self.proc.returncode}")
        self.ready = json.loads(line)

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        stop_process(self.proc)


def secret_key_file(tmp: Path) -> str:
    """A secret key for the server (it stores datasource credentials only with one)."""
    path = tmp / "secret-key"
    if not path.exists():
        key = subprocess.run(
            [*SERVER_CLI, "generate-secret-key"], check=True, capture_output=True, text=True, timeout=60
        ).stdout
        path.write_text(key)
        path.chmod(0o600)
    return str(path)


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
    )


# ------------------------------------------------------------------ the API


class Http:
    def __init__(self, url: str, token: str) -> None:
        self.c = httpx.Client(base_url=url, params={"token": token}, timeout=120, trust_env=False)

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        r = self.c.request(method, path, **kw)
        if r.status_code != status:
            raise SystemExit(f"{method} {path}: {r.status_code} {r.text[:500]}")
        return r.json() if r.content else None


def s3_datasource(prefix: str, purpose: str) -> dict[str, Any]:
    """What the unmodified client's ``set_s3_config`` sends."""
    return {
        "type": "S3",
        "fullPath": f"s3://{BUCKET}/{prefix}",
        "s3Region": REGION,
        "s3AccessKeyId": ACCESS_KEY,
        "s3SecretAccessKey": SECRET_KEY,
        "purpose": purpose,
        "thumbSuffix": ".lightly/thumbnails/[filename]_thumb.[extension]",
    }


def new_dataset(http: Http, name: str, sources: list[dict[str, Any]]) -> str:
    ds = http.ok("POST", paths.DATASETS, 201, json={"name": name})["id"]
    for source in sources:
        http.ok("PUT", paths.datasource(ds), 204, json=source)
    return str(ds)


def one_run(http: Http, ds: str, select: int) -> dict[str, Any]:
    selection = {
        "nSamples": select,
        "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}],
    }
    body = {"version": "V4", "config": {"workerType": "FULL", "docker": {}, "selection": selection}}
    cid = http.ok("POST", paths.CONFIGS, 201, json=body)["id"]
    t0 = time.perf_counter()
    sched = {"configId": cid, "priority": "MID", "runsOn": []}
    sid = http.ok("POST", paths.dataset_schedule(ds), 201, json=sched)["id"]
    while True:
        runs = [r for r in http.ok("GET", paths.runs_of_dataset(ds)) if r["scheduledId"] == sid]
        if runs and runs[-1]["state"] in END_STATES:
            break
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    run = runs[-1]
    if run["state"] != "COMPLETED":
        raise SystemExit(f"run ended {run['state']}: {run['message']}")
    found = re.search(r"outputs in (\S+)$", run["message"])
    if not found:
        raise SystemExit(f"no output folder in the run's message: {run['message']}")
    out = Path(found.group(1))
    report = json.loads((out / "report.json").read_text())
    stages = report["stage_seconds"]
    n = int(report["summary"]["n_candidates"])
    embed_s = stages.get("CHECKING_CORRUPTNESS", 0) + stages.get("EMBEDDING", 0)
    return {
        "run_wall_s": round(wall, 2),
        "embedding_wall_s": round(embed_s, 2),
        "images_per_s": round(n / embed_s, 2) if embed_s else None,
        "stage_seconds": {k: round(v, 2) for k, v in stages.items()},
        "n_candidates": n,
        "selected": sorted((out / "filenames" / "selected_filenames.txt").read_text().split()),
    }


def start_worker(tmp: Path, url: str, token: str, input_size: int) -> subprocess.Popen[bytes]:
    (tmp / "token").write_text(token)
    env = loopback_env() | {"LIGHTLY_SERVER_LOCATION": url, "LIGHTLY_TOKEN_FILE": str(tmp / "token")}
    cmd = [
        sys.executable,
        "-m",
        "lightly_worker.cli",
        "worker.name=bench-bucket",
        f"input_mount={tmp / 'input'}",
        f"lightly_mount={tmp / 'lightly'}",
        f"output_dir={tmp / 'out'}",
        "worker.poll_wait_seconds=5",
        "worker.heartbeat_seconds=2",
        f"embedding.input_size={input_size}",
        "device=cpu",
    ]
    log = open(tmp / "worker.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def wait_idle(http: Http, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(w["state"] == "IDLE" for w in http.ok("GET", paths.WORKERS)):
            return
        time.sleep(0.5)
    raise SystemExit("the worker did not report IDLE in time")


def per_image(stats: dict[str, Any], n: int) -> dict[str, Any]:
    return {
        "requests": round(stats["requests"] / n, 2),
        "bytes_up": round(stats["request_bytes"] / n, 1),
        "bytes_down": round(stats["response_bytes"] / n, 1),
        "methods": stats["methods"],
    }


def throughput(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from embedding_bench import make_jpegs

    t = time.perf_counter()
    (tmp / "input").mkdir()
    (tmp / "lightly").mkdir()
    names = make_jpegs(tmp / "input", args.n)
    mean_mb = sum((tmp / "input" / n).stat().st_size for n in names) / len(names) / 1e6
    print(f"generated {args.n} 1080p JPEGs (mean {mean_mb:.2f} MB) in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    moto = Moto()
    s3 = s3_client(moto.url)
    s3.create_bucket(Bucket=BUCKET)
    for name in names:
        s3.upload_file(str(tmp / "input" / name), BUCKET, f"images/{name}")
    host, port = moto.url.removeprefix("http://").split(":")
    store = LatencyProxy((host, int(port)), args.delay_ms / 1000).start()
    db = f"sqlite:///{tmp / 'bench.sqlite3'}"
    server_env = loopback_env() | {"AWS_ENDPOINT_URL": store.url}
    server = start_server(
        db,
        tmp / "server.log",
        "--secret-key-file",
        secret_key_file(tmp),
        artifacts_dir=tmp / "artifacts",
        lease_seconds=60,
        env=server_env,
    )
    api = LatencyProxy(("127.0.0.1", server.port), 0).start()
    token = create_token(db, "bench")
    http = Http(server.url, token)
    local_ds = new_dataset(
        http, "local", [{"type": "LOCAL", "fullPath": "", "purpose": p} for p in ("INPUT", "LIGHTLY")]
    )
    s3_ds = new_dataset(http, "bucket", [s3_datasource("images/", "INPUT"), s3_datasource("lightly/", "LIGHTLY")])
    worker = start_worker(tmp, api.url, token, args.input_size)
    result: dict[str, Any] = {
        "n_images": len(names),
        "mean_image_mb": round(mean_mb, 3),
        "delay_ms": args.delay_ms,
        "input_size": args.input_size,
    }
    pairs = []
    try:
        wait_idle(http)
        for _ in range(args.pairs):
            pair: dict[str, Any] = {"loadavg_before": [round(x, 2) for x in os.getloadavg()]}
            for kind, ds in (("local", local_ds), ("s3", s3_ds)):
                store.reset()
                api.reset()
                cpu0 = proc_cpu_s(worker.pid)
                r = one_run(http, ds, args.select)
                r["worker_cpu_s"] = round(proc_cpu_s(worker.pid) - cpu0, 2)
                r["store_per_image"] = per_image(store.reset().as_dict(), len(names))
                r["api_per_image"] = per_image(api.reset().as_dict(), len(names))
                pair[kind] = r
            pair["same_selection"] = pair["local"].pop("selected") == pair["s3"].pop("selected")
            pair["ratio_s3_to_local"] = round(pair["s3"]["images_per_s"] / pair["local"]["images_per_s"], 3)
            print(json.dumps(pair), file=sys.stderr)
            pairs.append(pair)
        result["worker_peak_rss_mb"] = proc_mem_mb(worker.pid).get("VmHWM")
    finally:
        stop_process(worker, timeout=30)
        api.stop()
        server.stop()
        store.stop()
        moto.stop()
    result["pairs"] = pairs
    ratios = sorted(p["ratio_s3_to_local"] for p in pairs)
    result["ratio_median"] = ratios[len(ratios) // 2]
    return result


def list_through_api(url: str, token: str, ds: str, page_size: int) -> dict[str, Any]:
    """The whole listing over plain HTTP, names counted and dropped (what any client pays)."""
    c = httpx.Client(base_url=url, timeout=300, trust_env=False)
    params: dict[str, Any] = {"token": token, "pageSize": page_size}
    n = pages = nbytes = 0
    t = time.perf_counter()
    while True:
        r = c.get(paths.datasource_list(ds), params=params)
        if r.status_code != 200:
            raise SystemExit(f"list: {r.status_code} {r.text[:300]}")
        body = r.json()
        n += len(body["data"])
        pages += 1
        nbytes += len(r.content)
        if not body.get("hasMore"):
            break
        params = {"token": token, "cursor": body["cursor"], "pageSize": page_size}
    return {
        "page_size": page_size,
        "keys": n,
        "pages": pages,
        "seconds": round(time.perf_counter() - t, 1),
        "bytes_per_key": round(nbytes / max(n, 1), 1),
    }


WORKER_LISTING = """
import json, sys, time
from lightly_devkit.processes import proc_mem_mb
from lightly_worker.sources import DatasourceApi, RemoteSource
url, token, ds = sys.argv[1:4]
t = time.perf_counter()
source = RemoteSource(DatasourceApi(url, token, ds), {"type": "S3", "fullPath": sys.argv[4]}, purpose="INPUT")
n = sum(1 for _ in source.walk())  # what a run's listing does (the worker keeps the names it listed)
print(json.dumps({"keys": n, "seconds": round(time.perf_counter() - t, 1),
                  "peak_rss_mb": proc_mem_mb(__import__("os").getpid()).get("VmHWM")}))
"""


def listing(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    t = time.perf_counter()
    moto = Moto(keys=args.keys, prefix="big/")
    result: dict[str, Any] = {"keys": args.keys, "moto_put_s": moto.ready["put_s"]}
    result["moto_ready_s"] = round(time.perf_counter() - t, 1)
    db = f"sqlite:///{tmp / 'listing.sqlite3'}"
    server = start_server(
        db,
        tmp / "listing-server.log",
        "--secret-key-file",
        secret_key_file(tmp),
        env=loopback_env() | {"AWS_ENDPOINT_URL": moto.url},
        timeout=60,
    )
    try:
        token = create_token(db, "bench-listing")
        http = Http(server.url, token)
        ds = new_dataset(http, "big", [s3_datasource("big/", "INPUT")])
        result["server_rss_before_mb"] = proc_mem_mb(server.proc.pid).get("VmRSS")
        result["server_peak_rss_before_mb"] = proc_mem_mb(server.proc.pid).get("VmHWM")
        runs = []
        for page_size in args.page_sizes:
            cpu0 = proc_cpu_s(server.proc.pid)
            r = list_through_api(server.url, token, ds, page_size)
            r["server_cpu_s"] = round(proc_cpu_s(server.proc.pid) - cpu0, 1)
            r["server_peak_rss_mb"] = proc_mem_mb(server.proc.pid).get("VmHWM")
            print(json.dumps(r), file=sys.stderr)
            runs.append(r)
        result["api"] = runs
        cpu0, store_cpu0 = proc_cpu_s(server.proc.pid), proc_cpu_s(moto.proc.pid)
        out = subprocess.run(
            [sys.executable, "-c", WORKER_LISTING, server.url, token, ds, f"s3://{BUCKET}/big/"],
            capture_output=True,
            text=True,
            timeout=3600,
            env=loopback_env(),
        )
        if out.returncode != 0:
            result["worker"] = {"error": out.stderr[-2000:]}
        else:
            result["worker"] = json.loads(out.stdout.strip().splitlines()[-1])
        result["worker"]["server_cpu_s"] = round(proc_cpu_s(server.proc.pid) - cpu0, 1)
        result["worker"]["store_cpu_s"] = round(proc_cpu_s(moto.proc.pid) - store_cpu0, 1)
        result["server_peak_rss_mb"] = proc_mem_mb(server.proc.pid).get("VmHWM")
    finally:
        server.stop()
        moto.stop()
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve-moto":
        serve_moto(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phase", choices=("throughput", "listing", "all"), default="all")
    p.add_argument("--n", type=int, default=200, help="generated 1080p JPEGs (throughput)")
    p.add_argument("--pairs", type=int, default=2, help="back-to-back LOCAL, S3 run pairs")
    p.add_argument("--delay-ms", type=float, default=20.0, help="added to every request to the store")
    p.add_argument("--input-size", type=int, default=128, help="embedding.input_size")
    p.add_argument("--select", type=int, default=20)
    p.add_argument("--keys", type=int, default=1_000_000, help="keys of the listing phase")
    p.add_argument(
        "--page-sizes", type=int, nargs="*", default=[], help="also list over plain HTTP with these pageSizes first"
    )
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    results: dict[str, Any] = {
        "vcpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
    }
    with tempfile.TemporaryDirectory(prefix="bench-bucket-") as d:
        tmp = Path(d)
        if args.phase in ("throughput", "all"):
            results["throughput"] = throughput(args, tmp)
        if args.phase in ("listing", "all"):
            results["listing"] = listing(args, tmp)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
