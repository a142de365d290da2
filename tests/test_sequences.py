"""Sequence selection with per-frame inputs: METADATA, PREDICTIONS and SCORES aggregated over a sequence
(the mean of numbers and scores, summed class counts for BALANCE), by hand and through the worker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lightly_protocol.models import SelectionConfigV4
from lightly_worker.embed import frame_name
from lightly_worker.selection import PredictionTask
from lightly_worker.sequences import COUNTS_TASK, SequenceError, sequence_inputs, split_sequences
from test_worker_cli import local_run


def _config(*strategies: dict[str, Any], n_samples: int = 2) -> SelectionConfigV4:
    return SelectionConfigV4.model_validate({"nSamples": n_samples, "strategies": list(strategies)})


def test_per_frame_values_become_one_value_per_sequence() -> None:
    names = [f"v-{i}-mp4.png" for i in range(4)]  # two sequences of 2 frames: frames 0-1 and 2-3
    found, _ = split_sequences(names, 2)
    weather = ["rain", "sun", "rain", "rain"]
    extra = {
        "metadata": {"speed": [1.0, 3.0, 10, 20], "weather": weather},
        "predictions": {
            "cls": PredictionTask(
                categories=["cat", "dog"],
                probabilities=np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.0, 1.0]]),
            )
        },
    }
    balance = {"input": {"type": "METADATA", "key": "weather"}, "strategy": {"type": "BALANCE", "target": {"sun": 1.0}}}
    weights = {"input": {"type": "METADATA", "key": "speed"}, "strategy": {"type": "WEIGHTS"}}
    config, parts = sequence_inputs(_config(balance, weights), extra, found)

    assert parts["metadata"]["speed"] == [2.0, 15.0]  # (1 + 3) / 2, (10 + 20) / 2
    assert parts["metadata"]["weather"] == ["rain", "rain"]  # a categorical value is left as it is
    counted = config.strategies[0].input
    assert (counted.type, counted.task, counted.name, counted.key) == (
        "PREDICTIONS",
        "sequence-metadata-counts:weather",
        "CATEGORY_COUNT",
        None,
    )
    assert counted.task == COUNTS_TASK.format(key="weather")
    counts = parts["predictions"][counted.task]
    assert counts.categories == ["rain", "sun"]
    np.testing.assert_array_equal(counts.counts(), [[1, 1], [2, 0]])
    assert config.strategies[1] == _config(balance, weights).strategies[1]  # WEIGHTS reads the mean

    cls = parts["predictions"]["cls"]
    np.testing.assert_allclose(cls.probabilities, [[1.4, 0.6], [0.2, 1.8]])  # summed distributions
    np.testing.assert_array_equal(cls.counts(), [[2, 0], [0, 2]])  # frame 1 ties: its first class, cat
    # least confidence (1 - top) * C / (C - 1) per frame: 0.2, 1.0, 0.4, 0.0; the sequences' means
    np.testing.assert_allclose(cls.score("uncertainty_least_confidence"), [0.6, 0.2])


def test_a_frame_without_a_value_is_named() -> None:
    found, _ = split_sequences([f"v-{i}-mp4.png" for i in range(2)], 2)
    balance = {"input": {"type": "METADATA", "key": "weather"}, "strategy": {"type": "BALANCE"}}
    with pytest.raises(SequenceError, match=r"METADATA key 'weather' is missing for a frame of sequence v.mp4\[0:2\]"):
        sequence_inputs(_config(balance), {"metadata": {"weather": ["rain", None]}}, found)
    weights = {"input": {"type": "METADATA", "key": "speed"}, "strategy": {"type": "WEIGHTS"}}
    _, parts = sequence_inputs(_config(weights), {"metadata": {"speed": [1.0, None]}}, found)
    assert parts["metadata"]["speed"] == [None]  # the selection then says which sample misses it


def _videos_with_metadata(root: Path, values: dict[str, list[Any]], key: str) -> None:
    """Two videos (12 and 8 frames, 10 fps) and a METADATA value ``key`` for each of their frames."""
    from test_embed import make_video

    for video, n in (("clips/a.mp4", 12), ("clips/b.mp4", 8)):
        make_video(root / "in" / video, n)
        for frame, value in enumerate(values[video]):
            path = root / "lightly" / ".lightly" / "metadata" / frame_name(video, frame, n).replace(".png", ".json")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"metadata": {key: value}}))


def _one_sequence(tmp_path: Path, name: str, strategy: dict[str, Any]) -> list[dict[str, Any]]:
    body = {
        "worker_config": {"selected_sequence_length": 4},
        "selection_config": {"n_samples": 4, "strategies": [strategy]},
    }
    r = local_run(tmp_path / "in", tmp_path / name, config=body, lightly=tmp_path / "lightly", input_size=32)
    assert r.returncode == 0, r.stderr[-3000:]
    info: list[dict[str, Any]] = json.loads((tmp_path / name / "data" / "sequence_information.json").read_text())
    return info


@pytest.mark.parametrize("kind", ["numbers", "categories"])
def test_a_sequence_run_selects_on_its_frames_aggregated_values(tmp_path: Path, kind: str) -> None:
    """Sequences: a.mp4 [0:4], [4:8], [8:12], b.mp4 [0:4], [4:8]. WEIGHTS on a number picks the sequence of
    the highest mean (b [4:8]: 5 in every frame), not the one with the highest frame (a [0:4]: 9, 0, 0, 0);
    BALANCE towards "rain" picks the sequence with the most rainy frames (b [4:8]: 4), not the first one
    whose frames are mostly rainy (a [0:4]: 3 of 4), which a majority vote per sequence would tie with."""
    pytest.importorskip("av", reason="PyAV (av) reads videos")
    if kind == "numbers":
        values = {"clips/a.mp4": [9, 0, 0, 0] + [1] * 8, "clips/b.mp4": [1] * 4 + [5] * 4}
        strategy = {"input": {"type": "METADATA", "key": "speed"}, "strategy": {"type": "WEIGHTS"}}
        _videos_with_metadata(tmp_path, values, "speed")
    else:
        values = {"clips/a.mp4": ["rain"] * 3 + ["sun"] * 9, "clips/b.mp4": ["sun"] * 4 + ["rain"] * 4}
        target = {"rain": 1.0}
        strategy = {"input": {"type": "METADATA", "key": "weather"}, "strategy": {"type": "BALANCE", "target": target}}
        _videos_with_metadata(tmp_path, values, "weather")
    info = _one_sequence(tmp_path, kind, strategy)
    assert [(s["video_name"], s["frame_indices"]) for s in info] == [("clips/b.mp4", [4, 5, 6, 7])]


def test_proportion_samples_counts_every_frame_of_the_videos(tmp_path: Path) -> None:
    """Lightly: ``proportion_samples`` of the frames in the dataset, rounded down to whole sequences. 22 frames
    (a.mp4: 14, of which 2 are a tail; b.mp4: 8) x 0.37 = 8.14 -> 8 frames, 2 sequences of 4 (counting only
    the 20 frames in sequences would give 7.4 -> 1 sequence)."""
    pytest.importorskip("av", reason="PyAV (av) reads videos")
    from test_embed import make_video

    make_video(tmp_path / "in" / "a.mp4", 14)
    make_video(tmp_path / "in" / "b.mp4", 8)
    strategies = [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]
    body = {
        "worker_config": {"selected_sequence_length": 4},
        "selection_config": {"proportion_samples": 0.37, "strategies": strategies},
    }
    r = local_run(tmp_path / "in", tmp_path / "out", config=body, input_size=32)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads((tmp_path / "out" / "data" / "sequence_information.json").read_text())
    assert len(info) == 2
    assert len((tmp_path / "out" / "filenames" / "selected_filenames.txt").read_text().split()) == 8
