"""Semantic checks of a V4 worker config beyond its schema, shared by server and worker.

Each problem is a sentence that says what to change. An empty list means the config is usable.
"""

from __future__ import annotations

from .config_support import refusals
from .models import SelectionConfigV4, SelectionEntry, WorkerConfigV4

_INPUTS_FOR = {
    "DIVERSITY": {"EMBEDDINGS"},
    "TYPICALITY": {"EMBEDDINGS"},
    "COVERAGE_EXT": {"EMBEDDINGS"},
    "SIMILARITY": {"EMBEDDINGS"},
    "WEIGHTS": {"SCORES", "METADATA", "RANDOM"},
    "THRESHOLD": {"SCORES", "METADATA"},
    "BALANCE": {"PREDICTIONS", "METADATA"},
}


def _entry_problems(i: int, entry: SelectionEntry) -> list[str]:
    where = f"selection.strategies[{i}]"
    inp, strat = entry.input, entry.strategy
    out: list[str] = []
    allowed = _INPUTS_FOR[strat.type]
    if inp.type not in allowed:
        out.append(f"{where}: strategy {strat.type} cannot use input {inp.type}; use one of {sorted(allowed)}")
    if inp.type == "SCORES" and not (inp.task and inp.score):
        out.append(f"{where}: input SCORES needs 'task' and 'score'")
    if inp.type == "METADATA" and not inp.key:
        out.append(f"{where}: input METADATA needs 'key' (e.g. 'lightly.sharpness' or a custom key)")
    if inp.type == "PREDICTIONS" and not (inp.task and inp.name):
        out.append(f"{where}: input PREDICTIONS needs 'task' and 'name' (CLASS_DISTRIBUTION or CATEGORY_COUNT)")
    if strat.type == "THRESHOLD" and (strat.threshold is None or strat.operation is None):
        out.append(f"{where}: strategy THRESHOLD needs 'threshold' and 'operation'")
    if strat.type == "SIMILARITY" and not inp.tag_name:
        out.append(f"{where}: strategy SIMILARITY needs input 'tag_name' (the query tag)")
    if strat.coverage_radius_ext is not None and strat.type != "COVERAGE_EXT":
        out.append(f"{where}: 'coverage_radius_ext' belongs to strategy COVERAGE_EXT, not {strat.type}")
    if strat.type == "COVERAGE_EXT" and strat.strength is not None and strat.strength <= 0:
        out.append(f"{where}: strategy COVERAGE_EXT takes no 'strength' <= 0 (leave it out)")
    if strat.type == "BALANCE":
        distribution = strat.distribution or "TARGET"
        if distribution == "TARGET":
            if not strat.target:
                out.append(f"{where}: strategy BALANCE needs 'target' (e.g. {{'car': 0.5}}) or a distribution")
            else:
                bad = {k: v for k, v in strat.target.items() if not 0 <= v <= 1}
                if bad:
                    out.append(f"{where}: BALANCE target values must be in [0, 1]; got {bad}")
                elif sum(strat.target.values()) > 1 + 1e-9:
                    out.append(f"{where}: BALANCE target values must sum to at most 1")
    return out


def selection_problems(selection: SelectionConfigV4) -> list[str]:
    out: list[str] = []
    for i, entry in enumerate(selection.strategies):
        out.extend(_entry_problems(i, entry))
    scoring = [e.strategy.type for e in selection.strategies if e.strategy.type != "THRESHOLD"]
    if "COVERAGE_EXT" in scoring and len(scoring) > 1:
        out.append(
            "selection: strategy COVERAGE_EXT (an extension) combines with THRESHOLD filters only; "
            f"drop the other strategies {[t for t in scoring if t != 'COVERAGE_EXT']} or use them without it"
        )
    has_stop = any(
        e.strategy.stopping_condition_minimum_distance is not None
        or e.strategy.stopping_condition_max_sum is not None
        or e.strategy.stopping_condition_minimum_typicality is not None
        for e in selection.strategies
    )
    if selection.n_samples is None and selection.proportion_samples is None and not has_stop:
        out.append("selection: set 'n_samples' or 'proportion_samples' (or a stopping condition)")
    if selection.n_samples is not None and selection.n_samples == 0:
        out.append("selection: 'n_samples' must be positive (or -1 for no limit)")
    return out


def config_problems(config: WorkerConfigV4) -> list[str]:
    """The options this worker does not support (``config_support.refusals``), then the config's own
    problems."""
    out: list[str] = refusals(config)
    if config.selection is not None:
        out.extend(selection_problems(config.selection))
    docker = config.docker
    if docker and docker.relevant_filenames_file and not docker.relevant_filenames_file.startswith(".lightly/"):
        out.append("docker.relevant_filenames_file must be a path under '.lightly/' in the Lightly datasource")
    if docker:
        for key in ("relevant_filenames_file", "embeddings", "checkpoint"):
            problem = datasource_path_problem(f"docker.{key}", getattr(docker, key))
            if problem:
                out.append(problem)
    return out


# where the worker reads each config path from (it resolves them there and refuses the rest)
_PATH_ROOTS = {
    "docker.relevant_filenames_file": ".lightly/ of the Lightly datasource",
    "docker.embeddings": ".lightly/embeddings/ of the Lightly datasource",
}


def datasource_path_problem(key: str, path: str | None) -> str | None:
    """Why a config path that the worker reads from the Lightly datasource could leave it, or None.

    The worker resolves such paths inside their root and refuses the rest; refusing them when the run
    is scheduled says so before any worker picks it up.
    """
    if not path:
        return None
    where = _PATH_ROOTS.get(key, "the Lightly datasource")
    parts = path.replace("\\", "/").split("/")
    if path.startswith("/") or "\\" in path or "://" in path or (len(parts[0]) == 2 and parts[0][1] == ":"):
        return f"{key} {path!r} must be a relative path, not an absolute path or a URL: it must stay inside {where}"
    if any(p == ".." for p in parts):
        return f"{key} {path!r} must not contain '..' parts: it must stay inside {where}"
    return None


def local_path_problem(full_path: str) -> str | None:
    """Why a LOCAL datasource ``fullPath`` is unusable, or None (rules of the protocol's model doc)."""
    if full_path.startswith("/"):
        return f"LOCAL fullPath {full_path!r} must be relative to the mount (no leading '/')"
    if "://" in full_path:
        return f"LOCAL fullPath {full_path!r} must be a path relative to the mount, not a URL"
    if any(part in (".", "..") for part in full_path.replace("\\", "/").split("/")):
        return f"LOCAL fullPath {full_path!r} must not contain '.' or '..' parts"
    return None
