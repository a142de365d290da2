"""Sequence selection (``selected_sequence_length`` > 1), as Lightly's worker documents it.

Each video's frames are split into consecutive sequences of that length (frame 0..L-1, L..2L-1, ...; a
sequence with a frame missing, corrupt or left out, and a video's incomplete tail, are not sequences).
A sequence's embedding is the mean of its frames' embeddings (L2-normalised again when the run
normalises). The selection runs on the sequences, with ``n_samples / L`` of them (``n_samples`` must be a
multiple of L; ``proportion_samples`` of the frames is rounded down to a multiple of L), and selects all
frames of each chosen sequence. ``data/sequence_information.json`` lists the sequences chosen:
``[{"video_name", "frame_names", "frame_indices", "frame_timestamps_pts"}]``.

Only embedding-based strategies (DIVERSITY, TYPICALITY, SIMILARITY) and RANDOM weights make sense on a
sequence; a per-frame input (METADATA, PREDICTIONS, SCORES) is refused with what to use instead.
Images in the input are not part of any sequence: they are left out, with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from lightly_protocol.models import SelectionConfigV4

from .sources.base import FRAME_NAME

#: inputs a sequence has (a per-frame input would need an aggregation Lightly does not document)
SEQUENCE_INPUTS = frozenset({"EMBEDDINGS", "RANDOM"})


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
    for i, entry in enumerate(selection.strategies):
        if entry.input.type not in SEQUENCE_INPUTS:
            raise SequenceError(
                f"selection.strategies[{i}]: input {entry.input.type} is per frame; sequence selection "
                f"(selected_sequence_length {length}) works on EMBEDDINGS (DIVERSITY, TYPICALITY, SIMILARITY) "
                "and RANDOM; leave the strategy out or set selected_sequence_length 1"
            )
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
    sequences: list[Sequence], pts: dict[str, tuple[int, ...]], names: list[str]
) -> list[dict[str, Any]]:
    """``sequence_information.json``'s entries of the chosen ``sequences`` (``names``: the candidates)."""
    out = []
    for s in sequences:
        video_pts = pts.get(s.video, ())
        out.append(
            {
                "video_name": s.video,
                "frame_names": [names[p] for p in s.positions],
                "frame_indices": list(s.frames),
                "frame_timestamps_pts": [int(video_pts[f]) if f < len(video_pts) else None for f in s.frames],
            }
        )
    return out
