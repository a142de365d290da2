"""Unit tests of the selection engine (lightly_worker.selection): fast, CPU only."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lightly_protocol.models import SelectionConfigV4
from lightly_worker.selection import (
    HAVE_NUMBA,
    PredictionTask,
    SelectionError,
    SelectionInputs,
    classification_scores,
    kcenter_greedy,
    load_lightly_inputs,
    select,
)
from lightly_worker.selection.kcenter import KCenterState

BACKENDS = ["torch", *(["numba"] if HAVE_NUMBA else [])]


def cfg(*strategies: tuple[dict[str, Any], dict[str, Any]], **kw: Any) -> SelectionConfigV4:
    if "n_samples" not in kw and "proportion_samples" not in kw:
        kw["n_samples"] = -1
    return SelectionConfigV4.model_validate({"strategies": [{"input": i, "strategy": s} for i, s in strategies], **kw})


EMB = {"type": "EMBEDDINGS"}
DIV = {"type": "DIVERSITY"}


def names(n: int) -> list[str]:
    return [f"img_{i}.png" for i in range(n)]


def ref_kcenter(x: np.ndarray, k: int, pool: np.ndarray | None = None) -> tuple[list[int], list[float]]:
    """float64 brute force: first pick farthest from the datapool, else from the mean."""
    x64 = x.astype(np.float64)
    if pool is not None:
        p64 = pool.astype(np.float64)
        mind = ((x64[:, None, :] - p64[None, :, :]) ** 2).sum(2).min(1)
        first_d = math.sqrt(mind.max())
    else:
        mind = np.full(len(x), np.inf)
        first_d = math.inf
    first = int(np.argmax(mind)) if pool is not None else int(np.argmax(((x64 - x64.mean(0)) ** 2).sum(1)))
    picks, dists = [first], [first_d]
    for _ in range(k - 1):
        mind = np.minimum(mind, ((x64 - x64[picks[-1]]) ** 2).sum(1))
        mind[picks] = -1
        i = int(np.argmax(mind))
        picks.append(i)
        dists.append(math.sqrt(mind[i]))
    return picks, dists


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ---------------------------------------------------------------- k-center


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_pool", [False, True])
def test_kcenter_matches_float64_reference(backend: str, seed: int, with_pool: bool) -> None:
    rng = np.random.default_rng(seed)
    x = unit(rng, 1500, 24)
    pool = unit(rng, 40, 24) if with_pool else None
    res = kcenter_greedy(x, 80, datapool=pool, backend=backend, sync_every=7)
    picks, dists = ref_kcenter(x, 80, pool)
    assert res.picks == picks
    assert res.stop_reason == "n_samples"
    assert np.allclose(res.distances[1:], dists[1:], atol=1e-4)
    assert math.isinf(res.distances[0]) == (not with_pool)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kcenter_minimum_distance_and_exhaustion(backend: str) -> None:
    rng = np.random.default_rng(3)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=np.float32)
    x = (centres[rng.integers(0, 4, 400)] + rng.normal(0, 0.1, (400, 2))).astype(np.float32)
    res = kcenter_greedy(x, 100, min_distance=2.0, backend=backend, sync_every=3)
    assert res.stop_reason == "minimum_distance"
    assert sorted(map(tuple, np.round(x[res.picks] / 10))) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(d > 2.0 for d in res.distances)
    full = kcenter_greedy(x[:30], -1, backend=backend)
    assert sorted(full.picks) == list(range(30)) and full.stop_reason == "exhausted"


def test_select_diversity_fast_path_equals_general_loop() -> None:
    rng = np.random.default_rng(5)
    x = unit(rng, 800, 16)
    pool = unit(rng, 10, 16)
    inputs = SelectionInputs(names(800), embeddings=x, datapool_embeddings=pool, metadata={"w": list(range(800))})
    fast = select(cfg((EMB, DIV), n_samples=50), inputs)
    # a neutral second strategy (strength 0) forces the general greedy loop
    general = select(
        cfg((EMB, DIV), ({"type": "METADATA", "key": "w"}, {"type": "WEIGHTS", "strength": 0.0}), n_samples=50), inputs
    )
    assert fast.selected == general.selected == ref_kcenter(x, 50, pool)[0]
    assert np.allclose(fast.min_distances, general.min_distances, atol=1e-4)


def test_select_minimum_distance_stop_and_datapool() -> None:
    x = np.array([[0.0], [0.1], [5.0], [5.05], [9.0]], dtype=np.float32)
    conf = cfg((EMB, {"type": "DIVERSITY", "stopping_condition_minimum_distance": 1.0}), n_samples=-1)
    res = select(conf, SelectionInputs(names(5), embeddings=x))
    assert sorted(res.selected) == [0, 2, 4] and res.stop_reason == "minimum_distance"
    # the datapool already covers 0 and 9: only the middle cluster is new
    res = select(conf, SelectionInputs(names(5), embeddings=x, datapool_embeddings=np.array([[0.0], [9.0]])))
    assert res.selected == [2] and res.min_distances == pytest.approx([4.0])
    assert res.stop_reason == "minimum_distance"


def test_select_first_pick_is_farthest_from_mean() -> None:
    x = np.array([[0.0], [1.0], [2.0], [10.0]], dtype=np.float32)
    res = select(cfg((EMB, DIV), n_samples=2), SelectionInputs(names(4), embeddings=x))
    assert res.selected == [3, 0]
    assert math.isinf(res.min_distances[0]) and res.min_distances[1] == pytest.approx(10.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kcenter_state_matches_reference(backend: str) -> None:
    rng = np.random.default_rng(9)
    x = unit(rng, 500, 8)
    state = KCenterState(x, backend=backend)
    picks = [int(np.argmax(state.distance_to_mean()))]
    for _ in range(20):
        state.add(picks[-1])
        d = state.min_d2.copy()
        d[picks] = -1
        picks.append(int(np.argmax(d)))
    assert picks == ref_kcenter(x, 21)[0]


def test_unavailable_device_is_a_selection_error() -> None:
    inputs = SelectionInputs(names(3), embeddings=np.eye(3, dtype=np.float32))
    with pytest.raises(SelectionError, match="device 'tpu'"):
        select(cfg((EMB, DIV)), inputs, device="tpu")


# ---------------------------------------------------------------- scalar strategies


def test_threshold_operations_and_removed() -> None:
    inputs = SelectionInputs(names(5), metadata={"t": [1, 2, 3, 4, 5]}, embeddings=np.eye(5, dtype=np.float32))
    for op, kept in [
        ("SMALLER", [0, 1]),
        ("SMALLER_EQUAL", [0, 1, 2]),
        ("BIGGER", [3, 4]),
        ("BIGGER_EQUAL", [2, 3, 4]),
    ]:
        conf = cfg(
            ({"type": "METADATA", "key": "t"}, {"type": "THRESHOLD", "threshold": 3.0, "operation": op}), (EMB, DIV)
        )
        res = select(conf, inputs)
        assert sorted(res.selected) == kept
        assert res.removed_by_threshold == sorted(set(range(5)) - set(kept))


def test_weights_order_and_max_sum() -> None:
    inputs = SelectionInputs(names(5), metadata={"w": [3.0, 1.0, 5.0, 4.0, 2.0]})
    w = {"type": "METADATA", "key": "w"}
    assert select(cfg((w, {"type": "WEIGHTS"})), inputs).selected == [2, 3, 0, 4, 1]
    res = select(cfg((w, {"type": "WEIGHTS", "stopping_condition_max_sum": 9.0})), inputs)
    assert res.selected == [2, 3] and res.stop_reason == "max_sum"
    inverted = select(cfg((w, {"type": "WEIGHTS", "strength": -1.0}), n_samples=2), inputs)
    assert inverted.selected == [1, 4] and inverted.stop_reason == "n_samples"


def test_random_weights_seeded() -> None:
    inputs = SelectionInputs(names(50))

    def run(seed: int) -> list[int]:
        return select(
            cfg(({"type": "RANDOM", "random_seed": seed}, {"type": "WEIGHTS"}), n_samples=10), inputs
        ).selected

    assert run(1) == run(1) != run(2)
    assert len(set(run(3))) == 10


def test_combined_product_of_objectives() -> None:
    # objectives after min-max: a = [1, 0.5, 0], b = [0, 0.5, 1] (floored at 1e-6)
    inputs = SelectionInputs(names(3), metadata={"a": [2.0, 1.0, 0.0], "b": [0.0, 1.0, 2.0]})
    a, b = {"type": "METADATA", "key": "a"}, {"type": "METADATA", "key": "b"}
    both = select(cfg((a, {"type": "WEIGHTS"}), (b, {"type": "WEIGHTS"}), n_samples=1), inputs)
    assert both.selected == [1]  # 0.5 * 0.5 beats 1 * 1e-6
    strong_a = select(cfg((a, {"type": "WEIGHTS", "strength": 3.0}), (b, {"type": "WEIGHTS", "strength": 0.1})), inputs)
    assert strong_a.selected[0] == 0  # 1e-6^0.1 ~ 0.25 > 0.5^3 * 0.5^0.1
    zero = select(cfg((a, {"type": "WEIGHTS", "strength": 0.0}), (b, {"type": "WEIGHTS"})), inputs)
    assert zero.selected == [2, 1, 0]


def test_n_samples_and_proportion() -> None:
    inputs = SelectionInputs(names(10), metadata={"w": list(range(10))})
    w = ({"type": "METADATA", "key": "w"}, {"type": "WEIGHTS"})
    assert len(select(cfg(w, proportion_samples=0.25), inputs).selected) == 3  # 2.5 rounds half up
    assert len(select(cfg(w, n_samples=2, proportion_samples=0.5), inputs).selected) == 2
    assert len(select(cfg(w, n_samples=8, proportion_samples=0.5), inputs).selected) == 5
    res = select(cfg(w, n_samples=-1), inputs)
    assert res.selected == list(range(9, -1, -1)) and res.stop_reason == "exhausted"
    assert select(cfg(w, n_samples=20), inputs).stop_reason == "exhausted"


# ---------------------------------------------------------------- balance, similarity, typicality


def test_balance_target_with_remainder() -> None:
    labels = ["a"] * 8 + ["b"] * 2 + ["c"] * 2
    inputs = SelectionInputs(names(12), metadata={"cls": labels})
    conf = cfg(({"type": "METADATA", "key": "cls"}, {"type": "BALANCE", "target": {"a": 0.5}}), n_samples=4)
    sel = select(conf, inputs).selected
    got = [labels[i] for i in sel]
    assert got.count("a") == 2 and got.count("b") + got.count("c") == 2


def test_balance_uniform_and_input() -> None:
    labels = ["a"] * 10 + ["b"] * 5 + ["c"] * 3
    inputs = SelectionInputs(names(18), metadata={"cls": labels})
    uni = select(
        cfg(({"type": "METADATA", "key": "cls"}, {"type": "BALANCE", "distribution": "UNIFORM"}), n_samples=6), inputs
    )
    assert sorted(labels[i] for i in uni.selected) == ["a", "a", "b", "b", "c", "c"]
    inp = select(
        cfg(({"type": "METADATA", "key": "cls"}, {"type": "BALANCE", "distribution": "INPUT"}), n_samples=18), inputs
    )
    first = [labels[i] for i in inp.selected[:9]]
    assert (first.count("a"), first.count("b")) in [(5, 3), (5, 2), (6, 2)]


def test_balance_predictions_class_distribution() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.1, 0.9], [0.2, 0.8]])
    task = PredictionTask(["cat", "dog"], probs)
    inputs = SelectionInputs(names(5), predictions={"clf": task})
    conf = cfg(
        (
            {"type": "PREDICTIONS", "task": "clf", "name": "CLASS_DISTRIBUTION"},
            {"type": "BALANCE", "target": {"cat": 0.5, "dog": 0.5}},
        ),
        n_samples=2,
    )
    sel = select(conf, inputs).selected
    assert {int(probs[i].argmax()) for i in sel} == {0, 1}


def test_balance_on_some_categories_only() -> None:
    """``input.categories``: BALANCE counts only those classes; the others (birds here) weigh nothing."""
    probs = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.9, 0.05, 0.05], [0.05, 0.9, 0.05]])
    inputs = SelectionInputs(names(5), predictions={"clf": PredictionTask(["cat", "dog", "bird"], probs)})
    every = {"type": "PREDICTIONS", "task": "clf", "name": "CLASS_DISTRIBUTION"}
    some = {**every, "categories": ["cat", "dog"]}
    picked = select(cfg((some, {"type": "BALANCE", "distribution": "UNIFORM"}), n_samples=2), inputs).selected
    assert sorted(picked) == [3, 4]
    with_birds = select(cfg((every, {"type": "BALANCE", "distribution": "UNIFORM"}), n_samples=3), inputs).selected
    assert any(i < 3 for i in with_birds)  # without the restriction a bird image is balanced in
    with pytest.raises(SelectionError, match=r"categories \['fish'\] are not categories of task 'clf'"):
        select(
            cfg(
                ({**every, "categories": ["cat", "fish"]}, {"type": "BALANCE", "distribution": "UNIFORM"}), n_samples=2
            ),
            inputs,
        )


def test_similarity_and_typicality() -> None:
    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]], dtype=np.float32)
    inputs = SelectionInputs(names(4), embeddings=x, query_embeddings={"query_tag": np.array([[0.0, 1.0]])})
    res = select(cfg(({"type": "EMBEDDINGS", "tag_name": "query_tag"}, {"type": "SIMILARITY"})), inputs)
    assert res.selected == [2, 1, 0, 3]
    rng = np.random.default_rng(0)
    dense = rng.normal(0, 0.05, (20, 2))
    sparse = rng.normal(0, 3.0, (5, 2)) + 10
    xt = np.vstack([sparse, dense]).astype(np.float32)
    typ = select(
        cfg((EMB, {"type": "TYPICALITY", "num_nearest_neighbors": 5}), n_samples=5),
        SelectionInputs(names(25), embeddings=xt),
    )
    assert all(i >= 5 for i in typ.selected)


def test_diversity_with_weights_prefers_both() -> None:
    # two far-apart pairs; the heavier member of each pair is picked
    x = np.array([[0.0], [0.01], [10.0], [10.01]], dtype=np.float32)
    inputs = SelectionInputs(names(4), embeddings=x, metadata={"w": [1.0, 2.0, 2.0, 1.0]})
    res = select(cfg((EMB, DIV), ({"type": "METADATA", "key": "w"}, {"type": "WEIGHTS"}), n_samples=2), inputs)
    assert sorted(res.selected) == [1, 2]


# ---------------------------------------------------------------- errors


def test_errors_say_what_to_fix() -> None:
    inputs = SelectionInputs(names(4), metadata={"m": [1.0, None, None, 2.0], "s": ["x", "y", "x", "y"]})
    with pytest.raises(SelectionError, match=r"METADATA key 'm' is missing for 2 sample\(s\)"):
        select(cfg(({"type": "METADATA", "key": "m"}, {"type": "WEIGHTS"})), inputs)
    with pytest.raises(SelectionError, match="METADATA key 'nope' is not available"):
        select(cfg(({"type": "METADATA", "key": "nope"}, {"type": "WEIGHTS"})), inputs)
    with pytest.raises(SelectionError, match="computed by the worker"):
        select(cfg(({"type": "METADATA", "key": "lightly.sharpness"}, {"type": "WEIGHTS"})), inputs)
    with pytest.raises(SelectionError, match="categorical"):
        select(cfg(({"type": "METADATA", "key": "s"}, {"type": "WEIGHTS"})), inputs)
    with pytest.raises(SelectionError, match="needs embeddings"):
        select(cfg((EMB, DIV)), inputs)
    with pytest.raises(SelectionError, match="predictions of task 'det'"):
        select(cfg(({"type": "SCORES", "task": "det", "score": "uncertainty_entropy"}, {"type": "WEIGHTS"})), inputs)
    with pytest.raises(SelectionError, match="THRESHOLD needs 'threshold' and 'operation'"):
        select(cfg(({"type": "METADATA", "key": "m"}, {"type": "THRESHOLD"})), inputs)
    with pytest.raises(SelectionError, match=r"target classes \['z'\] do not occur"):
        select(cfg(({"type": "METADATA", "key": "s"}, {"type": "BALANCE", "target": {"z": 0.5}})), inputs)
    emb = SelectionInputs(names(4), embeddings=np.eye(4, dtype=np.float32), datapool_embeddings=np.ones((2, 3)))
    with pytest.raises(SelectionError, match="same embedding model"):
        select(cfg((EMB, DIV)), emb)
    with pytest.raises(SelectionError, match="query tag"):
        select(cfg(({"type": "EMBEDDINGS", "tag_name": "qqq"}, {"type": "SIMILARITY"})), emb)
    nan = SelectionInputs(names(2), embeddings=np.array([[0.0, np.nan], [1.0, 1.0]], dtype=np.float32))
    with pytest.raises(SelectionError, match="not finite"):
        select(cfg((EMB, DIV)), nan)


# ---------------------------------------------------------------- .lightly readers


def write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_metadata_reader(tmp_path: Path) -> None:
    md = tmp_path / ".lightly" / "metadata"
    write(
        md / "schema.json",
        [
            {
                "name": "Temperature",
                "path": "weather.temperature",
                "defaultValue": 0.0,
                "valueDataType": "NUMERIC_FLOAT",
            },
            {"name": "Scene", "path": "scene", "defaultValue": "undefined", "valueDataType": "CATEGORICAL_STRING"},
        ],
    )
    files = ["a.png", "sub/b.jpg", "c.png", "vid-07-mp4.png"]
    write(
        md / "a.json",
        {"file_name": "a.png", "type": "image", "metadata": {"weather": {"temperature": 23.5}, "scene": "city"}},
    )
    write(md / "sub" / "b.json", {"file_name": "sub/b.jpg", "type": "image", "metadata": {"scene": "road"}})
    write(
        md / "vid.json",
        {"file_name": "vid.mp4", "type": "video", "metadata": {"weather": {"temperature": 5}, "scene": "x"}},
    )
    conf = cfg(
        ({"type": "METADATA", "key": "weather.temperature"}, {"type": "WEIGHTS"}),
        ({"type": "METADATA", "key": "Scene"}, {"type": "BALANCE", "distribution": "UNIFORM"}),
        ({"type": "METADATA", "key": "lightly.sharpness"}, {"type": "WEIGHTS"}),
    )
    parts = load_lightly_inputs(tmp_path, files, conf)
    got = SelectionInputs(files, **parts)
    assert got.metadata["weather.temperature"] == [23.5, 0.0, 0.0, 5.0]
    assert got.metadata["Scene"] == ["city", "road", "undefined", "x"]
    assert "lightly.sharpness" not in got.metadata and not got.predictions
    got.metadata["lightly.sharpness"] = [1.0, 2.0, 3.0, 4.0]
    assert len(select(conf, got).selected) == 4


def test_predictions_reader_and_scores(tmp_path: Path) -> None:
    pr = tmp_path / ".lightly" / "predictions"
    write(pr / "tasks.json", ["weather", "det"])
    write(
        pr / "weather" / "schema.json",
        {"task_type": "classification", "categories": [{"id": 0, "name": "sun"}, {"id": 1, "name": "rain"}]},
    )
    write(
        pr / "det" / "schema.json",
        {"task_description": "object-detection", "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "bus"}]},
    )
    files = ["x/a.png", "b.png", "c.png"]
    clf = [[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]
    for f, p in zip(files, clf, strict=True):
        write(
            pr / "weather" / f.replace(".png", ".json"),
            {"file_name": f, "predictions": [{"category_id": int(np.argmax(p)), "probabilities": p}]},
        )
    dets = [
        [
            {"category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.9},
            {"category_id": 2, "bbox": [0, 0, 2, 2], "score": 0.6},
        ],
        [],
        [{"category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.99}],
    ]
    for f, d in zip(files, dets, strict=True):
        write(pr / "det" / f.replace(".png", ".json"), {"file_name": f, "predictions": d})
    conf = cfg(
        ({"type": "SCORES", "task": "weather", "score": "uncertainty_entropy"}, {"type": "WEIGHTS"}),
        (
            {"type": "SCORES", "task": "det", "score": "object_frequency"},
            {"type": "THRESHOLD", "threshold": 0.95, "operation": "BIGGER_EQUAL"},
        ),
        (
            {"type": "PREDICTIONS", "task": "det", "name": "CATEGORY_COUNT"},
            {"type": "BALANCE", "distribution": "INPUT"},
        ),
    )
    got = SelectionInputs(files, **load_lightly_inputs(tmp_path, files, conf))
    w, det = got.predictions["weather"], got.predictions["det"]
    assert w.scores["uncertainty_entropy"] == pytest.approx([1.0, 0.4689956, 0.7219281], abs=1e-6)
    assert w.scores["uncertainty_margin"] == pytest.approx([1.0, 0.2, 0.4])
    assert w.scores["uncertainty_least_confidence"] == pytest.approx([1.0, 0.2, 0.4])
    assert det.categories == ["car", "bus"]
    # Lightly's object_frequency: 2, 0 and 1 objects mapped from [0, 2] to [0.9, 1]
    assert det.scores["object_frequency"] == pytest.approx([1.0, 0.9, 0.95])
    assert det.category_counts is not None and det.category_counts.tolist() == [[1, 1], [0, 0], [1, 0]]
    assert det.probabilities[0] == pytest.approx([0.9 + 0.4, 0.1 + 0.6])
    assert det.scores["uncertainty_least_confidence"] == pytest.approx([0.8, 0.0, 0.02])
    res = select(conf, got)
    assert res.removed_by_threshold == [1] and res.selected == [0, 2]
    assert classification_scores(np.array([[1.0, 0.0]]))["uncertainty_entropy"].tolist() == [0.0]
    with pytest.raises(SelectionError, match="object_frequency"):
        select(cfg(({"type": "SCORES", "task": "weather", "score": "object_frequency"}, {"type": "WEIGHTS"})), got)


def test_predictions_reader_errors(tmp_path: Path) -> None:
    pr = tmp_path / ".lightly" / "predictions"
    write(pr / "tasks.json", ["clf"])
    write(
        pr / "clf" / "schema.json",
        {"task_type": "classification", "categories": [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}]},
    )
    write(pr / "clf" / "a.json", {"file_name": "a.png", "predictions": [{"category_id": 0}]})
    conf = cfg(({"type": "SCORES", "task": "clf", "score": "uncertainty_margin"}, {"type": "WEIGHTS"}))
    with pytest.raises(SelectionError, match=r"no prediction file for 2 sample\(s\)"):
        load_lightly_inputs(tmp_path, ["a.png", "b.png", "c.png"], conf)
    other = cfg(({"type": "SCORES", "task": "other", "score": "uncertainty_margin"}, {"type": "WEIGHTS"}))
    with pytest.raises(SelectionError, match="not listed in"):
        load_lightly_inputs(tmp_path, ["a.png"], other)
    write(pr / "clf" / "a.json", {"file_name": "a.png", "predictions": [{"category_id": 7}]})
    with pytest.raises(SelectionError, match="category_id 7"):
        load_lightly_inputs(tmp_path, ["a.png"], conf)
