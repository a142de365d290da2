"""The greedy selection engine: Lightly's ``SelectionConfigV4`` semantics on local arrays.

Order of work (Lightly's): THRESHOLD strategies filter the candidates first; the other strategies
then pick one sample at a time, each pick maximising ``prod_s objective_s ** strength_s``
(computed as ``sum_s strength_s * log(max(objective_s, 1e-6))``; strength defaults to 1.0; 0 makes a
strategy neutral; a negative strength inverts its preference). Ties go to the lowest index.

Objectives, all in (0, 1] (floored at ``EPS`` = 1e-6):

* DIVERSITY (EMBEDDINGS): Euclidean distance to the closest selected sample (datapool samples
  count as selected), divided by its maximum over the remaining candidates; recomputed after each
  pick. Before any centre exists (no datapool): distance to the candidates' mean (so the first pick
  is the sample farthest from the mean). ``stopping_condition_minimum_distance``: stop when no
  remaining candidate is farther than that from the selection.
* WEIGHTS (SCORES, numeric METADATA, RANDOM): ``(w - min) / (max - min)`` over the candidates
  (all 1 when constant); RANDOM draws uniform weights in (0, 1] from ``random_seed`` (default 0).
  ``stopping_condition_max_sum``: stop once the sum of the raw weights of the selection reaches it.
* BALANCE (PREDICTIONS ``CLASS_DISTRIBUTION``/``CATEGORY_COUNT``, categorical METADATA): each
  candidate carries a class-mass vector (one-hot for metadata, probabilities or counts for
  predictions); the objective is how close the selection's class distribution gets to the target
  when the candidate is added (``-||p' - t||^2``, min-max normalised over the remaining candidates),
  recomputed after each pick. ``distribution`` TARGET (``target`` dict; the remainder goes to one
  bucket of all other classes), UNIFORM (equal over the classes present among the candidates) or
  INPUT (the candidates' own distribution). Datapool samples do not count (their classes are unknown).
* SIMILARITY (EMBEDDINGS with ``tag_name``): ``(1 + max cosine similarity to the query
  embeddings) / 2``; constant.
* TYPICALITY (EMBEDDINGS): ``1 / mean distance to the k nearest candidates``
  (``num_nearest_neighbors``, default 20), divided by its maximum; constant.
  ``stopping_condition_minimum_typicality``: stop when no remaining candidate has a raw typicality
  of at least that value.

Number of samples: ``n_samples`` (-1 = no limit) and/or ``proportion_samples`` (of the N input
candidates, before thresholds, rounded half up); with both the smaller wins. Stop reasons:
``n_samples``, ``minimum_distance``, ``max_sum``, ``minimum_typicality``, ``exhausted`` (no
candidates left).

COVERAGE_EXT (EMBEDDINGS; an extension of this worker, not Lightly's): greedy maximum coverage of
delta-balls (ProbCover), see :mod:`.coverage`; combines with THRESHOLD filters only. Stop reasons add
``covered`` (no sample limit and every candidate covered).

Fast path: a single DIVERSITY strategy with positive strength (after any thresholds) runs the exact
greedy k-center kernel of :mod:`.kcenter` (numba on CPU, torch on CUDA without a host sync per pick).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from lightly_protocol.models import SelectionConfigV4, SelectionEntry, SelectionInput, SelectionStrategy
from lightly_protocol.validation import selection_problems

from .coverage import DEFAULT_COVERAGE_NEIGHBORS, coverage_select
from .kcenter import KCenterState, kcenter_greedy
from .types import PredictionTask, SelectionError, SelectionInputs, SelectionResult

__all__ = ["EPS", "select", "selection_limit"]

EPS = 1e-6
DEFAULT_NUM_NEAREST_NEIGHBORS = 20
_OPS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "SMALLER": lambda v, t: v < t,
    "SMALLER_EQUAL": lambda v, t: v <= t,
    "BIGGER": lambda v, t: v > t,
    "BIGGER_EQUAL": lambda v, t: v >= t,
}


def _where(i: int) -> str:
    return f"selection.strategies[{i}]"


def _strength(s: SelectionStrategy) -> float:
    return 1.0 if s.strength is None else float(s.strength)


def selection_limit(config: SelectionConfigV4, n: int) -> int | None:
    """How many samples to pick at most (None = no limit)."""
    limits: list[int] = []
    if config.n_samples is not None and config.n_samples >= 0:
        limits.append(int(config.n_samples))
    if config.proportion_samples is not None:
        limits.append(math.floor(float(config.proportion_samples) * n + 0.5))
    return min(limits) if limits else None


# ---------------------------------------------------------------- inputs


def _fmt_missing(names: list[str], idx: np.ndarray) -> str:
    shown = ", ".join(repr(names[i]) for i in idx[:3])
    return f"{len(idx)} sample(s) (e.g. {shown})"


def _metadata(inp: SelectionInput, inputs: SelectionInputs, where: str) -> list[Any]:
    key = inp.key or ""
    if key not in inputs.metadata:
        hint = (
            "it is computed by the worker and was not provided"
            if key.startswith("lightly.")
            else "add it to .lightly/metadata/schema.json and the per-file metadata JSON files"
        )
        raise SelectionError(f"{where}: METADATA key {key!r} is not available ({hint})")
    values = list(inputs.metadata[key])
    if len(values) != len(inputs.filenames):
        raise SelectionError(
            f"{where}: METADATA key {key!r} has {len(values)} values for {len(inputs.filenames)} samples"
        )
    missing = np.array([i for i, v in enumerate(values) if v is None or (isinstance(v, float) and math.isnan(v))])
    if len(missing):
        raise SelectionError(
            f"{where}: METADATA key {key!r} is missing for {_fmt_missing(inputs.filenames, missing)}; "
            "give every sample a value or a defaultValue in .lightly/metadata/schema.json"
        )
    return values


def _prediction_task(inp: SelectionInput, inputs: SelectionInputs, where: str) -> PredictionTask:
    task = inp.task or ""
    if task not in inputs.predictions:
        raise SelectionError(
            f"{where}: {inp.type} input needs predictions of task {task!r}, which were not found "
            f"(list {task!r} in .lightly/predictions/tasks.json and add .lightly/predictions/{task}/); "
            f"available tasks: {sorted(inputs.predictions)}"
        )
    pt = inputs.predictions[task]
    n = len(inputs.filenames)
    if np.asarray(pt.probabilities).shape[0] != n:
        raise SelectionError(f"{where}: task {task!r} has {np.asarray(pt.probabilities).shape[0]} rows for {n} samples")
    return pt


def _scalar(entry: SelectionEntry, inputs: SelectionInputs, where: str) -> np.ndarray:
    inp = entry.input
    n = len(inputs.filenames)
    if inp.type == "SCORES":
        pt = _prediction_task(inp, inputs, where)
        try:
            values = pt.score(inp.score or "")
        except SelectionError as exc:
            raise SelectionError(f"{where}: task {inp.task!r}: {exc}") from None
    elif inp.type == "METADATA":
        raw = _metadata(inp, inputs, where)
        bad = [v for v in raw if isinstance(v, str) or not isinstance(v, int | float | bool | np.number)]
        if bad:
            raise SelectionError(
                f"{where}: METADATA key {inp.key!r} is categorical (e.g. {bad[0]!r}); "
                f"strategy {entry.strategy.type} needs a numeric key"
            )
        values = np.asarray(raw, dtype=np.float64)
    elif inp.type == "RANDOM":
        rng = np.random.default_rng(0 if inp.random_seed is None else inp.random_seed)
        values = 1.0 - rng.random(n)  # uniform in (0, 1]
    else:
        raise SelectionError(f"{where}: input {inp.type} is not a scalar input")
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.shape[0] != n:
        raise SelectionError(f"{where}: input has {values.shape[0]} values for {n} samples")
    nonfinite = np.flatnonzero(~np.isfinite(values))
    if len(nonfinite):
        raise SelectionError(f"{where}: input values are not finite for {_fmt_missing(inputs.filenames, nonfinite)}")
    return values


def _label(v: Any) -> str:
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _class_mass(entry: SelectionEntry, inputs: SelectionInputs, where: str) -> tuple[list[str], np.ndarray]:
    inp = entry.input
    if inp.type == "METADATA":
        labels = [_label(v) for v in _metadata(inp, inputs, where)]
        names = sorted(set(labels))
        pos = {c: j for j, c in enumerate(names)}
        mass = np.zeros((len(labels), len(names)))
        mass[np.arange(len(labels)), [pos[c] for c in labels]] = 1.0
        return names, mass
    if inp.type == "PREDICTIONS":
        pt = _prediction_task(inp, inputs, where)
        mass = pt.counts() if inp.name == "CATEGORY_COUNT" else np.asarray(pt.probabilities, dtype=np.float64)
        if mass.ndim != 2 or mass.shape[1] != len(pt.categories):
            raise SelectionError(
                f"{where}: task {inp.task!r}: class matrix does not match its {len(pt.categories)} categories"
            )
        if not np.all(np.isfinite(mass)) or (mass < 0).any():
            raise SelectionError(f"{where}: task {inp.task!r}: class values must be finite and >= 0")
        return list(pt.categories), mass
    raise SelectionError(f"{where}: BALANCE needs PREDICTIONS or categorical METADATA, not {inp.type}")


def _embeddings(inputs: SelectionInputs, where: str, entry: SelectionEntry) -> np.ndarray:
    if entry.input.task:
        raise SelectionError(f"{where}: EMBEDDINGS of object crops (input 'task') are not supported")
    if inputs.embeddings is None:
        raise SelectionError(f"{where}: strategy {entry.strategy.type} needs embeddings, but none were computed")
    x = np.asarray(inputs.embeddings)
    n = len(inputs.filenames)
    if x.ndim != 2 or x.shape[0] != n:
        raise SelectionError(f"{where}: embeddings have shape {x.shape}; expected ({n}, D)")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.isfinite(x).all(1))
        raise SelectionError(f"{where}: embeddings are not finite for {_fmt_missing(inputs.filenames, bad)}")
    return x


def _datapool(inputs: SelectionInputs, d: int) -> np.ndarray | None:
    if inputs.datapool_embeddings is None or len(inputs.datapool_embeddings) == 0:
        return None
    pool = np.ascontiguousarray(inputs.datapool_embeddings, dtype=np.float32)
    if pool.ndim != 2 or pool.shape[1] != d:
        raise SelectionError(
            f"datapool embeddings have shape {pool.shape} but the new embeddings have {d} dimensions; "
            "the datapool must come from the same embedding model"
        )
    if not np.all(np.isfinite(pool)):
        raise SelectionError("datapool embeddings contain non-finite values")
    return pool


# ---------------------------------------------------------------- objectives


def _minmax(v: np.ndarray) -> np.ndarray:
    lo, hi = float(v.min()), float(v.max())
    if hi - lo <= 0:
        return np.ones_like(v, dtype=np.float64)
    return (v - lo) / (hi - lo)


def _log_obj(obj: np.ndarray, strength: float) -> np.ndarray:
    if strength == 0:
        return np.zeros(obj.shape, dtype=np.float64)
    return strength * np.log(np.maximum(obj, EPS))


def _similarity(x: np.ndarray, q: np.ndarray, device: str) -> np.ndarray:
    xt = torch.nn.functional.normalize(torch.from_numpy(x).to(device), dim=1)
    qt = torch.nn.functional.normalize(torch.as_tensor(q, dtype=torch.float32).to(device), dim=1)
    out = torch.empty(xt.shape[0], dtype=torch.float32, device=device)
    for rs in range(0, xt.shape[0], 8192):
        out[rs : rs + 8192] = (xt[rs : rs + 8192] @ qt.t()).max(1).values
    return out.double().cpu().numpy()


def typicality(x: np.ndarray, k: int, device: str = "cpu") -> np.ndarray:
    """``1 / mean Euclidean distance to the k nearest other rows`` (blocked exact kNN)."""
    n = x.shape[0]
    if n <= 1:
        return np.ones(n)
    k = min(k, n - 1)
    xt = torch.from_numpy(x).to(device)
    sq = (xt * xt).sum(1)
    out = torch.empty(n, dtype=torch.float64, device=device)
    block = 4096
    for rs in range(0, n, block):
        xb = xt[rs : rs + block]
        d2 = torch.addmm(sq.unsqueeze(0), xb, xt.t(), alpha=-2.0).add_(sq[rs : rs + block].unsqueeze(1))
        rows = torch.arange(xb.shape[0], device=device)
        d2[rows, rows + rs] = math.inf  # exclude self
        near = torch.topk(d2, k, dim=1, largest=False).values.clamp_min_(0.0).sqrt_()
        out[rs : rs + block] = 1.0 / (near.double().mean(1) + 1e-12)
    return out.cpu().numpy()


class _Balance:
    def __init__(self, entry: SelectionEntry, names: list[str], mass: np.ndarray, where: str) -> None:
        strat = entry.strategy
        self.strength = _strength(strat)
        distribution = strat.distribution or "TARGET"
        present = mass.sum(0) > 0
        if distribution == "UNIFORM":
            cols = np.flatnonzero(present)
            if len(cols) == 0:
                raise SelectionError(f"{where}: BALANCE found no classes among the candidates")
            self.mass = mass[:, cols]
            self.target = np.full(len(cols), 1.0 / len(cols))
        elif distribution == "INPUT":
            total = mass.sum(0)
            if total.sum() <= 0:
                raise SelectionError(f"{where}: BALANCE found no classes among the candidates")
            self.mass = mass
            self.target = total / total.sum()
        else:
            target = strat.target or {}
            unknown = [c for c in target if c not in names]
            if unknown:
                raise SelectionError(
                    f"{where}: BALANCE target classes {unknown} do not occur in the input; known classes: {names}"
                )
            pos = [names.index(c) for c in target]
            rest = [j for j in range(len(names)) if j not in pos]
            t = np.array([float(target[c]) for c in target])
            cols = [mass[:, j] for j in pos]
            remainder = max(0.0, 1.0 - float(t.sum()))
            if rest:
                cols.append(mass[:, rest].sum(1))
                t = np.append(t, remainder)
            elif t.sum() > 0:
                t = t / t.sum()  # every class has a target: nothing can take the remainder
            self.mass = np.stack(cols, 1)
            self.target = t
        self.size = self.mass.sum(1)
        self.counts = np.zeros(self.mass.shape[1])
        self.label = ""
        self.last_obj = np.ones(len(self.size))

    def log_objective(self, remaining: np.ndarray) -> np.ndarray:
        m = self.counts.sum()
        denom = m + self.size
        with np.errstate(invalid="ignore", divide="ignore"):
            p_new = (self.counts[None, :] + self.mass) / denom[:, None]
        p_new[denom <= 0] = 0.0
        dist = ((p_new - self.target[None, :]) ** 2).sum(1)
        obj = np.ones(len(dist))
        r = dist[remaining]
        lo, hi = float(r.min()), float(r.max())
        if hi > lo:
            obj = (hi - dist) / (hi - lo)
        self.last_obj = obj
        return _log_obj(obj, self.strength)

    def add(self, idx: int) -> None:
        self.counts += self.mass[idx]


# ---------------------------------------------------------------- select


def select(config: SelectionConfigV4, inputs: SelectionInputs, device: str = "cpu") -> SelectionResult:
    """Run the selection ``config`` on ``inputs``; see the module docstring for the semantics."""
    problems = selection_problems(config)
    if problems:
        raise SelectionError("; ".join(problems))
    unsupported = [_where(i) for i, e in enumerate(config.strategies) if e.strategy.target_range is not None]
    if unsupported:
        raise SelectionError(
            f"{', '.join(unsupported)}: 'target_range' is not supported; use stopping_condition_max_sum"
        )
    n = len(inputs.filenames)
    limit = selection_limit(config, n)

    # 1. thresholds
    keep = np.ones(n, dtype=bool)
    for i, entry in enumerate(config.strategies):
        if entry.strategy.type == "THRESHOLD":
            values = _scalar(entry, inputs, _where(i))
            keep &= _OPS[entry.strategy.operation or ""](values, float(entry.strategy.threshold or 0.0))
    cand = np.flatnonzero(keep)
    removed = np.flatnonzero(~keep).tolist()
    scoring = [(i, e) for i, e in enumerate(config.strategies) if e.strategy.type != "THRESHOLD"]
    k = len(cand) if limit is None else min(limit, len(cand))

    # 2. fast path: one DIVERSITY strategy
    if len(scoring) == 1 and scoring[0][1].strategy.type == "DIVERSITY" and _strength(scoring[0][1].strategy) > 0:
        i, entry = scoring[0]
        x = _embeddings(inputs, _where(i), entry)
        pool = _datapool(inputs, x.shape[1])
        if len(cand) == 0 or k == 0:
            return SelectionResult([], removed, "exhausted" if len(cand) == 0 else "n_samples", [])
        res = kcenter_greedy(
            x[cand] if len(cand) < n else x,
            k,
            datapool=pool,
            min_distance=entry.strategy.stopping_condition_minimum_distance,
            device=device,
        )
        reason = res.stop_reason
        if reason == "exhausted" and limit is not None and k == limit:
            reason = "n_samples"
        return SelectionResult(cand[res.picks].tolist(), removed, reason, res.distances)

    # 3. COVERAGE_EXT (alone; validation refuses it with other scoring strategies)
    if len(scoring) == 1 and scoring[0][1].strategy.type == "COVERAGE_EXT":
        i, entry = scoring[0]
        x = _embeddings(inputs, _where(i), entry)
        pool = _datapool(inputs, x.shape[1])
        if len(cand) == 0 or k == 0:
            return SelectionResult([], removed, "exhausted" if len(cand) == 0 else "n_samples", [])
        cov = coverage_select(
            x[cand] if len(cand) < n else x,
            None if limit is None else k,
            radius=entry.strategy.coverage_radius_ext,
            n_neighbors=entry.strategy.num_nearest_neighbors or DEFAULT_COVERAGE_NEIGHBORS,
            datapool=pool,
            device=device,
        )
        reason = cov.stop_reason
        if reason == "exhausted" and limit is not None and k == limit:
            reason = "n_samples"
        return SelectionResult(cand[cov.picks].tolist(), removed, reason, [], {"coverage": cov.details})

    # 4. general greedy loop
    return _general(config, inputs, scoring, cand, removed, k, limit, device)


def _general(
    config: SelectionConfigV4,
    inputs: SelectionInputs,
    scoring: list[tuple[int, SelectionEntry]],
    cand: np.ndarray,
    removed: list[int],
    k: int,
    limit: int | None,
    device: str,
) -> SelectionResult:
    m = len(cand)
    const = np.zeros(m)
    diversity: KCenterState | None = None
    div_strength = 0.0
    min_distance: float | None = None
    balances: list[_Balance] = []
    max_sums: list[tuple[np.ndarray, float]] = []
    min_typ: list[tuple[np.ndarray, float]] = []
    x: np.ndarray | None = None
    objectives: list[tuple[str, float, np.ndarray]] = []  # constant objectives, for the report's contributions

    for i, entry in scoring:
        where, strat = _where(i), entry.strategy
        s = _strength(strat)
        if strat.type == "WEIGHTS":
            raw = _scalar(entry, inputs, where)[cand]
            obj = _minmax(raw) if m else raw
            const += _log_obj(obj, s)
            objectives.append((f"WEIGHTS ({where})", s, obj))
            if strat.stopping_condition_max_sum is not None:
                max_sums.append((raw, float(strat.stopping_condition_max_sum)))
        elif strat.type == "BALANCE":
            names, mass = _class_mass(entry, inputs, where)
            balances.append(_Balance(entry, names, mass[cand], where))
            balances[-1].label = f"BALANCE ({where})"
        elif strat.type in ("DIVERSITY", "SIMILARITY", "TYPICALITY"):
            if x is None:
                x = _embeddings(inputs, where, entry)[cand]
            if strat.type == "DIVERSITY":
                if diversity is None:
                    diversity = KCenterState(x, _datapool(inputs, x.shape[1]), device)
                div_strength += s
                if strat.stopping_condition_minimum_distance is not None:
                    md = float(strat.stopping_condition_minimum_distance)
                    min_distance = md if min_distance is None else max(min_distance, md)
            elif strat.type == "SIMILARITY":
                tag = entry.input.tag_name or ""
                if tag not in inputs.query_embeddings:
                    raise SelectionError(f"{where}: SIMILARITY needs the embeddings of query tag {tag!r}; none given")
                q = np.asarray(inputs.query_embeddings[tag], dtype=np.float32)
                if q.ndim != 2 or q.shape[1] != x.shape[1] or q.shape[0] == 0:
                    raise SelectionError(
                        f"{where}: query tag {tag!r} embeddings have shape {q.shape}; need (Q>0, {x.shape[1]})"
                    )
                if m:
                    obj = (1.0 + _similarity(x, q, device)) / 2.0
                    const += _log_obj(obj, s)
                    objectives.append((f"SIMILARITY ({where})", s, obj))
            else:
                nn = strat.num_nearest_neighbors or DEFAULT_NUM_NEAREST_NEIGHBORS
                typ = typicality(x, nn, device) if m else np.zeros(0)
                if m:
                    const += _log_obj(typ / typ.max(), s)
                    objectives.append((f"TYPICALITY ({where})", s, typ / typ.max()))
                if strat.stopping_condition_minimum_typicality is not None:
                    min_typ.append((typ, float(strat.stopping_condition_minimum_typicality)))
        else:  # COVERAGE_EXT with other strategies is refused by selection_problems
            raise SelectionError(f"{where}: unsupported strategy {strat.type}")

    remaining = np.ones(m, dtype=bool)
    picks: list[int] = []
    dists: list[float] = []
    sums = [0.0] * len(max_sums)
    reason = "exhausted"
    seen: dict[str, list[tuple[float, float]]] = {}  # strategy -> (objective at the pick, mean over the candidates)
    while True:
        if len(picks) >= k:
            reason = "n_samples" if limit is not None and len(picks) >= limit else "exhausted"
            break
        if not remaining.any():
            break
        if any(not (typ[remaining] >= thr).any() for typ, thr in min_typ):
            reason = "minimum_typicality"
            break
        score = const.copy()
        d: np.ndarray | None = None
        if diversity is not None:
            if diversity.has_centres:
                d = np.sqrt(np.maximum(diversity.min_d2.astype(np.float64), 0.0))
                if min_distance is not None and not (d[remaining] > min_distance).any():
                    reason = "minimum_distance"
                    break
                base = d
            else:
                base = diversity.distance_to_mean()
            top = float(base[remaining].max())
            div_obj = base / top if top > 0 else np.ones(m)
            score += _log_obj(div_obj, div_strength)
        for bal in balances:
            score += bal.log_objective(remaining)
        score[~remaining] = -np.inf
        idx = int(np.argmax(score))
        for label, obj in _step_objectives(objectives, balances, div_obj if diversity is not None else None):
            seen.setdefault(label, []).append((float(obj[idx]), float(obj[remaining].mean())))
        picks.append(idx)
        remaining[idx] = False
        if diversity is not None:
            dists.append(float(d[idx]) if d is not None else math.inf)
            diversity.add(idx)
        for bal in balances:
            bal.add(idx)
        hit = False
        for j, (raw, cap) in enumerate(max_sums):
            sums[j] += float(raw[idx])
            hit |= sums[j] >= cap
        if hit:
            reason = "max_sum"
            break
    strengths = {label: s for label, s, _ in objectives}
    strengths.update({b.label: b.strength for b in balances})
    contributions = [
        {
            "strategy": label,
            "strength": strengths.get(label, div_strength),
            "objective_at_picks": float(np.mean([a for a, _ in v])),
            "objective_of_candidates": float(np.mean([c for _, c in v])),
        }
        for label, v in seen.items()
    ]
    return SelectionResult(
        cand[np.asarray(picks, dtype=np.int64)].tolist(), removed, reason, dists, {"contributions": contributions}
    )


def _step_objectives(
    objectives: list[tuple[str, float, np.ndarray]], balances: list[_Balance], div_obj: np.ndarray | None
) -> list[tuple[str, np.ndarray]]:
    """Each strategy's objective (in (0, 1]) over the candidates at this step."""
    out = [(label, obj) for label, _, obj in objectives]
    if div_obj is not None:
        out.append(("DIVERSITY", div_obj))
    out.extend((b.label, b.last_obj) for b in balances)
    return out
