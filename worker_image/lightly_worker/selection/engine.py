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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
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
    names, mass = _all_class_mass(entry, inputs, where)
    return _only_categories(entry, names, mass, where)


def _only_categories(
    entry: SelectionEntry, names: list[str], mass: np.ndarray, where: str
) -> tuple[list[str], np.ndarray]:
    """The input's ``categories`` (Lightly's restriction of an input to some classes): only their columns,
    in the order given; a category a prediction task does not have is an error naming the task's."""
    inp = entry.input
    if not inp.categories:
        return names, mass
    pos = {c: j for j, c in enumerate(names)}
    unknown = [c for c in inp.categories if c not in pos]
    if unknown and inp.type == "PREDICTIONS":
        raise SelectionError(f"{where}: categories {unknown} are not categories of task {inp.task!r} (it has {names})")
    keep = [c for c in dict.fromkeys(inp.categories) if c in pos]
    if not keep:
        raise SelectionError(f"{where}: none of categories {inp.categories} occurs in METADATA key {inp.key!r}")
    return keep, mass[:, [pos[c] for c in keep]]


def _all_class_mass(entry: SelectionEntry, inputs: SelectionInputs, where: str) -> tuple[list[str], np.ndarray]:
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
    if (entry.input.task or None) != inputs.object_task:
        want = f"objects of task {entry.input.task!r}" if entry.input.task else "images"
        have = f"objects of task {inputs.object_task!r}" if inputs.object_task else "images"
        raise SelectionError(
            f"{where}: EMBEDDINGS of {want}, but the candidates are {have}; in object-level selection every "
            "EMBEDDINGS input names the same prediction task"
        )
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
    scaled: npt.NDArray[np.float64] = strength * np.log(np.maximum(obj, EPS))
    return scaled


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
            parts = [mass[:, j] for j in pos]
            remainder = max(0.0, 1.0 - float(t.sum()))
            if rest:
                parts.append(mass[:, rest].sum(1))
                t = np.append(t, remainder)
            elif t.sum() > 0:
                t = t / t.sum()  # every class has a target: nothing can take the remainder
            self.mass = np.stack(parts, 1)
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


@dataclass(frozen=True)
class _Candidates:
    """What every path of ``select`` shares once the thresholds ran: the candidates left (indices
    into ``inputs.filenames``), the ones the thresholds removed, how many to pick (``k``) and the
    configured limit (None: no limit)."""

    inputs: SelectionInputs
    cand: np.ndarray
    removed: list[int]
    k: int
    limit: int | None
    device: str

    @property
    def n(self) -> int:
        return len(self.inputs.filenames)

    def rows(self, x: np.ndarray) -> np.ndarray:
        """``x`` restricted to the candidates (``x`` itself when nothing was removed)."""
        return x[self.cand] if len(self.cand) < self.n else x

    def nothing_to_pick(self) -> SelectionResult | None:
        """The empty result when there is no candidate or nothing to pick, else None."""
        if len(self.cand) == 0 or self.k == 0:
            return SelectionResult([], self.removed, "exhausted" if len(self.cand) == 0 else "n_samples", [])
        return None

    def stop_reason(self, reason: str) -> str:
        """A kernel's ``exhausted`` is ``n_samples`` when the limit is what ended it."""
        return "n_samples" if reason == "exhausted" and self.limit is not None and self.k == self.limit else reason


def select(config: SelectionConfigV4, inputs: SelectionInputs, device: str = "cpu") -> SelectionResult:
    """Run the selection ``config`` on ``inputs``; see the module docstring for the semantics."""
    _refuse_unsupported(config)
    c = _apply_thresholds(config, inputs, device)
    scoring = [(i, e) for i, e in enumerate(config.strategies) if e.strategy.type != "THRESHOLD"]
    if len(scoring) == 1 and scoring[0][1].strategy.type == "DIVERSITY" and _strength(scoring[0][1].strategy) > 0:
        return _diversity_alone(c, *scoring[0])
    if len(scoring) == 1 and scoring[0][1].strategy.type == "COVERAGE_EXT":
        return _coverage_alone(c, *scoring[0])
    return _general(c, scoring)


def _refuse_unsupported(config: SelectionConfigV4) -> None:
    problems = selection_problems(config)
    if problems:
        raise SelectionError("; ".join(problems))
    unsupported = [_where(i) for i, e in enumerate(config.strategies) if e.strategy.target_range is not None]
    if unsupported:
        raise SelectionError(
            f"{', '.join(unsupported)}: 'target_range' is not supported; use stopping_condition_max_sum"
        )


def _apply_thresholds(config: SelectionConfigV4, inputs: SelectionInputs, device: str) -> _Candidates:
    """Stage 1: THRESHOLD strategies filter the candidates."""
    n = len(inputs.filenames)
    limit = selection_limit(config, n)
    keep = np.ones(n, dtype=bool)
    for i, entry in enumerate(config.strategies):
        if entry.strategy.type == "THRESHOLD":
            values = _scalar(entry, inputs, _where(i))
            keep &= _OPS[entry.strategy.operation or ""](values, float(entry.strategy.threshold or 0.0))
    cand = np.flatnonzero(keep)
    removed = np.flatnonzero(~keep).tolist()
    k = len(cand) if limit is None else min(limit, len(cand))
    return _Candidates(inputs, cand, removed, k, limit, device)


def _diversity_alone(c: _Candidates, i: int, entry: SelectionEntry) -> SelectionResult:
    """Fast path: one DIVERSITY strategy, the exact greedy k-center kernel."""
    x = _embeddings(c.inputs, _where(i), entry)
    pool = _datapool(c.inputs, x.shape[1])
    empty = c.nothing_to_pick()
    if empty is not None:
        return empty
    res = kcenter_greedy(
        c.rows(x),
        c.k,
        datapool=pool,
        min_distance=entry.strategy.stopping_condition_minimum_distance,
        device=c.device,
    )
    return SelectionResult(c.cand[res.picks].tolist(), c.removed, c.stop_reason(res.stop_reason), res.distances)


def _coverage_alone(c: _Candidates, i: int, entry: SelectionEntry) -> SelectionResult:
    """COVERAGE_EXT (alone; validation refuses it with other scoring strategies)."""
    x = _embeddings(c.inputs, _where(i), entry)
    pool = _datapool(c.inputs, x.shape[1])
    empty = c.nothing_to_pick()
    if empty is not None:
        return empty
    cov = coverage_select(
        c.rows(x),
        None if c.limit is None else c.k,
        radius=entry.strategy.coverage_radius_ext,
        n_neighbors=entry.strategy.num_nearest_neighbors or DEFAULT_COVERAGE_NEIGHBORS,
        datapool=pool,
        device=c.device,
    )
    return SelectionResult(
        c.cand[cov.picks].tolist(), c.removed, c.stop_reason(cov.stop_reason), [], {"coverage": cov.details}
    )


@dataclass
class _Objectives:
    """The scoring strategies of the general loop, gathered once before the first pick."""

    m: int  # number of candidates
    const: np.ndarray  # sum of the constant log-objectives
    diversity: KCenterState | None = None
    div_strength: float = 0.0
    min_distance: float | None = None
    balances: list[_Balance] = field(default_factory=list)
    max_sums: list[tuple[np.ndarray, float]] = field(default_factory=list)
    min_typ: list[tuple[np.ndarray, float]] = field(default_factory=list)
    x: np.ndarray | None = None
    #: constant objectives, for the report's contributions
    constant: list[tuple[str, float, np.ndarray]] = field(default_factory=list)


def _general(c: _Candidates, scoring: list[tuple[int, SelectionEntry]]) -> SelectionResult:
    """The general greedy loop: gather the objectives, then pick one sample at a time."""
    obj = _gather_objectives(c, scoring)
    picks, dists, reason, seen = _greedy(c, obj)
    return SelectionResult(
        c.cand[np.asarray(picks, dtype=np.int64)].tolist(),
        c.removed,
        reason,
        dists,
        {"contributions": _contributions(obj, seen)},
    )


def _gather_objectives(c: _Candidates, scoring: list[tuple[int, SelectionEntry]]) -> _Objectives:
    obj = _Objectives(len(c.cand), np.zeros(len(c.cand)))
    for i, entry in scoring:
        where, strat = _where(i), entry.strategy
        s = _strength(strat)
        if strat.type == "WEIGHTS":
            _add_weights(c, obj, entry, where, s)
        elif strat.type == "BALANCE":
            names, mass = _class_mass(entry, c.inputs, where)
            obj.balances.append(_Balance(entry, names, mass[c.cand], where))
            obj.balances[-1].label = f"BALANCE ({where})"
        elif strat.type in ("DIVERSITY", "SIMILARITY", "TYPICALITY"):
            if obj.x is None:
                obj.x = _embeddings(c.inputs, where, entry)[c.cand]
            if strat.type == "DIVERSITY":
                _add_diversity(c, obj, obj.x, strat, s)
            elif strat.type == "SIMILARITY":
                _add_similarity(c, obj, obj.x, entry, where, s)
            else:
                _add_typicality(c, obj, obj.x, strat, where, s)
        else:  # COVERAGE_EXT with other strategies is refused by selection_problems
            raise SelectionError(f"{where}: unsupported strategy {strat.type}")
    return obj


def _add_weights(c: _Candidates, obj: _Objectives, entry: SelectionEntry, where: str, s: float) -> None:
    raw = _scalar(entry, c.inputs, where)[c.cand]
    o = _minmax(raw) if obj.m else raw
    obj.const += _log_obj(o, s)
    obj.constant.append((f"WEIGHTS ({where})", s, o))
    if entry.strategy.stopping_condition_max_sum is not None:
        obj.max_sums.append((raw, float(entry.strategy.stopping_condition_max_sum)))


def _add_diversity(c: _Candidates, obj: _Objectives, x: np.ndarray, strat: SelectionStrategy, s: float) -> None:
    if obj.diversity is None:
        obj.diversity = KCenterState(x, _datapool(c.inputs, x.shape[1]), c.device)
    obj.div_strength += s
    if strat.stopping_condition_minimum_distance is not None:
        md = float(strat.stopping_condition_minimum_distance)
        obj.min_distance = md if obj.min_distance is None else max(obj.min_distance, md)


def _add_similarity(
    c: _Candidates, obj: _Objectives, x: np.ndarray, entry: SelectionEntry, where: str, s: float
) -> None:
    tag = entry.input.tag_name or ""
    if tag not in c.inputs.query_embeddings:
        raise SelectionError(f"{where}: SIMILARITY needs the embeddings of query tag {tag!r}; none given")
    q = np.asarray(c.inputs.query_embeddings[tag], dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != x.shape[1] or q.shape[0] == 0:
        raise SelectionError(f"{where}: query tag {tag!r} embeddings have shape {q.shape}; need (Q>0, {x.shape[1]})")
    if obj.m:
        o = (1.0 + _similarity(x, q, c.device)) / 2.0
        obj.const += _log_obj(o, s)
        obj.constant.append((f"SIMILARITY ({where})", s, o))


def _add_typicality(
    c: _Candidates, obj: _Objectives, x: np.ndarray, strat: SelectionStrategy, where: str, s: float
) -> None:
    nn = strat.num_nearest_neighbors or DEFAULT_NUM_NEAREST_NEIGHBORS
    typ = typicality(x, nn, c.device) if obj.m else np.zeros(0)
    if obj.m:
        obj.const += _log_obj(typ / typ.max(), s)
        obj.constant.append((f"TYPICALITY ({where})", s, typ / typ.max()))
    if strat.stopping_condition_minimum_typicality is not None:
        obj.min_typ.append((typ, float(strat.stopping_condition_minimum_typicality)))


def _greedy(
    c: _Candidates, obj: _Objectives
) -> tuple[list[int], list[float], str, dict[str, list[tuple[float, float]]]]:
    """Pick one sample at a time; returns the picks (indices into the candidates), DIVERSITY's
    distances, the stop reason and, per strategy, (objective at the pick, mean over the candidates)."""
    remaining = np.ones(obj.m, dtype=bool)
    picks: list[int] = []
    dists: list[float] = []
    sums = [0.0] * len(obj.max_sums)
    seen: dict[str, list[tuple[float, float]]] = {}
    while True:
        if len(picks) >= c.k:
            return picks, dists, "n_samples" if c.limit is not None and len(picks) >= c.limit else "exhausted", seen
        if not remaining.any():
            return picks, dists, "exhausted", seen
        if any(not (typ[remaining] >= thr).any() for typ, thr in obj.min_typ):
            return picks, dists, "minimum_typicality", seen
        step = _score(obj, remaining)
        if step is None:
            return picks, dists, "minimum_distance", seen
        score, d, div_obj = step
        idx = int(np.argmax(score))
        for label, o in _step_objectives(obj.constant, obj.balances, div_obj):
            seen.setdefault(label, []).append((float(o[idx]), float(o[remaining].mean())))
        picks.append(idx)
        remaining[idx] = False
        if obj.diversity is not None:
            dists.append(float(d[idx]) if d is not None else math.inf)
            obj.diversity.add(idx)
        for bal in obj.balances:
            bal.add(idx)
        hit = False
        for j, (raw, cap) in enumerate(obj.max_sums):
            sums[j] += float(raw[idx])
            hit |= sums[j] >= cap
        if hit:
            return picks, dists, "max_sum", seen


def _score(obj: _Objectives, remaining: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None:
    """This step's score of every candidate (picked ones: -inf), DIVERSITY's distances and objective
    (None without DIVERSITY); None when ``stopping_condition_minimum_distance`` stops the loop."""
    score = obj.const.copy()
    d: np.ndarray | None = None
    div_obj: np.ndarray | None = None
    if obj.diversity is not None:
        if obj.diversity.has_centres:
            d = np.sqrt(np.maximum(obj.diversity.min_d2.astype(np.float64), 0.0))
            if obj.min_distance is not None and not (d[remaining] > obj.min_distance).any():
                return None
            base = d
        else:
            base = obj.diversity.distance_to_mean()
        top = float(base[remaining].max())
        div_obj = base / top if top > 0 else np.ones(obj.m)
        score += _log_obj(div_obj, obj.div_strength)
    for bal in obj.balances:
        score += bal.log_objective(remaining)
    score[~remaining] = -np.inf
    return score, d, div_obj


def _contributions(obj: _Objectives, seen: dict[str, list[tuple[float, float]]]) -> list[dict[str, Any]]:
    """For the report: each strategy's mean objective at the picks against its mean over the candidates."""
    strengths = {label: s for label, s, _ in obj.constant}
    strengths.update({b.label: b.strength for b in obj.balances})
    return [
        {
            "strategy": label,
            "strength": strengths.get(label, obj.div_strength),
            "objective_at_picks": float(np.mean([a for a, _ in v])),
            "objective_of_candidates": float(np.mean([c for _, c in v])),
        }
        for label, v in seen.items()
    ]


def _step_objectives(
    objectives: list[tuple[str, float, np.ndarray]], balances: list[_Balance], div_obj: np.ndarray | None
) -> list[tuple[str, np.ndarray]]:
    """Each strategy's objective (in (0, 1]) over the candidates at this step."""
    out = [(label, obj) for label, _, obj in objectives]
    if div_obj is not None:
        out.append(("DIVERSITY", div_obj))
    out.extend((b.label, b.last_obj) for b in balances)
    return out
