"""Web console pages at scale (issue 26): the runs page over 10,000 runs and a tag's gallery over 100,000
samples, each answered in under 1 s of server time on 2 cores.

    .venv/bin/python bench/console_bench.py                         # SQLite, the defaults below
    .venv/bin/python bench/console_bench.py --runs 10000 --samples 100000 --reps 20
    .venv/bin/python bench/console_bench.py --database postgresql://postgres@127.0.0.1:5432/bench_console

Everything is real: ``lightly-server`` on loopback, one user's data made through the API (``--runs`` runs on
one dataset, every fifth COMPLETED; one run whose selection of ``--samples`` filenames became a tag), a console
session signed in through the login form. Each page is fetched ``--reps`` times after one warm-up; the figures
are the client's wall time per answer over loopback (the server's time plus a loopback round trip, so an
upper bound of it): median, p95 and max, in ms. Prints one JSON document (``--json FILE`` writes it too);
docs/benchmarks.md, "Web console", has the figures and the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from console_kit import Console  # noqa: E402
from lightly_devkit.servers import create_token, start_server  # noqa: E402
from lightly_protocol import paths  # noqa: E402


def _make_runs(base: str, token: str, dataset_id: str, n: int) -> list[str]:
    def make(chunk: range) -> list[str]:
        with httpx.Client(base_url=base, params={"token": token}, trust_env=False, timeout=60) as api:
            ids = []
            for i in chunk:
                rid = api.post(paths.RUNS, json={"dockerVersion": "1.0.0", "datasetId": dataset_id}).json()["id"]
                if i % 5 == 0:
                    api.put(paths.run(rid), json={"state": "COMPLETED"}).raise_for_status()
                ids.append(rid)
            return ids

    chunks = [range(i, min(n, i + 250)) for i in range(0, n, 250)]
    with ThreadPoolExecutor(4) as pool:
        return [rid for part in pool.map(make, chunks) for rid in part]


def _make_tag(base: str, token: str, dataset_id: str, n: int) -> str:
    with httpx.Client(base_url=base, params={"token": token}, trust_env=False, timeout=300) as api:
        rid = api.post(paths.RUNS, json={"dockerVersion": "1.0.0", "datasetId": dataset_id}).json()["id"]
        names = [f"frames/{i // 1000:04d}/img-{i:07d}.jpg" for i in range(n)]
        api.put(paths.run_selection(rid), json={"filenames": names, "tagName": "big"}).raise_for_status()
        api.put(paths.run(rid), json={"state": "COMPLETED"}).raise_for_status()
        tags = api.get(paths.dataset_tags(dataset_id)).json()
        return str(next(t["id"] for t in tags if t["name"] == "big"))


def _time(console: Console, path: str, reps: int) -> dict[str, Any]:
    first = console.get(path)
    assert first.status_code == 200, (path, first.status_code, first.text[:300])
    ms = []
    for _ in range(reps):
        t0 = time.perf_counter()
        r = console.get(path)
        ms.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200
    ms.sort()
    return {
        "median_ms": round(statistics.median(ms), 1),
        "p95_ms": round(ms[max(0, int(len(ms) * 0.95) - 1)], 1),
        "max_ms": round(ms[-1], 1),
        "bytes": len(first.content),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--database", default=None, help="default: a fresh SQLite file")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.database or f"sqlite:///{tmp}/console.sqlite3"
        server = start_server(db, Path(tmp) / "server.log", artifacts_dir=Path(tmp) / "artifacts", log_level="warning")
        try:
            token = create_token(db, "bench")
            with httpx.Client(base_url=server.url, params={"token": token}, trust_env=False) as api:
                did = api.post(paths.DATASETS, json={"name": "bench"}).json()["id"]
            t0 = time.perf_counter()
            runs = _make_runs(server.url, token, did, args.runs)
            tag = _make_tag(server.url, token, did, args.samples)
            seeded_s = time.perf_counter() - t0
            console = Console(server.url)
            assert console.sign_in(token).status_code == 303
            last = (args.runs // 50) * 50
            pages = {
                "runs, first page": "/ui/runs",
                "runs, last page": f"/ui/runs?offset={last}",
                "runs, state=COMPLETED": "/ui/runs?state=COMPLETED",
                f"runs, dataset filter, offset {last // 2}": f"/ui/runs?dataset={did}&offset={last // 2}",
                "one run": f"/ui/runs/{runs[-1]}",
                "gallery, first page": f"/ui/datasets/{did}/tags/{tag}",
                "gallery, last page": f"/ui/datasets/{did}/tags/{tag}?offset={args.samples - 48}",
                "dataset": f"/ui/datasets/{did}",
            }
            result = {
                "runs": args.runs,
                "samples": args.samples,
                "database": "sqlite" if db.startswith("sqlite") else "postgresql",
                "seeding_s": round(seeded_s, 1),
                "pages": {name: _time(console, path, args.reps) for name, path in pages.items()},
            }
            console.close()
        finally:
            server.stop()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
