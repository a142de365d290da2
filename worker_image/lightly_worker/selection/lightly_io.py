"""Readers of the selection inputs that live in a Lightly datasource's ``.lightly/`` folder.

Supported (the formats of Lightly's worker docs, "Add Metadata/Predictions to a datasource"):

Metadata (``.lightly/metadata/``)
    ``schema.json``: list of ``{"name", "path", "defaultValue", "valueDataType"}`` with
    ``valueDataType`` in NUMERIC_INT, NUMERIC_FLOAT, CATEGORICAL_INT, CATEGORICAL_STRING,
    CATEGORICAL_BOOLEAN. Per file: ``.lightly/metadata/<relative path without extension>.json`` =
    ``{"file_name", "type": "image"|"frame"|"video", "metadata": {...nested...}}``. A video frame
    ``<video>-<frame>-<ext>.png`` without its own file falls back to the video's file
    ``<video>.json``. The METADATA ``key`` of a selection input is matched against the schema's
    ``path`` (dotted path into ``metadata``), then its ``name``; a key without schema entry is read as a
    dotted path with no default. A missing file or value takes the schema's ``defaultValue``; without
    one it stays ``None`` (and the selection reports it). Keys ``lightly.*`` are computed by the
    worker and are not read here (the pipeline passes them in ``SelectionInputs.metadata``).

Predictions (``.lightly/predictions/``)
    ``tasks.json``: list of task names; ``<task>/schema.json``: ``{"task_type" (or the older
    "task_description"): "classification"|"object-detection", "categories": [{"id", "name"}]}``;
    per file ``<task>/<relative path without extension>.json`` = ``{"file_name", "predictions":
    [{"category_id", "probabilities"?, "bbox"? , "score"?}]}``. A missing prediction file is an error
    (an object-detection file with an empty list means "no objects"). The task ``lightly_pretagging``
    (the worker's own detector) is not read here.

Class information and SCORES computed per task:

* classification: class distribution = ``probabilities`` (one-hot of ``category_id`` without
  them); ``uncertainty_least_confidence`` = ``(1 - max p) * C / (C - 1)``,
  ``uncertainty_margin`` = ``1 - (p_top1 - p_top2)``, ``uncertainty_entropy`` = entropy / log(C); all in [0, 1].
* object detection: per-object probabilities are ``probabilities`` when given, otherwise
  ``score`` on ``category_id`` and ``(1 - score) / (C - 1)`` on the other classes; class
  distribution = sum over objects; ``CATEGORY_COUNT`` = objects per category; the three uncertainty
  scores are computed per object and reduced with ``max`` over the objects (0 without objects);
  ``object_frequency`` = number of objects.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypedDict

import numpy as np
from lightly_protocol.models import SelectionConfigV4

from ..paths import PathOutsideRoot, inside, is_inside
from .scores import SCORE_NAMES, classification_scores
from .types import PredictionTask, SelectionError

__all__ = [
    "PRETAGGING_TASK",
    "LightlyInputParts",
    "classification_scores",
    "load_lightly_inputs",
    "load_metadata",
    "load_predictions",
]

PRETAGGING_TASK = "lightly_pretagging"
_FRAME = re.compile(r"^(?P<video>.+)-(?P<frame>\d+)-(?P<ext>[A-Za-z0-9]+)\.png$")


def _lightly_dir(root: Path) -> Path:
    root = Path(root)
    return root if root.name == ".lightly" else root / ".lightly"


def _json_name(filename: str) -> PurePosixPath:
    p = PurePosixPath(filename.replace("\\", "/").lstrip("/"))
    return p.with_suffix(".json") if p.suffix else p.with_name(p.name + ".json")


def _read_json(path: Path, kind: type = object) -> Any:
    """A JSON file of ``.lightly/``: refused (naming no content) when its real path leaves ``.lightly/``."""
    lightly = next((p for p in Path(path).parents if p.name == ".lightly"), None)
    if lightly is None or not is_inside(os.path.realpath(lightly), str(path)):
        raise SelectionError(f"{path}: must stay inside .lightly/ of the LIGHTLY datasource (no '..', no symlinks out)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SelectionError(f"{path}: cannot be read as JSON ({exc})") from None
    if not isinstance(data, kind):
        raise SelectionError(f"{path}: expected a JSON {'object' if kind is dict else 'list'}")
    return data


def _get_path(data: Any, path: str) -> Any:
    cur = data
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _cast(value: Any, dtype: str | None, key: str, where: str) -> Any:
    if value is None or dtype is None:
        return value
    try:
        if dtype == "NUMERIC_INT" or dtype == "CATEGORICAL_INT":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if dtype == "NUMERIC_FLOAT":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if dtype == "CATEGORICAL_BOOLEAN":
            if not isinstance(value, bool):
                raise ValueError
            return value
        if dtype == "CATEGORICAL_STRING":
            return str(value)
    except (TypeError, ValueError):
        raise SelectionError(f"{where}: metadata {key!r} = {value!r} is not of type {dtype}") from None
    return value


def load_metadata(lightly_root: Path, filenames: list[str], keys: list[str]) -> dict[str, list[Any]]:
    """Values of the METADATA ``keys`` for every file (``None`` where missing without default)."""
    base = _lightly_dir(lightly_root) / "metadata"
    schema: list[dict[str, Any]] = []
    if (base / "schema.json").is_file():
        loaded = _read_json(base / "schema.json", list)
        schema = [e for e in loaded if isinstance(e, dict)]
    entries: dict[str, dict[str, Any]] = {}
    for key in keys:
        entry = next((e for e in schema if e.get("path") == key), None) or next(
            (e for e in schema if e.get("name") == key), None
        )
        entries[key] = entry or {"path": key}
    out: dict[str, list[Any]] = {key: [] for key in keys}
    for fn in filenames:
        rel = _json_name(fn)
        path = base / rel
        frame = _FRAME.match(PurePosixPath(fn).name)
        if not path.is_file() and frame:
            path = base / rel.parent / f"{frame.group('video')}.json"
        data = _read_json(path, dict).get("metadata") if path.is_file() else None
        for key in keys:
            entry = entries[key]
            value = _get_path(data, str(entry.get("path", key))) if data is not None else None
            if value is None:
                value = entry.get("defaultValue")
            out[key].append(_cast(value, entry.get("valueDataType"), key, str(path)))
    return out


@dataclass(frozen=True)
class _TaskSchema:
    """A prediction task's ``schema.json``: its type and its categories sorted by id."""

    file: Path
    task_type: str
    cats: list[dict[str, Any]]

    @functools.cached_property  # read for every predictions file: computed once per task
    def ids(self) -> list[int]:
        return [int(c["id"]) for c in self.cats]

    @functools.cached_property
    def col(self) -> dict[int, int]:
        """Category id -> column."""
        return {cid: j for j, cid in enumerate(self.ids)}


def _task_schema(base: Path, task: str) -> _TaskSchema:
    tasks_file = base / "tasks.json"
    tasks = _read_json(tasks_file, list) if tasks_file.is_file() else []
    if task not in tasks:
        raise SelectionError(
            f"prediction task {task!r} is not listed in {tasks_file} (found {tasks}); "
            "add it there and put its files in .lightly/predictions/<task>/"
        )
    try:
        inside(base, task, "prediction task", ".lightly/predictions/")
    except PathOutsideRoot as exc:
        raise SelectionError(str(exc)) from None
    schema_file = base / task / "schema.json"
    if not schema_file.is_file():
        raise SelectionError(f"prediction task {task!r} has no schema: {schema_file} is missing")
    schema = _read_json(schema_file, dict)
    task_type = schema.get("task_type") or schema.get("task_description")
    if task_type not in ("classification", "object-detection"):
        raise SelectionError(
            f"{schema_file}: task_type {task_type!r} is not supported (use 'classification' or 'object-detection')"
        )
    try:
        cats = sorted(schema.get("categories") or [], key=lambda c: int(c["id"]))
    except (KeyError, TypeError, ValueError):
        cats = []
    if not cats:
        raise SelectionError(f"{schema_file}: 'categories' must list the classes as {{'id', 'name'}}")
    return _TaskSchema(schema_file, task_type, cats)


def _prediction_rows(schema: _TaskSchema, path: Path, counts: np.ndarray) -> list[np.ndarray]:
    """One file's predictions as class-probability rows (one per prediction); counts them per category
    into ``counts`` (the file's row)."""
    col, c = schema.col, len(schema.cats)
    preds = _read_json(path, dict).get("predictions")
    if not isinstance(preds, list):
        raise SelectionError(f"{path}: 'predictions' must be a list")
    rows = []
    for pred in preds:
        cid = pred.get("category_id")
        if cid not in col:
            raise SelectionError(f"{path}: category_id {cid!r} is not in {schema.file} (ids {schema.ids})")
        pr = pred.get("probabilities")
        if pr is not None:
            if len(pr) != c:
                raise SelectionError(f"{path}: 'probabilities' has {len(pr)} values for {c} categories")
            row = np.asarray(pr, dtype=np.float64)
        elif schema.task_type == "classification":
            row = np.eye(c)[col[cid]]
        else:
            s = float(pred.get("score", 1.0))
            row = np.full(c, (1.0 - s) / (c - 1) if c > 1 else 0.0)
            row[col[cid]] = s
        rows.append(row)
        counts[col[cid]] += 1
    return rows


def load_predictions(lightly_root: Path, filenames: list[str], task: str) -> PredictionTask:
    """Read one prediction task for every file (error when a file's predictions are missing)."""
    base = _lightly_dir(lightly_root) / "predictions"
    schema = _task_schema(base, task)
    task_type = schema.task_type
    c = len(schema.cats)
    n = len(filenames)
    probs = np.zeros((n, c))
    counts = np.zeros((n, c))
    det_scores = {name: np.zeros(n) for name in SCORE_NAMES}
    freq = np.zeros(n)
    missing: list[str] = []
    for i, fn in enumerate(filenames):
        path = base / task / _json_name(fn)
        if not path.is_file():
            missing.append(fn)
            continue
        rows = _prediction_rows(schema, path, counts[i])
        if task_type == "classification":
            if len(rows) != 1:
                raise SelectionError(f"{path}: a classification file needs exactly one prediction, got {len(rows)}")
            probs[i] = rows[0]
        elif rows:
            mat = np.stack(rows)
            probs[i] = mat.sum(0)
            per_obj = classification_scores(mat)
            for name in SCORE_NAMES:
                det_scores[name][i] = float(per_obj[name].max())
            freq[i] = len(rows)
    if missing:
        shown = ", ".join(repr(m) for m in missing[:3])
        raise SelectionError(
            f"prediction task {task!r}: no prediction file for {len(missing)} sample(s) (e.g. {shown}); "
            f"expected .lightly/predictions/{task}/<filename without extension>.json"
        )
    names = [str(cat.get("name", cat["id"])) for cat in schema.cats]
    if task_type == "classification":
        scores = classification_scores(probs)
    else:
        scores = dict(det_scores)
        scores["object_frequency"] = freq
    return PredictionTask(names, probs, task_type, counts, scores)


class LightlyInputParts(TypedDict):
    """Keyword arguments of :class:`SelectionInputs` read from ``.lightly/``."""

    metadata: dict[str, list[Any]]
    predictions: dict[str, PredictionTask]


def load_lightly_inputs(lightly_root: Path, filenames: list[str], config: SelectionConfigV4) -> LightlyInputParts:
    """The METADATA / PREDICTIONS / SCORES inputs that ``config`` names, read from ``.lightly/``.

    Returns ``{"metadata": ..., "predictions": ...}``, the matching keyword arguments of
    :class:`SelectionInputs` (``SelectionInputs(filenames, embeddings=..., **parts)``); the pipeline
    adds embeddings, datapool, worker-computed metadata (``lightly.*``), pretagging predictions and
    query embeddings. Raises :class:`SelectionError` for missing or malformed files.
    """
    keys: list[str] = []
    tasks: list[str] = []
    for entry in config.strategies:
        inp = entry.input
        if inp.type == "METADATA" and inp.key and not inp.key.startswith("lightly.") and inp.key not in keys:
            keys.append(inp.key)
        if inp.type in ("SCORES", "PREDICTIONS") and inp.task and inp.task != PRETAGGING_TASK and inp.task not in tasks:
            tasks.append(inp.task)
    metadata = load_metadata(lightly_root, filenames, keys) if keys else {}
    predictions = {t: load_predictions(lightly_root, filenames, t) for t in tasks}
    return {"metadata": metadata, "predictions": predictions}
