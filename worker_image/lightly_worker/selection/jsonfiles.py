"""JSON files of a Lightly datasource's ``.lightly/`` folder: where a sample's file lives, and reading one
safely (confined to ``.lightly/``, errors that name the file)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from ..paths import is_inside
from .types import SelectionError

__all__ = ["FRAME", "json_name", "lightly_dir", "read_json"]

#: a video frame's sample name, ``<video>-<frame>-<ext>.png``
FRAME = re.compile(r"^(?P<video>.+)-(?P<frame>\d+)-(?P<ext>[A-Za-z0-9]+)\.png$")


def lightly_dir(root: Path) -> Path:
    """The ``.lightly/`` folder of a LIGHTLY datasource root (or the folder itself)."""
    root = Path(root)
    return root if root.name == ".lightly" else root / ".lightly"


def json_name(filename: str) -> PurePosixPath:
    """A sample's JSON file name: its relative path with ``.json`` for its extension."""
    p = PurePosixPath(filename.replace("\\", "/").lstrip("/"))
    return p.with_suffix(".json") if p.suffix else p.with_name(p.name + ".json")


def read_json(path: Path, kind: type = object) -> Any:
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
