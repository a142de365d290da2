"""The embedding view's 2-D projection of a run's embeddings: PCA, computed once per run and kept as JSON.

The input is the run's ``data/embeddings.csv`` artifact (Lightly's CSV format: ``filenames,embedding_0,...,
embedding_{D-1}[,labels]``, every candidate the run embedded). The two principal directions come from at most
``FIT_ROWS`` rows (a fixed-seed sample: the same run always gives the same picture) and every row is projected
on them (``project_csv``: two passes over the file, never all N x D numbers in memory). Coordinates are
scaled to [0, 1] (the canvas's own scale); ``selected`` marks the run's selection.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

#: the file the view projects (the worker uploads every output file as an artifact under its relative name)
EMBEDDINGS_ARTIFACT = "data/embeddings.csv"
#: rows the principal directions are fitted on
FIT_ROWS = 5000
#: the most points drawn (beyond: a fixed-seed sample, selected points always kept)
MAX_POINTS = 100_000
#: rows projected at once (the float64 working copy is this many rows, not the file)
CHUNK_ROWS = 4096


class ProjectionError(ValueError):
    """The CSV cannot be projected (the message names the line and what is wrong)."""


def _rows(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(filename, D float32 numbers) of each row of a CSV in Lightly's format, checked (the error names the line)."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or header[0] != "filenames":
            raise ProjectionError("line 1: the header must start with 'filenames'")
        d = len(header) - 1 - (header[-1] == "labels")
        if d < 1:
            raise ProjectionError("line 1: no embedding_* columns")
        for line, row in enumerate(reader, start=2):
            try:
                vec = np.asarray(row[1 : 1 + d], dtype=np.float32)
            except ValueError:
                raise ProjectionError(f"line {line}: the embedding is not {d} numbers") from None
            if vec.shape != (d,) or not np.isfinite(vec).all():
                raise ProjectionError(f"line {line}: the embedding is not {d} finite numbers")
            yield row[0], vec


def read_embeddings(path: Path) -> tuple[list[str], np.ndarray]:
    """(filenames, N x D float32 embeddings) of a CSV in Lightly's format (in memory: small files and tests)."""
    rows = list(_rows(path))
    if not rows:
        return [], np.zeros((0, 1), dtype=np.float32)
    return [name for name, _ in rows], np.stack([vec for _, vec in rows])


def _principal_axes(fit: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """2 x D: the two principal directions of ``fit`` (rows) around ``mean``; a missing second one is zero."""
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    axes: np.ndarray = vt[:2]
    if axes.shape[0] < 2:  # one dimension: the second axis is constant
        axes = np.vstack([axes, np.zeros_like(axes)])
    return axes


def _unit_square(xy: np.ndarray) -> np.ndarray:
    """Each axis scaled to [0, 1]; an axis without spread, or with only rounding noise next to the other's
    (points on a line), sits at 0.5 instead of being stretched."""
    if xy.shape[0] == 0:
        return np.zeros((0, 2))
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    spread = (hi - lo) > 1e-6 * max(float((hi - lo).max()), 1e-30)
    span = np.where(spread, hi - lo, 1.0)
    out: np.ndarray = np.where(spread, (xy - lo) / span, 0.5)
    return out


def pca_2d(emb: np.ndarray, fit_rows: int = FIT_ROWS) -> np.ndarray:
    """N x 2 coordinates in [0, 1]: the rows projected on their two principal directions (fitted on at
    most ``fit_rows`` rows), each axis scaled to [0, 1] (``_unit_square``)."""
    n = emb.shape[0]
    if n == 0:
        return np.zeros((0, 2))
    mean = emb.mean(axis=0, dtype=np.float64)
    fit = emb if n <= fit_rows else emb[np.random.default_rng(0).choice(n, fit_rows, replace=False)]
    axes = _principal_axes(fit.astype(np.float64), mean)
    xy = np.empty((n, 2))
    for start in range(0, n, CHUNK_ROWS):  # never a float64 copy of all rows
        xy[start : start + CHUNK_ROWS] = (emb[start : start + CHUNK_ROWS].astype(np.float64) - mean) @ axes.T
    return _unit_square(xy)


def project_csv(path: Path, fit_rows: int = FIT_ROWS) -> tuple[list[str], np.ndarray]:
    """(filenames, N x 2 coordinates in [0, 1]) of a CSV in Lightly's format, in two passes over the file, so
    memory is the names, the coordinates and ``fit_rows`` rows (a seeded reservoir sample the directions are
    fitted on), never the N x D embeddings: for 100,000 x 1,280 about 80 MB (the fit sample, in float64),
    not the 0.5-1.5 GB of all rows."""
    rng = np.random.default_rng(0)
    names: list[str] = []
    total: np.ndarray | None = None
    sample: list[np.ndarray] = []
    for name, vec in _rows(path):
        names.append(name)
        total = vec.astype(np.float64) if total is None else total + vec
        if len(sample) < fit_rows:
            sample.append(vec)
        elif (j := int(rng.integers(0, len(names)))) < fit_rows:  # reservoir sampling (Algorithm R)
            sample[j] = vec
    if total is None:
        return names, np.zeros((0, 2))
    mean = total / len(names)
    axes = _principal_axes(np.stack(sample).astype(np.float64), mean)
    xy = np.empty((len(names), 2))
    batch: list[np.ndarray] = []
    done = 0
    for _, vec in _rows(path):
        batch.append(vec)
        if len(batch) == CHUNK_ROWS:
            xy[done : done + len(batch)] = (np.stack(batch).astype(np.float64) - mean) @ axes.T
            done, batch = done + len(batch), []
    if batch:
        xy[done : done + len(batch)] = (np.stack(batch).astype(np.float64) - mean) @ axes.T
        done += len(batch)
    if done != len(names):
        raise ProjectionError(f"the file changed while it was read ({done} rows, then {len(names)})")
    return names, _unit_square(xy)


def projection(
    names: list[str], emb: np.ndarray, selected: set[str], sample_ids: dict[str, str], image_base: str
) -> dict[str, Any]:
    """The JSON the canvas draws of in-memory embeddings (``projection_doc``)."""
    keep = kept_points(names, selected)
    xy = pca_2d(emb[keep]) if len(keep) else np.zeros((0, 2))
    return projection_doc(names, keep, xy, selected, sample_ids, image_base)


def projection_doc(
    names: list[str],
    keep: list[int],
    xy: np.ndarray,
    selected: set[str],
    sample_ids: dict[str, str],
    image_base: str,
) -> dict[str, Any]:
    """The JSON the canvas draws: of the points ``keep`` (their coordinates ``xy``, 4 decimals), selected flags,
    names, sample ids (None for a name the dataset does not hold) and the prefix of the image URLs."""
    kept_names = [names[i] for i in keep]
    return {
        "n": len(names),
        "x": [round(float(v), 4) for v in xy[:, 0]],
        "y": [round(float(v), 4) for v in xy[:, 1]],
        "selected": [1 if name in selected else 0 for name in kept_names],
        "names": kept_names,
        "ids": [sample_ids.get(name) for name in kept_names],
        "imageBase": image_base,
    }


def kept_points(names: list[str], selected: set[str]) -> list[int]:
    """Indices drawn: all, or at most ``MAX_POINTS`` with every selected one."""
    if len(names) <= MAX_POINTS:
        return list(range(len(names)))
    chosen = [i for i, name in enumerate(names) if name in selected][:MAX_POINTS]
    rest = [i for i, name in enumerate(names) if name not in selected]
    room = MAX_POINTS - len(chosen)
    if room > 0:
        picks = np.random.default_rng(0).choice(len(rest), room, replace=False)
        chosen += [rest[int(j)] for j in picks]
    return sorted(chosen)


def write_atomically(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}")
    tmp.write_text(json.dumps(doc, separators=(",", ":")))
    os.replace(tmp, path)
