"""Configured paths stay inside their roots: resolved (after symlinks) and refused when they leave.

A run's config names files (``relevant_filenames_file``, ``embeddings``, prediction tasks, query
tags) relative to a root the worker owns (the LIGHTLY datasource's ``.lightly/``, the mounts). A
path that is absolute, climbs out with ``..``, or reaches out through a symlink is refused with a
message that names the setting and the rule, never the content of the file it points at.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath


class PathOutsideRoot(ValueError):
    """A configured path that leaves its root; the message says which setting and what is allowed."""


def inside(root: Path, rel: str, what: str, where: str | None = None) -> Path:
    """``root / rel`` as a real path, or PathOutsideRoot when it is absolute or not inside ``root``.

    ``root`` itself may be (or lie under) a symlink; it is resolved first. ``what`` names the setting
    in the message, ``where`` the root as the user knows it (default: the root's path).
    """
    shown = where or str(root)
    text = str(rel).replace("\\", "/")
    if text.startswith("/") or PureWindowsPath(str(rel)).drive or "\x00" in text:
        raise PathOutsideRoot(f"{what} must be a path relative to {shown}, not an absolute path")
    real_root = os.path.realpath(root)
    target = os.path.realpath(os.path.join(real_root, *PurePosixPath(text).parts))
    if target != real_root and not target.startswith(real_root.rstrip(os.sep) + os.sep):
        how = "climbs out with '..'" if ".." in PurePosixPath(text).parts else "leads outside it through a symlink"
        raise PathOutsideRoot(f"{what} {str(rel)!r} must stay inside {shown}; it {how}")
    return Path(target)


def is_inside(real_root: str, path: str) -> bool:
    """Whether the real path of ``path`` is ``real_root`` or lies under it (``real_root`` already real)."""
    target = os.path.realpath(path)
    return target == real_root or target.startswith(real_root.rstrip(os.sep) + os.sep)
