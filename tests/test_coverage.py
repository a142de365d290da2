"""COVERAGE_EXT (ProbCover) selection, its kNN graphs, and the DIVERSITY-alone advice: fast, CPU only."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from lightly_protocol.models import SelectionConfigV4
from lightly_protocol.validation import selection_problems
from lightly_worker.selection import SelectionError, SelectionInputs, select
from lightly_worker.selection.advice import DIVERSITY_ALONE_MAX_BUDGET, strategy_warning
from lightly_worker.selection.coverage import budget_radius, coverage_select, purity_radius
from lightly_worker.selection.neighbours import approx_knn, exact_knn

EMB = {"type": "EMBEDDINGS"}
COV = {"type": "COVERAGE_EXT"}


def cfg(*strategies: dict[str, Any], n_samples: int = -1, extra: list[Any] | None = None) -> SelectionConfigV4:
    entries = [{"input": EMB, "strategy": s} for s in strategies] + (extra or [])
    return SelectionConfigV4.model_validate({"nSamples": n_samples, "strategies": entries})


def blobs() -> tuple[np.ndarray, list[range]]:
    """Three dense blobs of 60, 40 and 20 points and 5 far, isolated outliers (2-d)."""
    rng = np.random.default_rng(0)
    parts, groups, start = [], [], 0
    for centre, size in (((0, 0), 60), ((10, 0), 40), ((0, 10), 20)):
        parts.append(rng.normal(centre, 0.5, (size, 2)))
        groups.append(range(start, start + size))
        start += size
    parts.append(np.array([[40, 40], [-40, 40], [40, -40], [-40, -40], [60, 0]], dtype=float))
    groups.append(range(start, start + 5))
    return np.concatenate(parts).astype(np.float32), groups


def group_of(i: int, groups: list[range]) -> int:
    return next(g for g, r in enumerate(groups) if i in r)


def test_exact_knn_matches_brute_force() -> None:
    x = np.random.default_rng(1).standard_normal((300, 8)).astype(np.float32)
    dist, idx = exact_knn(x, 5, block=64)
    d = np.sqrt(((x[:, None].astype(np.float64) - x[None]) ** 2).sum(2))
    np.fill_diagonal(d, np.inf)
    want = np.argsort(d, axis=1, kind="stable")[:, :5]
    assert (np.sort(idx, 1) == np.sort(want, 1)).mean() > 0.999
    np.testing.assert_allclose(dist, np.take_along_axis(d, want, 1), rtol=1e-4, atol=1e-4)


def test_approx_knn_recall_on_clustered_data() -> None:
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((40, 32)) * 4
    x = (centres[rng.integers(0, 40, 6000)] + rng.standard_normal((6000, 32))).astype(np.float32)
    exact = exact_knn(x, 10)[1]
    approx = approx_knn(x, 10, n_lists=24, n_probe=4)[1]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall > 0.9, f"recall@10 = {recall:.3f}"
    assert (approx != np.arange(len(x))[:, None]).all()  # never its own neighbour


def test_coverage_picks_one_per_dense_region_before_outliers() -> None:
    x, groups = blobs()
    cov = coverage_select(x, 3, radius=2.5)
    assert sorted(group_of(i, groups) for i in cov.picks) == [0, 1, 2], cov.picks
    assert cov.stop_reason == "n_samples"
    assert cov.details["covered_fraction"] > 0.9
    # DIVERSITY alone takes the outliers first on the same data
    div = select(cfg({"type": "DIVERSITY"}, n_samples=3), SelectionInputs([str(i) for i in range(len(x))], x))
    assert all(group_of(i, groups) == 3 for i in div.selected), div.selected


def test_coverage_through_select_with_the_budget_radius() -> None:
    x, groups = blobs()
    inputs = SelectionInputs([str(i) for i in range(len(x))], x)
    res = select(cfg(COV, n_samples=3), inputs)
    assert sorted(group_of(i, groups) for i in res.selected) == [0, 1, 2]
    d = res.details["coverage"]
    assert d["knn"] == "exact" and d["radius"] > 0 and "nearest neighbour" in d["radius_rule"]


def test_budget_radius_grows_as_the_budget_shrinks() -> None:
    x, _ = blobs()
    dist, _ = exact_knn(x, 64)
    small, m_small = budget_radius(dist, 2)
    large, m_large = budget_radius(dist, 50)
    assert m_small == 31 and m_large == 1  # N / (2 k), clamped to the graph width
    assert small > large > 0


def test_purity_radius_stays_inside_pure_regions() -> None:
    x, groups = blobs()
    labels = np.array([group_of(i, groups) for i in range(len(x))])
    dist, idx = exact_knn(x, 20)
    r = purity_radius(dist, idx, labels)
    assert 0 < r < 10  # smaller than the gap between the blobs


def test_datapool_covers_its_region() -> None:
    x, groups = blobs()
    pool = x[list(groups[0])[:3]]  # earlier runs took blob 0
    cov = coverage_select(x, 2, radius=2.5, datapool=pool)
    assert sorted(group_of(i, groups) for i in cov.picks) == [1, 2]


def test_no_limit_stops_when_covered_and_a_large_budget_fills_up_with_kcenter() -> None:
    x, _ = blobs()
    covered = coverage_select(x, None, radius=2.5)
    assert covered.stop_reason == "covered"
    assert covered.details["covered_fraction"] == 1.0
    n_cover = len(covered.picks)
    full = coverage_select(x, n_cover + 4, radius=2.5)
    assert len(full.picks) == len(set(full.picks)) == n_cover + 4
    assert full.picks[:n_cover] == covered.picks
    assert full.details["kcenter_picks"] == 4


def test_threshold_filters_before_coverage() -> None:
    x, groups = blobs()
    n = len(x)
    inputs = SelectionInputs(
        [str(i) for i in range(n)], x, metadata={"keep": [0.0 if i in groups[0] else 1.0 for i in range(n)]}
    )
    thr = {
        "input": {"type": "METADATA", "key": "keep"},
        "strategy": {"type": "THRESHOLD", "threshold": 0.5, "operation": "BIGGER"},
    }
    res = select(cfg({**COV, "coverage_radius_ext": 2.5}, n_samples=2, extra=[thr]), inputs)
    assert sorted(group_of(i, groups) for i in res.selected) == [1, 2]
    assert sorted(res.removed_by_threshold) == list(groups[0])


def test_coverage_ext_config_problems() -> None:
    both = cfg(COV, {"type": "TYPICALITY"}, n_samples=5)
    assert any("COVERAGE_EXT" in p and "THRESHOLD filters only" in p for p in selection_problems(both))
    x, _ = blobs()
    with pytest.raises(SelectionError, match="THRESHOLD filters only"):
        select(both, SelectionInputs([str(i) for i in range(len(x))], x))
    wrong = cfg({"type": "DIVERSITY", "coverage_radius_ext": 0.5}, n_samples=5)
    assert any("belongs to strategy COVERAGE_EXT" in p for p in selection_problems(wrong))
    with pytest.raises(ValueError, match="greater than 0"):
        cfg({**COV, "coverage_radius_ext": 0.0}, n_samples=5)


def test_diversity_alone_warning_follows_the_benchmark() -> None:
    div = {"type": "DIVERSITY"}
    msg = strategy_warning(cfg(div, n_samples=20), 1000)
    assert msg is not None and "TYPICALITY" in msg and "COVERAGE_EXT" in msg and "20 of 1000 samples" in msg
    # inside the measured range: up to 200 samples, or up to 17 % of the pool
    assert strategy_warning(cfg(div, n_samples=1500), 10_000) is not None
    assert strategy_warning(cfg(div, n_samples=DIVERSITY_ALONE_MAX_BUDGET + 1), 1000) is None
    assert strategy_warning(cfg(div, n_samples=3000), 10_000) is None
    assert strategy_warning(cfg(div, {"type": "TYPICALITY"}, n_samples=20), 1000) is None
    assert strategy_warning(cfg(COV, n_samples=20), 1000) is None
    assert strategy_warning(cfg({**div, "strength": -1.0}, n_samples=20), 1000) is None
    assert strategy_warning(cfg(div, n_samples=20), 20) is None  # everything is selected anyway


def test_large_inputs_take_the_ivf_graph_through_select(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightly_worker.selection import neighbours

    monkeypatch.setitem(neighbours.EXACT_WORK_LIMIT, "cpu", 1.0)  # every input counts as large
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((8, 16)) * 5
    x = (centres[np.arange(4000) % 8] + rng.standard_normal((4000, 16))).astype(np.float32)
    res = select(cfg(COV, n_samples=8), SelectionInputs([str(i) for i in range(len(x))], x))
    assert res.details["coverage"]["knn"] == "ivf"
    assert sorted(int(i) % 8 for i in res.selected) == list(range(8)), res.selected  # one per cluster
