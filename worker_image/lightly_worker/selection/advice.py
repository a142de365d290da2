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

__all__ = ["DIVERSITY_ALONE_MAX_BUDGET", "RECOMMENDED_STRATEGIES", "recommended_config_text", "strategy_warning"]

#: DIVERSITY alone is warned about up to this many samples: the largest budget at which its mean test
#: accuracy was below random's in a case of the benchmark (docs/benchmarks.md), rounded up
DIVERSITY_ALONE_MAX_BUDGET = 200

#: what the worker recommends for picking training data (each on input EMBEDDINGS): the best of the
#: strategies that Lightly's own client accepts, in the benchmark; the extension COVERAGE_EXT is the other choice
RECOMMENDED_STRATEGIES: list[dict[str, Any]] = [{"type": "DIVERSITY"}, {"type": "TYPICALITY"}]


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
    if budget <= 0 or budget > DIVERSITY_ALONE_MAX_BUDGET or budget >= n_candidates:
        return None
    return (
        f"DIVERSITY alone picks outliers first: at a budget of {budget} samples the label-efficiency "
        f"benchmark measured it below a random selection of the same size (docs/benchmarks.md); for "
        f"training data use {recommended_config_text()}"
    )
