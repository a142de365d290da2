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

Predictions (``.lightly/predictions/``): every Lightly task type, read by :mod:`.predictions`;
their active-learning scores are computed by :mod:`.scores`.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any, TypedDict

from lightly_protocol.models import SelectionConfigV4

from .jsonfiles import FRAME, json_name, lightly_dir, read_json
from .predictions import PRETAGGING_TASK, load_predictions
from .scores import classification_scores
from .types import PredictionTask, SelectionError

__all__ = [
    "PRETAGGING_TASK",
    "LightlyInputParts",
    "classification_scores",
    "load_lightly_inputs",
    "load_metadata",
    "load_predictions",
]


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
    base = lightly_dir(lightly_root) / "metadata"
    schema: list[dict[str, Any]] = []
    if (base / "schema.json").is_file():
        loaded = read_json(base / "schema.json", list)
        schema = [e for e in loaded if isinstance(e, dict)]
    entries: dict[str, dict[str, Any]] = {}
    for key in keys:
        entry = next((e for e in schema if e.get("path") == key), None) or next(
            (e for e in schema if e.get("name") == key), None
        )
        entries[key] = entry or {"path": key}
    out: dict[str, list[Any]] = {key: [] for key in keys}
    for fn in filenames:
        rel = json_name(fn)
        path = base / rel
        frame = FRAME.match(PurePosixPath(fn).name)
        if not path.is_file() and frame:
            path = base / rel.parent / f"{frame.group('video')}.json"
        data = read_json(path, dict).get("metadata") if path.is_file() else None
        for key in keys:
            entry = entries[key]
            value = _get_path(data, str(entry.get("path", key))) if data is not None else None
            if value is None:
                value = entry.get("defaultValue")
            out[key].append(_cast(value, entry.get("valueDataType"), key, str(path)))
    return out


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
        with_task = ("SCORES", "PREDICTIONS", "EMBEDDINGS")  # EMBEDDINGS of a task: its objects' crops
        if inp.type in with_task and inp.task and inp.task != PRETAGGING_TASK and inp.task not in tasks:
            tasks.append(inp.task)
    metadata = load_metadata(lightly_root, filenames, keys) if keys else {}
    predictions = {t: load_predictions(lightly_root, filenames, t) for t in tasks}
    return {"metadata": metadata, "predictions": predictions}
