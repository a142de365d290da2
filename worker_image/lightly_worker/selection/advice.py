"""Advice on a selection config from the label-efficiency benchmark (bench/label_efficiency.py).

DIVERSITY alone (exact greedy k-center) picks the samples farthest from everything first: outliers
and the edges of the data. At small labelling budgets that trains a worse model than a random
selection of the same size (docs/benchmarks.md, "Label efficiency"); DIVERSITY combined with
TYPICALITY, or COVERAGE_EXT, beat random at every budget measured. The worker keeps DIVERSITY's
semantics and only says so in its log.
"""

from __future__ import annotations

import json
from typing import Any

from lightly_protocol.models import SelectionConfigV4

from .engine import selection_limit

__all__ = [
    "DIVERSITY_ALONE_MAX_BUDGET",
    "DIVERSITY_ALONE_MAX_FRACTION",
    "RECOMMENDED_STRATEGIES",
    "recommended_config_text",
    "strategy_warning",
]

#: DIVERSITY alone is warned about within the budgets the benchmark measured: 10-200 samples (1-20 per
#: class), 0.25-17 % of the pool. With the worker's default embedder it was below random at every one of
#: them, on both data sets (docs/benchmarks.md, "Label efficiency"); beyond them nothing was measured
DIVERSITY_ALONE_MAX_BUDGET = 200
DIVERSITY_ALONE_MAX_FRACTION = 0.17

#: what the worker recommends for picking training data (each on input EMBEDDINGS): the best strategy of the
#: benchmark (mean +12.8 points over random, never below it), and one that Lightly's own client accepts;
#: the extension COVERAGE_EXT came second (+11.9)
RECOMMENDED_STRATEGIES: list[dict[str, Any]] = [
    {"type": "DIVERSITY"},
    {"type": "TYPICALITY", "num_nearest_neighbors": 50},
]


def recommended_config_text() -> str:
    entries = ", ".join(json.dumps({"input": {"type": "EMBEDDINGS"}, "strategy": s}) for s in RECOMMENDED_STRATEGIES)
    return f"strategies [{entries}] (or the extension COVERAGE_EXT alone, in local mode or over the REST API)"


def strategy_warning(config: SelectionConfigV4, n_candidates: int) -> str | None:
    """A warning for the log when ``config`` is DIVERSITY alone at a budget where the benchmark measured
    it below random selection; None otherwise. THRESHOLD filters do not count as strategies here."""
    scoring = [e.strategy for e in config.strategies if e.strategy.type != "THRESHOLD"]
    if len(scoring) != 1 or scoring[0].type != "DIVERSITY":
        return None
    if scoring[0].strength is not None and scoring[0].strength <= 0:
        return None
    limit = selection_limit(config, n_candidates)
    budget = n_candidates if limit is None else min(limit, n_candidates)
    if budget <= 0 or budget >= n_candidates:
        return None
    if budget > DIVERSITY_ALONE_MAX_BUDGET and budget > DIVERSITY_ALONE_MAX_FRACTION * n_candidates:
        return None
    return (
        f"DIVERSITY alone picks outliers first: at budgets like this one ({budget} of {n_candidates} samples) "
        "the label-efficiency benchmark measured it below a random selection of the same size "
        f"(docs/benchmarks.md); to pick training data use {recommended_config_text()}"
    )
