"""Checks an uploaded embeddings CSV in Lightly's format before it is stored.

The format (Lightly's custom-embeddings documentation, and what the client's ``upload_embeddings``
sends): a header ``filenames,embedding_0,...,embedding_{D-1}[,labels]``, then one row per sample with
a filename, D finite numbers and (with the column) an integer label. Read as a stream: a large file is
never held in memory, only its filenames.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path


class EmbeddingCsvError(ValueError):
    pass


def check_csv(path: Path, known: Iterable[str] | None = None) -> int:
    """The number of rows of a valid embeddings CSV at ``path``; ``known``: the filenames it may name
    (the dataset's samples). Raises EmbeddingCsvError naming the line and what to fix."""
    allowed = None if known is None else set(known)
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:  # pragma: no cover - the server wrote it just now
        raise EmbeddingCsvError(f"cannot read the upload: {exc.strerror}") from None
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
            if not header or header[0] != "filenames":
                raise EmbeddingCsvError("line 1: the header must start with 'filenames'")
            has_labels = header[-1] == "labels"
            dims = header[1 : len(header) - 1 if has_labels else len(header)]
            if not dims or dims != [f"embedding_{i}" for i in range(len(dims))]:
                raise EmbeddingCsvError(
                    "line 1: the header must be filenames,embedding_0,...,embedding_{D-1}[,labels] with D >= 1"
                )
            seen: set[str] = set()
            rows = 0
            for row in reader:
                line = reader.line_num
                if len(row) != len(header):
                    raise EmbeddingCsvError(f"line {line}: {len(row)} columns, the header has {len(header)}")
                name = row[0]
                if not name:
                    raise EmbeddingCsvError(f"line {line}: the filename is empty")
                if name in seen:
                    raise EmbeddingCsvError(f"line {line}: filename {name!r} appears twice")
                if allowed is not None and name not in allowed:
                    raise EmbeddingCsvError(f"line {line}: {name!r} is not a sample of the dataset")
                seen.add(name)
                for j, cell in enumerate(row[1 : 1 + len(dims)]):
                    try:
                        ok = math.isfinite(float(cell))
                    except ValueError:
                        ok = False
                    if not ok:
                        raise EmbeddingCsvError(f"line {line}: embedding_{j} is not a finite number: {cell[:40]!r}")
                if has_labels:
                    try:
                        int(row[-1])
                    except ValueError:
                        raise EmbeddingCsvError(f"line {line}: labels must be an integer: {row[-1][:40]!r}") from None
                rows += 1
        except UnicodeDecodeError:
            raise EmbeddingCsvError("the file is not UTF-8 text") from None
        except csv.Error as exc:
            raise EmbeddingCsvError(f"line {reader.line_num}: not valid CSV: {exc}") from None
    if rows == 0:
        raise EmbeddingCsvError("the file has a header but no rows")
    return rows
