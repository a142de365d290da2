"""k-nearest-neighbour graphs of embeddings: exact (blocked GEMMs) or approximate (an inverted-file index).

Both return ``(dist, idx)``: N x k float32 Euclidean distances and int64 indices of each row's k nearest
*other* rows, nearest first (``idx = -1``, ``dist = inf`` where fewer than k were found).

* exact: ``|x|^2 + |y|^2 - 2 x.y`` in row blocks of ``block`` x N (torch ``addmm`` + ``topk``), N^2 D work;
  fine up to ~10^5 rows on a CPU and ~10^6 on a GPU.
* approximate (IVF): k-means with ``n_lists`` centroids (fit on a sample of the rows, Lloyd in blocked
  GEMMs), every row assigned to its nearest centroid; the rows of one list search the rows of the
  ``n_probe`` lists whose centroids are nearest to that list's centroid (one GEMM per list, so the
  work is N x n_probe x (N / n_lists) x D: linear in N at a fixed list size). A row near the border of
  its cell can miss a neighbour in a cell that is not probed; ``bench/coverage_scale.py`` measures the
  recall (numbers in docs/benchmarks.md).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["approx_knn", "auto_knn", "exact_knn", "kmeans"]

#: above this many multiply-adds (N^2 D) the exact graph is replaced by the IVF one (CPU / CUDA)
EXACT_WORK_LIMIT = {"cpu": 2.5e12, "cuda": 2e14}


def _sq(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(1)


def exact_knn(
    x: np.ndarray | torch.Tensor, k: int, device: str = "cpu", block: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """The exact k nearest other rows of every row (see the module docstring)."""
    xt = torch.as_tensor(x, dtype=torch.float32).to(device)
    n = xt.shape[0]
    k_eff = min(k, n - 1)
    dist = np.full((n, k), np.inf, dtype=np.float32)
    idx = np.full((n, k), -1, dtype=np.int64)
    if k_eff <= 0:
        return dist, idx
    sq = _sq(xt)
    for rs in range(0, n, block):
        xb = xt[rs : rs + block]
        d2 = torch.addmm(sq.unsqueeze(0), xb, xt.t(), alpha=-2.0).add_(sq[rs : rs + block].unsqueeze(1))
        rows = torch.arange(xb.shape[0], device=xt.device)
        d2[rows, rows + rs] = math.inf  # not its own neighbour
        v, i = torch.topk(d2, k_eff, dim=1, largest=False)
        dist[rs : rs + block, :k_eff] = v.clamp_min_(0.0).sqrt_().cpu().numpy()
        idx[rs : rs + block, :k_eff] = i.cpu().numpy()
    return dist, idx


def kmeans(
    x: torch.Tensor, n_clusters: int, iters: int = 15, sample: int = 65536, seed: int = 0, block: int = 8192
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means fit on a random sample of ``sample`` rows (k-means++-free: random rows as the
    start), then every row assigned. Returns (centroids C x D, assignment N) on x's device."""
    n = x.shape[0]
    n_clusters = max(1, min(n_clusters, n))
    gen = torch.Generator().manual_seed(seed)
    fit = x[torch.randperm(n, generator=gen)[: min(n, max(sample, n_clusters))].to(x.device)]
    cent = fit[torch.randperm(fit.shape[0], generator=gen)[:n_clusters].to(x.device)].clone()
    for _ in range(iters):
        lab = assign(fit, cent, block)
        sums = torch.zeros_like(cent).index_add_(0, lab, fit)
        counts = torch.bincount(lab, minlength=n_clusters).to(fit.dtype)
        empty = counts == 0
        cent = torch.where(empty.unsqueeze(1), cent, sums / counts.clamp_min(1).unsqueeze(1))
    return cent, assign(x, cent, block)


def assign(x: torch.Tensor, cent: torch.Tensor, block: int = 8192) -> torch.Tensor:
    """Index of the nearest centroid of every row (blocked GEMMs)."""
    c_sq = _sq(cent)
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for rs in range(0, x.shape[0], block):
        xb = x[rs : rs + block]
        out[rs : rs + block] = torch.addmm(c_sq.unsqueeze(0), xb, cent.t(), alpha=-2.0).argmin(1)
    return out


def approx_knn(
    x: np.ndarray | torch.Tensor,
    k: int,
    device: str = "cpu",
    n_lists: int | None = None,
    n_probe: int = 8,
    seed: int = 0,
    block: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate k nearest other rows with an inverted-file index (see the module docstring).

    ``n_lists``: cells of the index (default N / 1024, at least 1); ``n_probe``: cells searched per cell.
    """
    xt = torch.as_tensor(x, dtype=torch.float32).to(device)
    n = xt.shape[0]
    n_lists = n_lists or max(1, n // 1024)
    n_probe = max(1, min(n_probe, n_lists))
    cent, lab = kmeans(xt, n_lists, seed=seed)
    order = torch.argsort(lab)
    counts = torch.bincount(lab, minlength=n_lists).cpu().numpy()
    starts = np.concatenate([[0], np.cumsum(counts)])
    c_sq = _sq(cent)
    probe = (
        torch.topk(
            torch.addmm(c_sq.unsqueeze(0), cent, cent.t(), alpha=-2.0).add_(c_sq.unsqueeze(1)),
            n_probe,
            1,
            largest=False,
        )
        .indices.cpu()
        .numpy()
    )
    sq = _sq(xt)
    dist = np.full((n, k), np.inf, dtype=np.float32)
    idx = np.full((n, k), -1, dtype=np.int64)
    for c in range(n_lists):
        if counts[c] == 0:
            continue
        cand = torch.cat([order[starts[p] : starts[p + 1]] for p in probe[c]])
        k_eff = min(k, cand.shape[0] - 1)
        if k_eff <= 0:
            continue
        xc, xc_sq = xt[cand], sq[cand]
        for qs in range(starts[c], starts[c + 1], block):  # a large cell is searched in query blocks
            q = order[qs : min(qs + block, starts[c + 1])]
            d2 = torch.addmm(xc_sq.unsqueeze(0), xt[q], xc.t(), alpha=-2.0).add_(sq[q].unsqueeze(1))
            d2[q.unsqueeze(1) == cand.unsqueeze(0)] = math.inf  # not its own neighbour
            v, j = torch.topk(d2, k_eff, dim=1, largest=False)
            qn = q.cpu().numpy()
            dist[qn, :k_eff] = v.clamp_min_(0.0).sqrt_().cpu().numpy()
            idx[qn, :k_eff] = cand[j].cpu().numpy()
    bad = ~np.isfinite(dist)
    idx[bad] = -1
    return dist, idx


def auto_knn(x: np.ndarray, k: int, device: str = "cpu") -> tuple[np.ndarray, np.ndarray, str]:
    """Exact when N^2 D is below ``EXACT_WORK_LIMIT`` for the device, else IVF; returns (dist, idx, method)."""
    n, d = x.shape
    limit = EXACT_WORK_LIMIT["cuda" if device.startswith("cuda") else "cpu"]
    if float(n) * n * d <= limit:
        return (*exact_knn(x, k, device), "exact")
    return (*approx_knn(x, k, device), "ivf")
