"""Active-learning scores of class probabilities (a leaf module: ``types`` and ``lightly_io`` use it)."""

from __future__ import annotations

import numpy as np

__all__ = ["SCORE_NAMES", "classification_scores"]

SCORE_NAMES = ("uncertainty_least_confidence", "uncertainty_margin", "uncertainty_entropy")


def classification_scores(probs: np.ndarray) -> dict[str, np.ndarray]:
    """Uncertainty scores of rows of class probabilities (N x C), each in [0, 1]."""
    p = np.asarray(probs, dtype=np.float64)
    n, c = p.shape
    if c < 2:
        z = np.zeros(n)
        return {name: z.copy() for name in SCORE_NAMES}
    total = p.sum(1, keepdims=True)
    p = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    top = np.sort(p, axis=1)[:, ::-1]
    least = (1.0 - top[:, 0]) * c / (c - 1)
    margin = 1.0 - (top[:, 0] - top[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log(p), 0.0).sum(1) / np.log(c)
    empty = total[:, 0] <= 0
    least[empty] = margin[empty] = ent[empty] = 0.0
    return {
        "uncertainty_least_confidence": np.clip(least, 0, 1),
        "uncertainty_margin": np.clip(margin, 0, 1),
        "uncertainty_entropy": np.clip(ent, 0, 1),
    }
