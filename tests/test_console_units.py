"""The web console's pure parts, computed by hand: progress, stage timings, durations, the session cookie and
CSRF tokens, the schedule form's field mapping, operator worker names, a tag's set bits."""

from __future__ import annotations

import json
import time

import pytest
from lightly_protocol.names import k8s_worker_name
from lightly_server.console.run_view import STAGES, progress_percent, run_duration_ms, stage_timings
from lightly_server.console.schedule import FieldErrors, build_requests, field_of
from lightly_server.console.session import SessionKeys
from lightly_server.console.workers import operator_ref
from lightly_server.store.browse import _set_bits


def test_progress_runs_along_the_stages_and_is_full_at_any_end() -> None:
    assert progress_percent("STARTED") == 0
    assert progress_percent(STAGES[len(STAGES) // 2]) == round(100 * (len(STAGES) // 2) / len(STAGES))
    assert progress_percent("FAILED") == 100 and progress_percent("COMPLETED") == 100
    assert progress_percent("NOT_A_STATE") == 0


def test_duration_is_until_now_while_running_and_until_the_end_after() -> None:
    assert run_duration_ms("EMBEDDING", 1_000, 5_000, 9_000) == 8_000
    assert run_duration_ms("COMPLETED", 1_000, 5_000, 9_000) == 4_000


def _e(ts: int, state: str) -> str:
    return json.dumps({"ts": ts, "state": state, "msg": "x", "level": "INFO"})


def test_stage_timings_from_state_changes_in_the_log() -> None:
    log = [_e(100, "STARTED"), _e(150, "STARTED"), _e(400, "EMBEDDING"), _e(1000, "SAMPLING")]
    running = stage_timings(log, "SAMPLING", 1200, 5000)
    assert [(s.state, s.started_at, s.duration_ms) for s in running] == [
        ("STARTED", 100, 300),
        ("EMBEDDING", 400, 600),
        ("SAMPLING", 1000, None),  # still in it
    ]
    ended = stage_timings(log, "COMPLETED", 1800, 5000)
    assert ended[-1].duration_ms == 800  # the last stage lasted until the run ended
    assert stage_timings([], "STARTED", 0, 0) == []


def test_a_session_cookie_opens_only_with_its_key_and_not_when_tampered() -> None:
    keys = SessionKeys(b"k" * 32)
    cookie = keys.seal("my-token")
    assert "my-token" not in cookie
    assert keys.open(cookie) == "my-token"
    assert SessionKeys(b"j" * 32).open(cookie) is None  # another server's key
    assert keys.open(cookie[:-2] + ("A" if cookie[-2] != "A" else "B") + cookie[-1]) is None
    assert keys.open(None) is None and keys.open("é") is None


def test_a_session_cookie_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = SessionKeys(b"k" * 32)
    cookie = keys.seal("t")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 13 * 3600)  # past SESSION_TTL_S (12 h)
    assert keys.open(cookie) is None


def test_csrf_token_belongs_to_one_browser_secret() -> None:
    keys = SessionKeys(b"k" * 32)
    token = keys.csrf_token("browser-a")
    assert keys.csrf_ok("browser-a", token)
    assert not keys.csrf_ok("browser-b", token)
    assert not keys.csrf_ok(None, token) and not keys.csrf_ok("browser-a", None) and not keys.csrf_ok("browser-a", "")


def test_problems_land_beside_the_field_they_name() -> None:
    assert field_of("selection.strategies[0]: strategy X") == "selection"
    assert field_of("docker.relevant_filenames_file must be") == "docker"
    assert field_of("priority: Input should be 'LOW'") == "priority"
    assert field_of("runsOn.0: String should") == "runs_on"
    assert field_of("the dataset has no INPUT datasource") == "general"


DIVERSITY = '[{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]'


def test_the_form_is_checked_by_the_api_models_and_config_problems() -> None:
    good = {
        "selection": f'{{"n_samples": 5, "strategies": {DIVERSITY}}}',
        "docker": "{}",
        "priority": "LOW",
        "runs_on": " gpu , a100 ",
    }
    config, scheduled = build_requests(good)
    assert config.config.selection is not None and config.config.selection.n_samples == 5
    assert scheduled.priority == "LOW" and scheduled.runs_on == ["gpu", "a100"]
    with pytest.raises(FieldErrors) as err:
        build_requests(
            {
                **good,
                "selection": '{"n_samples": 5, "strategies": [{"input": {"type": "EMBEDDINGS"}, '
                '"strategy": {"type": "THRESHOLD"}}]}',
                "priority": "NOW",
            }
        )
    assert any("THRESHOLD" in p for p in err.value.errors["selection"])
    assert list(err.value.errors) == ["selection", "priority"]
    with pytest.raises(FieldErrors) as err:
        build_requests({**good, "docker": "[1,"})
    assert list(err.value.errors) == ["docker"] and "not valid JSON" in err.value.errors["docker"][0]


def test_operator_worker_names_name_their_lightlyworker() -> None:
    name = k8s_worker_name("prod", "ml-team", "fleet.a", 2)
    assert operator_ref(name) == {
        "cluster": "prod",
        "namespace": "ml-team",
        "name": "fleet.a",
        "index": 2,
        "pod": "fleet.a-2-…",
    }
    assert operator_ref("my-laptop-worker") is None
    assert operator_ref("k8s_prod_garbage") is None


def test_set_bits_of_a_mask() -> None:
    assert _set_bits(bytes([0b0000_0101, 0, 0b1000_0000])) == [0, 2, 23]
    assert _set_bits(b"") == []


def test_pca_of_points_on_a_line_is_that_line(tmp_path) -> None:
    import numpy as np
    from lightly_server.console.projection import pca_2d

    # (0,0,0), (1,2,0), (2,4,0): one principal direction, along (1,2,0); the second has no variance
    xy = pca_2d(np.array([[0, 0, 0], [1, 2, 0], [2, 4, 0]], dtype=np.float32))
    xs = sorted(float(v) for v in xy[:, 0])
    assert xs == pytest.approx([0.0, 0.5, 1.0], abs=1e-6)
    assert float(xy[0, 0]) in (pytest.approx(0.0, abs=1e-6), pytest.approx(1.0, abs=1e-6))  # either direction
    assert [float(v) for v in xy[:, 1]] == pytest.approx([0.5, 0.5, 0.5], abs=1e-3)  # a constant axis: centred
    # 62 points on that line: the second axis is rounding noise, kept constant rather than stretched to [0, 1]
    many = pca_2d(np.array([[i, 2 * i, 0] for i in range(62)], dtype=np.float32))
    assert set(np.round(many[:, 1], 9)) == {0.5} and sorted(many[:, 0]) == pytest.approx([i / 61 for i in range(62)])
    # a square's corners: both axes span [0, 1]
    sq = pca_2d(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32))
    assert sq.min() == pytest.approx(0.0) and sq.max() == pytest.approx(1.0)


def test_embeddings_csv_is_read_and_bad_lines_named(tmp_path) -> None:
    from lightly_server.console.projection import ProjectionError, read_embeddings

    ok = tmp_path / "ok.csv"
    ok.write_text('filenames,embedding_0,embedding_1,labels\n"a,b.png",1,2,0\nc.png,3.5,-1,0\n')
    names, emb = read_embeddings(ok)
    assert names == ["a,b.png", "c.png"] and emb.tolist() == [[1.0, 2.0], [3.5, -1.0]]
    bad = tmp_path / "bad.csv"
    bad.write_text("filenames,embedding_0,labels\na.png,1,0\nb.png,x,0\n")
    with pytest.raises(ProjectionError, match="line 3"):
        read_embeddings(bad)
    nan = tmp_path / "nan.csv"
    nan.write_text("filenames,embedding_0\na.png,nan\n")
    with pytest.raises(ProjectionError, match="line 2: the embedding is not 1 finite"):
        read_embeddings(nan)


def test_projection_keeps_every_selected_point_when_it_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    from lightly_server.console import projection as p

    monkeypatch.setattr(p, "MAX_POINTS", 10)
    names = [f"n{i}" for i in range(100)]
    selected = {"n3", "n50", "n99"}
    doc = p.projection(names, np.arange(200, dtype=np.float32).reshape(100, 2), selected, {"n3": "id3"}, "/x/")
    assert doc["n"] == 100 and len(doc["names"]) == 10 and selected <= set(doc["names"])
    assert sum(doc["selected"]) == 3
    assert doc["ids"][doc["names"].index("n3")] == "id3" and doc["imageBase"] == "/x/"


def test_a_csv_is_projected_in_two_passes_like_the_in_memory_pca(tmp_path) -> None:
    """``project_csv`` (what the server runs: never all N x D numbers in memory) gives the in-memory PCA's
    picture: the same points up to each axis's sign, when every row is in the fit; with fewer fit rows the
    directions come from a sample and points on a plane still land on it."""
    import numpy as np
    from lightly_server.console.projection import ProjectionError, pca_2d, project_csv

    rng = np.random.default_rng(3)
    emb = (rng.normal(size=(300, 2)) * [5.0, 1.0]) @ rng.normal(size=(2, 6))  # a plane in 6-D
    emb = emb.astype(np.float32)
    path = tmp_path / "e.csv"
    lines = ["filenames," + ",".join(f"embedding_{i}" for i in range(6)) + ",labels"]
    lines += [f"s{i}.png," + ",".join(repr(float(v)) for v in row) + ",0" for i, row in enumerate(emb)]
    path.write_text("\n".join(lines) + "\n")
    names, xy = project_csv(path, fit_rows=1000)
    want = pca_2d(emb)
    assert names == [f"s{i}.png" for i in range(300)] and xy.shape == (300, 2)
    for axis in (0, 1):
        same, flipped = np.abs(xy[:, axis] - want[:, axis]).max(), np.abs(xy[:, axis] - (1 - want[:, axis])).max()
        assert min(same, flipped) < 1e-4, axis
    _, sampled = project_csv(path, fit_rows=20)  # directions from 20 rows: the plane is still the plane
    assert sampled.min() >= 0 and sampled.max() <= 1 and np.ptp(sampled[:, 0]) == 1 and np.ptp(sampled[:, 1]) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("filenames,embedding_0\na.png,1\nb.png,inf\n")
    with pytest.raises(ProjectionError, match="line 3"):
        project_csv(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("filenames,embedding_0\n")
    assert project_csv(empty)[1].shape == (0, 2)
