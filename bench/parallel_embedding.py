"""One run embedded by 1 and by 2 worker processes (issue 11), a real server, the default model.

    .venv/bin/python bench/parallel_embedding.py                    # 600 images, shards of 50, 3 pairs
    .venv/bin/python bench/parallel_embedding.py --n 1000 --shard-size 100 --input-size 128

Phases:
  1. ``--n`` generated scenes (``lightly_devkit.data``), a real ``lightly-server`` (SQLite), and worker
     processes in waiting mode (the real CLI), each with 1 torch thread and in-process decode
     (``lightly.loader.num_workers=0``): on the 2-core dev box one core per worker.
  2. The same run (DIVERSITY, ``--select`` samples) with 1 worker (``parallelism`` unset: today's path)
     and with 2 workers (``parallelism: 2``), ``--pairs`` times back to back (a shared box's load
     changes; each pair's ratio is shown with the load average before it). Embedding wall time =
     the run's CHECKING_CORRUPTNESS + EMBEDDING stage seconds (report.json; for the split run:
     publish, both workers' shards, waiting, downloads and assembly); the whole run from schedule
     to DONE, the workers' CPU seconds and their shards are shown too.
  3. Coordination overhead per shard, measured on its own over the same server: publish the listing,
     then for every shard claim + file list + heartbeat + upload of a real-sized result + download,
     timed; bytes moved per image (listing, file lists, results up and down).
Prints one JSON document; docs/benchmarks.md "Parallel embedding" has the figures and the model.
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
import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from lightly_devkit.data import make_dataset  # noqa: E402
from lightly_devkit.processes import proc_cpu_s, stop_process  # noqa: E402
from lightly_devkit.servers import create_token, loopback_env, start_server  # noqa: E402
from lightly_protocol import paths  # noqa: E402
from lightly_protocol.models import ScheduledRunData  # noqa: E402
from lightly_worker.api import WorkerApi  # noqa: E402
from lightly_worker.shardfile import ShardResult, encode, names_digest  # noqa: E402


class Http:
    def __init__(self, url: str, token: str) -> None:
        self.c = httpx.Client(base_url=url, params={"token": token}, timeout=60, trust_env=False)

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        r = self.c.request(method, path, **kw)
        if r.status_code != status:
            raise SystemExit(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r.json() if r.content else None


def start_workers(
    n: int, tmp: Path, url: str, token: str, tag: str, args: argparse.Namespace
) -> list[subprocess.Popen]:
    (tmp / "token").write_text(token)
    env = loopback_env() | {
        "LIGHTLY_SERVER_LOCATION": url,
        "LIGHTLY_TOKEN_FILE": str(tmp / "token"),
        "OMP_NUM_THREADS": "1",
    }
    procs = []
    for i in range(n):
        cmd = [
            sys.executable,
            "-m",
            "lightly_worker.cli",
            f"worker.name=bench-{tag}-{i}",
            f"input_mount={tmp / 'input'}",
            f"lightly_mount={tmp / 'lightly'}",
            f"output_dir={tmp / 'out' / tag / str(i)}",
            "worker.poll_wait_seconds=5",
            "worker.heartbeat_seconds=2",
            f"embedding.input_size={args.input_size}",
            "lightly.loader.num_workers=0",
            "device=cpu",
        ]
        log = open(tmp / f"worker-{tag}-{i}.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
    return procs


def shard_log(tmp: Path, tag: str, n: int) -> list[dict[str, float]]:
    """Shards each worker finished and the seconds it spent in them (its log's ``shard i done`` lines)."""
    out = []
    for i in range(n):
        text = (tmp / f"worker-{tag}-{i}.log").read_text(errors="replace")
        found = re.findall(r"shard \d+ done: \d+ files \(\d+ corrupt\) in ([0-9.]+) s \(([0-9.]+) s CPU\)", text)
        secs, cpu = sum(float(a) for a, _ in found), sum(float(b) for _, b in found)
        out.append({"shards": len(found), "seconds_in_shards": round(secs, 2), "cpu_s_in_shards": round(cpu, 2)})
    return out


def wait_idle(http: Http, n: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(w["state"] == "IDLE" for w in http.ok("GET", paths.WORKERS)) >= n:
            return
        time.sleep(0.5)
    raise SystemExit(f"the {n} workers did not report IDLE in time")


def one_run(http: Http, ds: str, docker: dict[str, Any], select: int) -> dict[str, Any]:
    selection = {
        "nSamples": select,
        "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}],
    }
    body = {"version": "V4", "config": {"workerType": "FULL", "docker": docker, "selection": selection}}
    cid = http.ok("POST", paths.CONFIGS, 201, json=body)["id"]
    t0 = time.perf_counter()
    sid = http.ok("POST", paths.dataset_schedule(ds), 201, json={"configId": cid, "priority": "MID", "runsOn": []})[
        "id"
    ]
    while True:
        runs = [r for r in http.ok("GET", paths.runs_of_dataset(ds)) if r["scheduledId"] == sid]
        if runs and runs[-1]["state"] in ("COMPLETED", "FAILED", "CRASHED", "ABORTED"):
            break
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    run = runs[-1]
    if run["state"] != "COMPLETED":
        raise SystemExit(f"run ended {run['state']}: {run['message']}")
    out = Path(re.search(r"outputs in (\S+)$", run["message"]).group(1))  # type: ignore[union-attr]
    report = json.loads((out / "report.json").read_text())
    stages = report["stage_seconds"]
    selected = (out / "filenames" / "selected_filenames.txt").read_text().split()
    return {
        "run_wall_s": round(wall, 2),
        "embedding_wall_s": round(stages.get("CHECKING_CORRUPTNESS", 0) + stages.get("EMBEDDING", 0), 2),
        "stage_seconds": {k: round(v, 2) for k, v in stages.items()},
        "n_candidates": report["summary"]["n_candidates"],
        "selected": selected,
        "out": str(out),
    }


def overhead(url: str, token: str, http: Http, names: list[str], shard_size: int, dim: int) -> dict[str, Any]:
    """Protocol cost per shard with real-sized results, no embedding work (one worker, sequential)."""
    api = WorkerApi(url, token, timeout=60)
    wid = api.register("bench-overhead", [], "bench")
    api.set_state(wid, "IDLE", "bench")
    ds = http.ok("POST", paths.DATASETS, 201, json={"name": f"overhead-{time.time_ns()}"})["id"]
    http.ok("PUT", paths.datasource(ds), 204, json={"purpose": "INPUT", "type": "LOCAL", "fullPath": ""})
    body = {"version": "V4", "config": {"workerType": "FULL", "docker": {"parallelism": 1}}}
    cid = http.ok("POST", paths.CONFIGS, 201, json=body)["id"]
    sid = http.ok("POST", paths.dataset_schedule(ds), 201, json={"configId": cid, "priority": "MID", "runsOn": []})[
        "id"
    ]
    assert api.lock(ds, wid, sid)
    row = ScheduledRunData.model_validate(http.ok("GET", paths.SCHEDULE, params={"state": "LOCKED"})[0])
    rid = api.create_run("bench", row)
    from lightly_protocol.shards import encode_listing

    t0 = time.perf_counter()
    plan = api.publish_shards(sid, wid, rid, names, shard_size, 1)
    publish_ms = (time.perf_counter() - t0) * 1000
    listing_bytes = len(encode_listing(names))
    rng = np.random.default_rng(0)
    per_shard: list[float] = []
    moved = result_bytes = 0
    while True:
        t = time.perf_counter()
        a = api.claim_shard(sid, wid)
        if a is None:
            break
        files = api.shard_files(a.shard.id)
        moved += len(json.dumps(files))
        api.shard_update(a.shard.id, wid, "LEASED", len(files))
        result = ShardResult(
            a.shard.index,
            a.shard.start,
            a.shard.stop,
            names_digest(files),
            rng.normal(size=(len(files), dim)).astype(np.float32),
            [os.urandom(20) for _ in files],
        )
        data = encode(result)
        api.upload_shard_result(a.shard.id, wid, data)
        got = api.shard_result(a.shard.id)
        moved += len(data) + len(got)
        result_bytes += len(data)
        per_shard.append((time.perf_counter() - t) * 1000)
    n_shards = len(plan.shards)
    return {
        "shards": n_shards,
        "publish_ms": round(publish_ms, 1),
        "per_shard_ms_median": round(float(np.median(per_shard)), 1),
        "per_shard_ms_p90": round(float(np.percentile(per_shard, 90)), 1),
        "bytes_per_image": round((moved + listing_bytes) / len(names), 1),
        "listing_bytes": listing_bytes,
        "result_bytes_per_image": round(result_bytes / len(names), 1),
        "dim": dim,
    }


def measure(tmp: Path, db: str, url: str, args: argparse.Namespace, tag: str, workers: int) -> dict[str, Any]:
    """One run of the dataset on ``workers`` fresh worker processes (1: not split)."""
    docker = {} if workers == 1 else {"parallelism": workers, "shardSize": args.shard_size}
    token = create_token(db, f"bench-{tag}")
    http = Http(url, token)
    ds = http.ok("POST", paths.DATASETS, 201, json={"name": f"bench-{tag}"})["id"]
    for purpose in ("INPUT", "LIGHTLY"):
        http.ok("PUT", paths.datasource(ds), 204, json={"purpose": purpose, "type": "LOCAL", "fullPath": ""})
    procs = start_workers(workers, tmp, url, token, tag, args)
    try:
        wait_idle(http, workers)
        cpu0 = [proc_cpu_s(p.pid) for p in procs]
        result = one_run(http, ds, docker, args.select)
        result["worker_cpu_s"] = [round(proc_cpu_s(p.pid) - c, 2) for p, c in zip(procs, cpu0, strict=True)]
    finally:
        for proc in procs:
            stop_process(proc, timeout=30)
    result["shards_per_worker"] = shard_log(tmp, tag, workers)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=600, help="generated images")
    p.add_argument("--shard-size", type=int, default=50)
    p.add_argument("--input-size", type=int, default=128, help="embedding.input_size (the CPU default)")
    p.add_argument("--select", type=int, default=40)
    p.add_argument("--pairs", type=int, default=3, help="back-to-back (1 worker, 2 workers) pairs")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-parallel-") as d:
        tmp = Path(d)
        make_dataset(tmp / "input", n=args.n)
        (tmp / "lightly").mkdir()
        db = f"sqlite:///{tmp / 'bench.sqlite3'}"
        server = start_server(db, tmp / "server.log", artifacts_dir=tmp / "artifacts", lease_seconds=60)
        results: dict[str, Any] = {"n_files": args.n + 2, "shard_size": args.shard_size, "input_size": args.input_size}
        pairs: list[dict[str, Any]] = []
        try:
            for k in range(args.pairs):
                load = [round(x, 2) for x in os.getloadavg()]
                one = measure(tmp, db, server.url, args, f"p{k}w1", 1)
                two = measure(tmp, db, server.url, args, f"p{k}w2", 2)
                pairs.append(
                    {
                        "loadavg_before": load,
                        "workers_1": one,
                        "workers_2": two,
                        "same_selection": one.pop("selected") == two.pop("selected"),
                        "speedup_embedding": round(one["embedding_wall_s"] / two["embedding_wall_s"], 2),
                        "speedup_run": round(one["run_wall_s"] / two["run_wall_s"], 2),
                    }
                )
                print(json.dumps(pairs[-1]), file=sys.stderr)
            results["pairs"] = pairs
            results["speedup_embedding_median"] = float(np.median([x["speedup_embedding"] for x in pairs]))
            names = sorted(p.name for p in (tmp / "input").iterdir())
            token = create_token(db, "bench-overhead")
            results["overhead"] = overhead(server.url, token, Http(server.url, token), names, args.shard_size, 1280)
        finally:
            server.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
