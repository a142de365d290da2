"""The recommended selection labels fewer images for the same accuracy: a small, real check on digits.

scikit-learn's digits (shipped in the package, no download): pool 1,200 / test 597 (stratified split 0),
PCA-16 features fit on the pool, the benchmark's linear probe. At 1-3 labels per class the worker's
recommended strategies (``advice.RECOMMENDED_STRATEGIES``) and COVERAGE_EXT must beat random selection
(mean of 10 draws) by a clear margin; DIVERSITY alone is what the worker warns about. The full
benchmark is bench/label_efficiency.py (docs/benchmarks.md).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from lightly_protocol.models import SelectionConfigV4
from lightly_worker.selection import SelectionInputs, select
from lightly_worker.selection.advice import RECOMMENDED_STRATEGIES, strategy_warning

try:
    import sklearn  # noqa: F401  (the data set and the probe)
except ImportError:  # pragma: no cover - the test extra installs it
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("scikit-learn is in the test extra (pip install -e '.[test]')", allow_module_level=True)

BUDGETS = (10, 20, 30)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xp, xt, yp, yt = train_test_split(x, y, test_size=597, random_state=0, stratify=y)
    pca = PCA(16, random_state=0).fit(xp)
    fp, ft = pca.transform(xp).astype(np.float32), pca.transform(xt).astype(np.float32)
    mean, sd = fp.mean(0), fp.std(0) + 1e-6
    return fp, yp, (ft - mean) / sd, yt


def accuracy(data: tuple[np.ndarray, ...], sel: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    fp, yp, zt, yt = data
    zp = (fp - fp.mean(0)) / (fp.std(0) + 1e-6)
    with warnings.catch_warnings(), threadpool_limits(1):  # a BLAS pool per fit is 10-50x slower on 2 vCPUs
        warnings.simplefilter("ignore")
        return float(LogisticRegression(max_iter=3000).fit(zp[sel], yp[sel]).score(zt, yt))


def selected(data: tuple[np.ndarray, ...], strategies: list[dict], n: int) -> np.ndarray:
    cfg = SelectionConfigV4.model_validate(
        {"nSamples": n, "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": s} for s in strategies]}
    )
    return np.asarray(select(cfg, SelectionInputs([str(i) for i in range(len(data[0]))], data[0])).selected)


@pytest.mark.parametrize("n", BUDGETS)
def test_recommended_and_coverage_beat_random_at_small_budgets(digits: tuple[np.ndarray, ...], n: int) -> None:
    rand = [accuracy(digits, np.random.default_rng(s).choice(len(digits[0]), n, replace=False)) for s in range(10)]
    recommended = accuracy(digits, selected(digits, RECOMMENDED_STRATEGIES, n))
    coverage = accuracy(digits, selected(digits, [{"type": "COVERAGE_EXT"}], n))
    diversity = accuracy(digits, selected(digits, [{"type": "DIVERSITY"}], n))
    seen = f"n={n}: random {np.mean(rand):.3f}±{np.std(rand):.3f}, recommended {recommended:.3f}, "
    seen += f"COVERAGE_EXT {coverage:.3f}, DIVERSITY {diversity:.3f}"
    assert recommended > np.mean(rand) + 0.05, seen
    assert coverage > np.mean(rand) + 0.05, seen
    assert recommended > diversity, seen


def test_the_warning_names_the_recommended_strategies() -> None:
    cfg = SelectionConfigV4.model_validate(
        {"nSamples": 20, "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]}
    )
    message = strategy_warning(cfg, 1000) or ""
    assert all(s["type"] in message for s in RECOMMENDED_STRATEGIES), message
