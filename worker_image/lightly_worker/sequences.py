"""Sequence selection (``selected_sequence_length`` > 1), as Lightly's worker documents it.

Each video's frames are split into consecutive sequences of that length (frame 0..L-1, L..2L-1, ...; a
sequence with a frame missing, corrupt or left out, and a video's incomplete tail, are not sequences).
A sequence's embedding is the mean of its frames' embeddings (L2-normalised again when the run
normalises), as Lightly documents. The selection runs on the sequences, with ``n_samples / L`` of them
(``n_samples`` must be a multiple of L; ``proportion_samples`` of all the input's video frames is rounded
down to a multiple of L), and selects all frames of each chosen sequence. ``data/sequence_information.json`` lists the
sequences chosen, in Lightly's shape: ``[{"video_name", "frame_names", "frame_timestamps_pts",
"frame_timestamps_sec", "frame_indices"}]`` (seconds: pts x the video stream's time base).

Per-frame inputs are aggregated over a sequence (Lightly's documentation only says how embeddings are):
a numeric METADATA value and a SCORES score are the mean over the sequence's frames; for BALANCE the
class counts are summed (PREDICTIONS: the frames' class distributions or category counts; categorical
METADATA: how many frames have each value). A frame without a value leaves its sequence without one
(the selection then names it). Images in the input are not part of any sequence: they are left out,
with a warning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from lightly_protocol.models import SelectionConfigV4

from .selection import PredictionTask
from .selection.scores import classification_scores
from .sources.base import FRAME_NAME

if TYPE_CHECKING:
    from .embed.files import VideoTiming


class SequenceError(ValueError):
    """A sequence selection that cannot run; the message says what to change."""


@dataclass(frozen=True)
class Sequence:
    video: str  # the video's name in the input (``dir/clip.mp4``)
    frames: tuple[int, ...]  # frame indices, consecutive
    positions: tuple[int, ...]  # the frames' positions among the run's candidates

    @property
    def name(self) -> str:
        return f"{self.video}[{self.frames[0]}:{self.frames[-1] + 1}]"


def frame_of(name: str) -> tuple[str, int] | None:
    """(video name, frame index) of a frame sample name (``dir/clip-007-mp4.png``), None for an image."""
    m = FRAME_NAME.match(name)
    if m is None:
        return None
    return f"{m['stem']}.{m['ext']}", int(m["frame"])


def split_sequences(candidates: list[str], length: int) -> tuple[list[Sequence], int]:
    """The complete sequences of ``length`` frames among ``candidates`` (by video, then frame), and how
    many candidates are images (in no sequence)."""
    by_video: dict[str, dict[int, int]] = {}
    images = 0
    for pos, name in enumerate(candidates):
        frame = frame_of(name)
        if frame is None:
            images += 1
            continue
        by_video.setdefault(frame[0], {})[frame[1]] = pos
    out: list[Sequence] = []
    for video in sorted(by_video):
        frames = by_video[video]
        for start in range(0, max(frames) + 1, length):
            span = range(start, start + length)
            if all(f in frames for f in span):
                out.append(Sequence(video, tuple(span), tuple(frames[f] for f in span)))
    return out, images


def sequence_embeddings(emb: np.ndarray, sequences: list[Sequence], normalize: bool) -> np.ndarray:
    """The mean of each sequence's frame embeddings (re-normalised to unit length with ``normalize``)."""
    out = np.stack([emb[list(s.positions)].mean(axis=0) for s in sequences]).astype(np.float32)
    if normalize:
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


def sequence_selection(selection: SelectionConfigV4, length: int, n_frames: int) -> SelectionConfigV4:
    """The selection config over sequences: ``n_samples`` frames as ``n_samples / length`` sequences."""
    if selection.n_samples is not None and selection.n_samples >= 0:
        if selection.n_samples % length:
            raise SequenceError(
                f"n_samples {selection.n_samples} is not a multiple of selected_sequence_length {length}: "
                f"it counts frames, and whole sequences are selected (e.g. n_samples "
                f"{max(length, selection.n_samples - selection.n_samples % length)})"
            )
        count = selection.n_samples // length
    elif selection.proportion_samples is not None:
        count = int(n_frames * float(selection.proportion_samples)) // length
    else:
        count = -1
    return selection.model_copy(update={"n_samples": count, "proportion_samples": None, "lightly_path_regex": None})


def sequence_information(
    sequences: list[Sequence], timings: Mapping[str, VideoTiming], names: list[str]
) -> list[dict[str, Any]]:
    """``sequence_information.json``'s entries of the chosen ``sequences`` (``names``: the candidates), keys
    in the order of Lightly's example; a time that could not be read is null."""
    out = []
    for s in sequences:
        timing = timings.get(s.video)
        video_pts = timing.pts if timing is not None else ()
        out.append(
            {
                "video_name": s.video,
                "frame_names": [names[p] for p in s.positions],
                "frame_timestamps_pts": [int(video_pts[f]) if f < len(video_pts) else None for f in s.frames],
                "frame_timestamps_sec": [timing.seconds(f) if timing is not None else None for f in s.frames],
                "frame_indices": list(s.frames),
            }
        )
    return out


# ---------------------------------------------------------------- per-frame inputs, aggregated per sequence

#: the prediction task name a categorical METADATA key's per-sequence value counts go by (BALANCE)
COUNTS_TASK = "sequence-metadata-counts:{key}"


def sequence_inputs(
    selection: SelectionConfigV4, extra: Mapping[str, Any], sequences: list[Sequence]
) -> tuple[SelectionConfigV4, dict[str, Any]]:
    """The METADATA and PREDICTIONS inputs (``extra``: ``SelectionInputs`` keyword arguments, one value per
    frame candidate) aggregated per sequence, and the selection config that reads them: a BALANCE on
    categorical METADATA reads the sequences' value counts, as a prediction task of category counts."""
    frames: dict[str, list[Any]] = dict(extra.get("metadata", {}))
    metadata = {k: [_mean([v[p] for p in s.positions]) for s in sequences] for k, v in frames.items()}
    predictions = {t: _task_per_sequence(pt, sequences) for t, pt in extra.get("predictions", {}).items()}
    strategies = []
    for i, entry in enumerate(selection.strategies):
        inp = entry.input
        if entry.strategy.type == "BALANCE" and inp.type == "METADATA" and inp.key and inp.key in frames:
            task = COUNTS_TASK.format(key=inp.key)
            predictions[task] = _value_counts(frames[inp.key], sequences, inp.key)
            categories = _known_categories(inp.categories, predictions[task].categories, inp.key, i)
            counted: dict[str, Any] = {"type": "PREDICTIONS", "task": task, "name": "CATEGORY_COUNT", "key": None}
            counted["categories"] = categories
            entry = entry.model_copy(update={"input": inp.model_copy(update=counted)})
        strategies.append(entry)
    config = selection.model_copy(update={"strategies": strategies})
    return config, {"metadata": metadata, "predictions": predictions}


def _mean(values: list[Any]) -> Any:
    """A sequence's value of a numeric METADATA key: its frames' mean (None when a frame has none; a
    frame's non-numeric value as it is, for the selection to say the key is categorical)."""
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        if isinstance(v, str) or not isinstance(v, int | float | bool | np.number):
            return v
    return float(np.mean(np.asarray(values, dtype=np.float64)))


def _task_per_sequence(pt: PredictionTask, sequences: list[Sequence]) -> PredictionTask:
    """A prediction task per sequence: class distributions and counts summed, every score the mean."""
    probs = np.asarray(pt.probabilities, dtype=np.float64)
    rows = [list(s.positions) for s in sequences]
    scores = dict(pt.scores)
    if pt.task_type == "classification":
        scores = {**classification_scores(probs), **scores}
    try:
        counts: np.ndarray | None = pt.counts()
    except ValueError:  # an object-detection task without counts: only its distributions and scores
        counts = None
    return PredictionTask(
        categories=list(pt.categories),
        probabilities=np.stack([probs[r].sum(0) for r in rows]) if rows else probs[:0],
        task_type=pt.task_type,
        category_counts=None if counts is None else np.stack([counts[r].sum(0) for r in rows]),
        scores={
            name: np.array([np.asarray(v, dtype=np.float64)[r].mean() for r in rows]) for name, v in scores.items()
        },
    )


def _value_counts(values: list[Any], sequences: list[Sequence], key: str) -> PredictionTask:
    """How many of each sequence's frames have each value of a categorical METADATA key, as category counts
    (labels as the selection writes them: ``true``/``false``, whole numbers without ``.0``)."""
    labels = [None if v is None or (isinstance(v, float) and math.isnan(v)) else _label(v) for v in values]
    names = sorted({x for x in labels if x is not None})
    pos = {c: j for j, c in enumerate(names)}
    counts = np.zeros((len(sequences), len(names)))
    for row, s in enumerate(sequences):
        for p in s.positions:
            label = labels[p]
            if label is None:
                raise SequenceError(
                    f"METADATA key {key!r} is missing for a frame of sequence {s.name}; give every sample a "
                    "value or a defaultValue in .lightly/metadata/schema.json"
                )
            counts[row, pos[label]] += 1.0
    return PredictionTask(categories=names, probabilities=counts, task_type="object-detection", category_counts=counts)


def _label(v: Any) -> str:
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _known_categories(wanted: list[str] | None, known: list[str], key: str | None, index: int) -> list[str] | None:
    """A BALANCE input's ``categories`` among the values the key has (METADATA skips the others)."""
    if not wanted:
        return None
    keep = [c for c in wanted if c in known]
    if not keep:
        raise SequenceError(
            f"selection.strategies[{index}]: none of categories {wanted} occurs in METADATA key {key!r}"
        )
    return keep
