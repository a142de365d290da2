"""The embedding view's 2-D projection of a run's embeddings: PCA, computed once per run and kept as JSON.

The input is the run's ``data/embeddings.csv`` artifact (Lightly's CSV format: ``filenames,embedding_0,...,
embedding_{D-1}[,labels]``, every candidate the run embedded). The two principal directions come from at most
``FIT_ROWS`` rows (a fixed-seed sample: the same run always gives the same picture) and every row is projected
on them, so 100,000 rows of 1,280 numbers cost one read of the file and one matrix product. Coordinates are
scaled to [0, 1] (the canvas's own scale); ``selected`` marks the run's selection.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np

#: the file the view projects (the worker uploads every output file as an artifact under its relative name)
EMBEDDINGS_ARTIFACT = "data/embeddings.csv"
#: rows the principal directions are fitted on
FIT_ROWS = 5000
#: the most points drawn (beyond: a fixed-seed sample, selected points always kept)
MAX_POINTS = 100_000


class ProjectionError(ValueError):
    """The CSV cannot be projected (the message names the line and what is wrong)."""


def read_embeddings(path: Path) -> tuple[list[str], np.ndarray]:
    """(filenames, N x D float32 embeddings) of a CSV in Lightly's format."""
    names: list[str] = []
    rows: list[np.ndarray] = []
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
                rows.append(np.asarray(row[1 : 1 + d], dtype=np.float32))
            except ValueError:
                raise ProjectionError(f"line {line}: the embedding is not {d} numbers") from None
            if rows[-1].shape != (d,) or not np.isfinite(rows[-1]).all():
                raise ProjectionError(f"line {line}: the embedding is not {d} finite numbers")
            names.append(row[0])
    if not rows:
        return names, np.zeros((0, d), dtype=np.float32)
    return names, np.stack(rows)


def pca_2d(emb: np.ndarray, fit_rows: int = FIT_ROWS) -> np.ndarray:
    """N x 2 coordinates in [0, 1]: the rows projected on their two principal directions (fitted on at
    most ``fit_rows`` rows), each axis scaled to [0, 1] (an axis without spread, or with only rounding noise
    next to the other's, sits at 0.5)."""
    n = emb.shape[0]
    if n == 0:
        return np.zeros((0, 2))
    x = emb.astype(np.float64)
    mean = x.mean(axis=0)
    fit = x if n <= fit_rows else x[np.random.default_rng(0).choice(n, fit_rows, replace=False)]
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    axes = vt[:2]
    if axes.shape[0] < 2:  # one dimension: the second axis is constant
        axes = np.vstack([axes, np.zeros_like(axes)])
    xy = (x - mean) @ axes.T
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    # an axis whose spread is rounding noise next to the other's (points on a line) is constant, not stretched
    spread = (hi - lo) > 1e-6 * max(float((hi - lo).max()), 1e-30)
    span = np.where(spread, hi - lo, 1.0)
    out: np.ndarray = np.where(spread, (xy - lo) / span, 0.5)
    return out


def projection(
    names: list[str], emb: np.ndarray, selected: set[str], sample_ids: dict[str, str], image_base: str
) -> dict[str, Any]:
    """The JSON the canvas draws: coordinates (4 decimals), selected flags, names, sample ids (None for a
    name the dataset does not hold) and the prefix of the image URLs."""
    keep = _kept(names, selected)
    xy = pca_2d(emb[keep]) if len(keep) else np.zeros((0, 2))
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


def _kept(names: list[str], selected: set[str]) -> list[int]:
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
