"""Scaling of COVERAGE_EXT (ProbCover) to large N: the kNN graph (exact or IVF), its recall, the greedy.

Data: a Gaussian mixture on the unit sphere (``--clusters`` random unit centres, isotropic noise of
total norm ``--spread``, rows L2-normalised as the worker's embeddings are), float32.

For every N: builds the approximate (IVF) kNN graph of ``lightly_worker.selection.neighbours``
(k = 64, the strategy's default; lists of ~1024 rows, ``--probe`` lists searched) and times it; measures
its recall@k against the exact neighbours of ``--queries`` random rows (exact by brute force on those
rows only); then times the coverage greedy (``coverage_select`` with the same graph builder) for
``--k`` picks. With ``--exact`` (small N only: N^2 D work) it also builds the exact graph and compares
the covered fraction of the two selections at the same radius.

    .venv/bin/python bench/coverage_scale.py --n 100000 --exact
    .venv/bin/python bench/coverage_scale.py --n 1000000 --k 10000
    .venv/bin/python bench/coverage_scale.py --device cuda --n 1000000 --k 10000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
import torch
from lightly_worker.selection.coverage import DEFAULT_COVERAGE_NEIGHBORS, budget_radius, coverage_select
from lightly_worker.selection.neighbours import approx_knn, exact_knn


def mixture(n: int, d: int, clusters: int, spread: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 65536):
        m = min(65536, n - s)
        lab = rng.integers(0, clusters, m)
        x[s : s + m] = centres[lab] + rng.standard_normal((m, d), dtype=np.float32) * (spread / np.sqrt(d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def exact_rows(x: torch.Tensor, rows: np.ndarray, k: int) -> np.ndarray:
    """Exact k nearest other rows of ``rows`` only (brute force over all of x)."""
    q = x[torch.from_numpy(rows).to(x.device)]
    out = []
    sq = (x * x).sum(1)
    for s in range(0, len(rows), 256):
        qb = q[s : s + 256]
        d2 = torch.addmm(sq.unsqueeze(0), qb, x.t(), alpha=-2.0).add_((qb * qb).sum(1, keepdim=True))
        d2[torch.arange(len(qb)), torch.from_numpy(rows[s : s + 256]).to(x.device)] = float("inf")
        out.append(torch.topk(d2, k, 1, largest=False).indices.cpu().numpy())
    return np.concatenate(out)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100_000])
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--k", type=int, default=1000, help="samples to pick")
    ap.add_argument("--neighbours", type=int, default=DEFAULT_COVERAGE_NEIGHBORS)
    ap.add_argument("--probe", type=int, default=8)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--spread", type=float, default=0.8)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--exact", action="store_true", help="also the exact graph (N^2 D work)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    results: list[dict[str, Any]] = []
    for n in args.n:
        row: dict[str, Any] = {"n": n, "d": args.d, "k": args.k, "neighbours": args.neighbours, "probe": args.probe}
        t0 = time.perf_counter()
        x = mixture(n, args.d, args.clusters, args.spread)
        row["data_s"] = round(time.perf_counter() - t0, 2)
        xt = torch.from_numpy(x).to(args.device)
        sync(args.device)
        t0 = time.perf_counter()
        dist, idx = approx_knn(xt, args.neighbours, args.device, n_probe=args.probe)
        sync(args.device)
        row["ivf_knn_s"] = round(time.perf_counter() - t0, 2)
        print(f"  ivf graph: {row['ivf_knn_s']} s", file=sys.stderr, flush=True)
        rows = np.random.default_rng(1).choice(n, min(args.queries, n), replace=False)
        truth = exact_rows(xt, rows, args.neighbours)
        row["recall_at_k"] = round(
            float(np.mean([len(set(a) & set(b)) / args.neighbours for a, b in zip(idx[rows], truth, strict=True)])), 4
        )
        row["recall_at_10"] = round(
            float(np.mean([len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(idx[rows], truth, strict=True)])), 4
        )
        print(f"  recall@{args.neighbours}: {row['recall_at_k']}", file=sys.stderr, flush=True)
        radius, m = budget_radius(dist, args.k)
        row["radius"], row["radius_m"] = round(radius, 4), m
        graphs = {"ivf": (dist, idx)}
        if args.exact:
            t0 = time.perf_counter()
            graphs["exact"] = exact_knn(xt, args.neighbours, args.device)
            sync(args.device)
            row["exact_knn_s"] = round(time.perf_counter() - t0, 2)
        for name, (gd, gi) in graphs.items():
            t0 = time.perf_counter()
            res = coverage_select(x, args.k, radius=radius, device=args.device, graph=(gd, gi, name))
            row[f"{name}_greedy_s"] = round(time.perf_counter() - t0, 2)
            row[f"{name}_covered_fraction"] = round(res.details["covered_fraction"], 4)
            row[f"{name}_mean_ball"] = round(res.details["mean_ball_size"], 2)
            # the covered fraction measured on the exact graph when there is one (what the picks really cover)
            if "exact" in graphs:
                d_e, i_e = graphs["exact"]
                member = (i_e[res.picks] >= 0) & (d_e[res.picks] <= radius)
                cov_set = set(res.picks) | set(i_e[res.picks][member].tolist())
                row[f"{name}_picks_cover_exact"] = round(len(cov_set) / n, 4)
        print(json.dumps(row), flush=True)
        results.append(row)
        del x, xt, dist, idx, graphs
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
