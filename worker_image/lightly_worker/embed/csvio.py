"""Lightly's embeddings CSV: ``filenames,embedding_0,...,embedding_{D-1},labels`` (one row per sample)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np


class EmbeddingsError(ValueError):
    """A custom embeddings file that does not follow Lightly's format; the message says where and why."""


def _header_problem(header: list[str]) -> str | None:
    if not header:
        return "the file is empty (expected a header 'filenames,embedding_0,...,labels')"
    if header[0].strip() != "filenames":
        return "the first column must be 'filenames'"
    if len(header) < 3 or header[-1].strip() != "labels":
        return f"the last column must be 'labels' (column {len(header)})"
    for i, col in enumerate(header[1:-1]):
        if col.strip() != f"embedding_{i}":
            return f"column {i + 2} must be 'embedding_{i}'"
    return None


def load_custom_embeddings(csv_path: Path) -> tuple[list[str], np.ndarray]:
    """(filenames, N x D float32) from a Lightly embeddings CSV; raises EmbeddingsError with the line number.

    Checks: header, the same column count on every row, numbers that parse and are finite, integer labels,
    non-empty and unique filenames.
    """
    names, emb, _ = load_embeddings_with_labels(csv_path)
    return names, emb


def _first_bad_cell(csv_path: Path, values: list[list[str]], lines: list[int]) -> EmbeddingsError:
    """The error that names the first cell that is not a finite number (``lines``: each row's line)."""
    for i, row in enumerate(values):
        for j, cell in enumerate(row):
            try:
                ok = math.isfinite(float(cell))
            except ValueError:
                ok = False
            if not ok:
                return EmbeddingsError(f"{csv_path}, line {lines[i]}: embedding_{j} is not a finite number")
    return EmbeddingsError(f"{csv_path}: embeddings are not numeric")  # pragma: no cover


def load_embeddings_with_labels(csv_path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Like load_custom_embeddings, plus the labels column (int64)."""
    csv_path = Path(csv_path)
    try:
        fh = csv_path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise EmbeddingsError(f"{csv_path}: cannot open: {exc}") from exc
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, [])
            problem = _header_problem(header)
            if problem:
                raise EmbeddingsError(f"{csv_path}, line 1: bad header: {problem}")
            width = len(header)
            names: list[str] = []
            values: list[list[str]] = []
            labels: list[str] = []
            first_line: dict[str, int] = {}
            for row in reader:
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if len(row) != width:
                    raise EmbeddingsError(f"{csv_path}, line {line}: {len(row)} columns, the header has {width}")
                name = row[0].strip()
                if not name:
                    raise EmbeddingsError(f"{csv_path}, line {line}: empty filename")
                if name in first_line:
                    raise EmbeddingsError(
                        f"{csv_path}, line {line}: duplicate filename (first on line {first_line[name]})"
                    )
                first_line[name] = line
                names.append(name)
                values.append(row[1:-1])
                labels.append(row[-1])
        except (csv.Error, UnicodeDecodeError) as exc:
            raise EmbeddingsError(f"{csv_path}, line {reader.line_num}: not valid CSV ({type(exc).__name__})") from exc

    d = width - 2
    try:
        emb = np.array(values, dtype=np.float32).reshape(len(names), d)
        finite = bool(np.isfinite(emb).all())
    except ValueError:
        finite = False
        emb = None
    if emb is None or not finite:
        raise _first_bad_cell(csv_path, values, [first_line[name] for name in names])
    try:
        label_arr = np.array([int(x) for x in labels], dtype=np.int64)
    except ValueError:
        bad = next(i for i, x in enumerate(labels) if not x.strip().lstrip("-").isdigit())
        raise EmbeddingsError(f"{csv_path}, line {first_line[names[bad]]}: the label is not an integer") from None
    return names, emb, label_arr


def save_embeddings(csv_path: Path, names: list[str], emb: np.ndarray, labels: list[int] | None = None) -> None:
    """Write Lightly's format; floats as ``%.9g`` (round-trips float32 exactly); labels default to 0."""
    emb = np.asarray(emb)
    if emb.ndim != 2 or emb.shape[0] != len(names):
        raise ValueError(f"embeddings must be len(names) x D, got {emb.shape} for {len(names)} names")
    if labels is not None and len(labels) != len(names):
        raise ValueError("labels must have one entry per name")
    d = emb.shape[1]
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    fmt = ",".join(["%.9g"] * d)
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["filenames", *[f"embedding_{i}" for i in range(d)], "labels"])
        rows = emb.astype(np.float64, copy=False) if emb.dtype != np.float64 else emb
        for i, name in enumerate(names):
            label = 0 if labels is None else int(labels[i])
            writer.writerow([name, *(fmt % tuple(rows[i])).split(","), label])
    tmp.replace(csv_path)
