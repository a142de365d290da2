"""Generated sample images: scenes of coloured shapes with many near-repeats (so a diverse selection
is visibly different from the first N), used by the demo, the tests and the end-to-end suite."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def scene(i: int, rng: np.random.Generator, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """Scene ``i``: a third of them are near-repeats of one kind."""
    palettes = [(200, 60, 60), (60, 160, 80), (60, 90, 200), (220, 180, 40), (150, 70, 170)]
    w, h = size
    kind = int(rng.integers(0, 5)) if i % 3 else 0
    img = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 60, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 4))):
        x, y = (int(v) for v in rng.integers(0, max(1, min(w, h) - 10), 2))
        s = int(rng.integers(max(4, w // 8), max(5, w * 5 // 16)))
        color = tuple(int(min(255, c + rng.integers(-25, 25))) for c in palettes[kind])
        if kind % 2:
            draw.ellipse((x, y, x + s, y + s), fill=color)
        else:
            draw.rectangle((x, y, x + s, y + s // 2), fill=color)
    return img


def make_dataset(root: Path, n: int = 60, seed: int = 7) -> None:
    """``n`` JPEG scenes in ``root``, plus an exact duplicate and a corrupt (truncated) file."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        scene(i, rng).save(root / f"scene_{i:03d}.jpg", quality=90)
    (root / "scene_copy.jpg").write_bytes((root / "scene_001.jpg").read_bytes())
    (root / "scene_broken.jpg").write_bytes((root / "scene_002.jpg").read_bytes()[:300])


def dataset_files(n: int, size: tuple[int, int] = (64, 48), seed: int = 7) -> dict[str, bytes]:
    """``n`` small JPEG scenes as ``{filename: bytes}`` (e.g. for a ConfigMap's binaryData)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        buf = io.BytesIO()
        scene(i, rng, size).save(buf, format="JPEG", quality=85)
        out[f"scene_{i:03d}.jpg"] = buf.getvalue()
    return out
