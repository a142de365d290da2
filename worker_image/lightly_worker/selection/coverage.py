"""COVERAGE_EXT: greedy maximum coverage of delta-balls on embeddings (ProbCover, Yehuda et al., NeurIPS 2022).

An extension of this worker, not a Lightly strategy. Each candidate i "covers" the candidates within
Euclidean distance ``radius`` (delta) of it; the selection greedily picks the candidate that covers the
most not yet covered candidates (ties: lowest index), so that every region of the data with enough
mass gets a labelled example, and dense regions are picked before outliers.

* Balls are read from a k-nearest-neighbour graph (``num_nearest_neighbors``, default 64, cap the
  ball size): exact for small inputs, an inverted-file index above ``neighbours.EXACT_WORK_LIMIT``
  (see :mod:`.neighbours`). A ball with more than k members counts k of them.
* delta (``coverage_radius_ext``, optional): without it the radius comes from the data and the budget,
  without labels: the median distance of the candidates to their m-th nearest neighbour, with
  m = N / (2 x samples to pick) clamped to [1, num_nearest_neighbors], so that a typical ball holds
  about N / (2 k) candidates and the k balls of the selection could cover about half of the data.
  (The paper's rule, the largest delta at which 95 % of the balls are *pure* in k-means pseudo-labels,
  is ``purity_radius``; on the benchmark's features it gave balls of 1-5 members and lost to this
  rule at every budget: docs/benchmarks.md.)
* Datapool samples (selected in earlier runs) cover their balls before the first pick.
* Once everything is covered and samples are still wanted, the rest is picked by DIVERSITY's exact
  k-center greedy from the selection so far (the farthest candidates); without a sample limit the
  selection stops there (stop reason ``covered``).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .kcenter import kcenter_greedy, min_sqdist_to_centers
from .neighbours import auto_knn

__all__ = [
    "DEFAULT_COVERAGE_NEIGHBORS",
    "PURITY",
    "CoverageResult",
    "budget_radius",
    "coverage_select",
    "purity_radius",
]

DEFAULT_COVERAGE_NEIGHBORS = 64
PURITY = 0.95


@dataclass
class CoverageResult:
    picks: list[int]
    stop_reason: str  # "n_samples" | "covered" | "exhausted"
    details: dict[str, Any] = field(default_factory=dict)


def purity_radius(dist: np.ndarray, idx: np.ndarray, labels: np.ndarray, purity: float = PURITY) -> float:
    """Largest radius at which a fraction ``purity`` of the kNN balls hold one pseudo-label only.

    ``dist``/``idx``: the kNN graph (N x k, nearest first); ``labels``: N pseudo-labels. A row without a
    neighbour of another label among its k counts its k-th distance (a lower bound)."""
    valid = idx >= 0
    other = valid & (labels[np.where(valid, idx, 0)] != labels[:, None])
    has = other.any(1)
    first = np.argmax(other, axis=1)
    rows = np.arange(len(dist))
    finite = np.where(np.isfinite(dist), dist, -np.inf).max(1)
    d_other = np.where(has, dist[rows, first], finite)
    d_other = d_other[np.isfinite(d_other)]
    if len(d_other) == 0:
        return 0.0
    return float(np.quantile(d_other, 1.0 - purity))


def budget_radius(dist: np.ndarray, k: int) -> tuple[float, int]:
    """delta = the median distance to the m-th nearest neighbour, m = N / (2 k) in [1, graph width]."""
    n, width = dist.shape
    m = int(min(max(round(n / (2 * max(k, 1))), 1), width))
    col = dist[:, m - 1]
    col = col[np.isfinite(col)]
    return (float(np.median(col)) if len(col) else 0.0), m


def _csr(keys: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(keys, kind="stable")
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys, minlength=n), out=ptr[1:])
    return ptr, values[order]


def _knn_graph(
    x: np.ndarray, n_neighbors: int, device: str, graph: tuple[np.ndarray, np.ndarray, str] | None
) -> tuple[np.ndarray, np.ndarray, str, int]:
    """The kNN graph ``(dist, idx, method)`` of the rows of ``x`` (``graph`` when given) and its k."""
    n = x.shape[0]
    kn = max(1, min(n_neighbors, n - 1)) if n > 1 else 1
    if graph is not None:
        dist, idx, method = graph
        kn = idx.shape[1]
    elif n > 1:
        dist, idx, method = auto_knn(x, kn, device)
    else:
        dist, idx, method = np.full((1, 1), np.inf), np.full((1, 1), -1), "exact"
    return dist, idx, method, kn


@dataclass(frozen=True)
class _Balls:
    """The delta-balls as a graph: ``src`` covers ``dst`` (every row covers itself), in CSR both ways."""

    src: np.ndarray
    dst: np.ndarray
    fwd_ptr: np.ndarray
    fwd_dst: np.ndarray
    rev_ptr: np.ndarray
    rev_src: np.ndarray

    @classmethod
    def build(cls, dist: np.ndarray, idx: np.ndarray, radius: float, n: int) -> _Balls:
        member = (idx >= 0) & (dist <= radius)
        src = np.concatenate([np.arange(n), np.repeat(np.arange(n), member.sum(1))])
        dst = np.concatenate([np.arange(n), idx[member]])
        fwd_ptr, fwd_dst = _csr(src, dst, n)
        rev_ptr, rev_src = _csr(dst, src, n)
        return cls(src, dst, fwd_ptr, fwd_dst, rev_ptr, rev_src)

    def greedy_cover(self, covered: np.ndarray, want: int) -> tuple[list[int], np.ndarray]:
        """Pick, up to ``want`` times, the row whose ball covers the most uncovered rows (``covered`` is
        updated); stops early when everything is covered. Returns the picks and which rows were picked."""
        n = len(covered)
        count = np.bincount(self.src, weights=(~covered[self.dst]).astype(np.float64), minlength=n).astype(np.int64)
        heap = list(zip((-count).tolist(), range(n), strict=True))
        heapq.heapify(heap)
        chosen = np.zeros(n, dtype=bool)
        picks: list[int] = []
        while len(picks) < want and heap:
            neg, i = heapq.heappop(heap)
            if chosen[i]:
                continue
            if -neg != count[i]:  # stale: counts only fall, so push back the current value
                heapq.heappush(heap, (-int(count[i]), i))
                continue
            if count[i] == 0:
                break  # everything is covered
            picks.append(i)
            chosen[i] = True
            ball = self.fwd_dst[self.fwd_ptr[i] : self.fwd_ptr[i + 1]]
            new = ball[~covered[ball]]
            covered[new] = True
            if len(new):
                lo, hi = self.rev_ptr[new], self.rev_ptr[new + 1]
                srcs = np.concatenate([self.rev_src[a:b] for a, b in zip(lo.tolist(), hi.tolist(), strict=True)])
                np.subtract.at(count, srcs, 1)
        return picks, chosen


def coverage_select(
    x: np.ndarray,
    k: int | None,
    radius: float | None = None,
    n_neighbors: int = DEFAULT_COVERAGE_NEIGHBORS,
    datapool: np.ndarray | None = None,
    device: str = "cpu",
    graph: tuple[np.ndarray, np.ndarray, str] | None = None,
) -> CoverageResult:
    """Greedy max coverage on the rows of ``x`` (N x D float32); ``k`` picks (None: until covered).

    ``graph``: a kNN graph ``(dist, idx, method)`` of x already built (default: ``auto_knn``)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    want = n if k is None else min(k, n)
    if n == 0 or want == 0:
        return CoverageResult([], "exhausted" if n == 0 else "n_samples")
    dist, idx, method, kn = _knn_graph(x, n_neighbors, device, graph)
    details: dict[str, Any] = {"knn": method, "num_nearest_neighbors": kn}
    if radius is None:
        radius, m = budget_radius(dist, want)
        details.update(radius_rule=f"median distance to the m-th nearest neighbour, m = N / (2 k) = {m}")
    else:
        details.update(radius_rule="configured")
    details["radius"] = float(radius)
    balls = _Balls.build(dist, idx, radius, n)
    details["mean_ball_size"] = float(len(balls.src) / n)
    covered = np.zeros(n, dtype=bool)
    pool = None if datapool is None or len(datapool) == 0 else np.ascontiguousarray(datapool, dtype=np.float32)
    if pool is not None:
        d2 = min_sqdist_to_centers(torch.from_numpy(x), torch.from_numpy(pool)).numpy()
        covered = d2 <= radius * radius
    picks, chosen = balls.greedy_cover(covered, want)
    details["covered_fraction"] = float(covered.mean())
    details["coverage_picks"] = len(picks)
    if len(picks) >= want:
        return CoverageResult(picks, "n_samples" if k is not None and want == k else "exhausted", details)
    if k is None:
        return CoverageResult(picks, "covered", details)
    rest = np.flatnonzero(~chosen)
    centres = x[picks] if pool is None else np.concatenate([pool, x[picks]])
    extra = kcenter_greedy(x[rest], want - len(picks), datapool=centres, device=device)
    picks += rest[extra.picks].tolist()
    details["kcenter_picks"] = len(extra.picks)
    return CoverageResult(picks, "n_samples" if want == k else "exhausted", details)
