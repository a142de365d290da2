"""Issue 9.3: a run's config cannot make the worker read (and leak) files outside its roots."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from lightly_protocol.models import WorkerConfigV4
from lightly_worker.paths import PathOutsideRoot, inside
from lightly_worker.pipeline import JobError, JobOptions, JobPaths, NullReporter, resolve_paths, run_job
from PIL import Image

SECRET = "root:x:0:0:root:/root:/bin/bash"


@pytest.fixture
def layout(tmp_path: Path) -> JobPaths:
    (tmp_path / "input").mkdir()
    for i in range(4):
        Image.new("RGB", (16, 16), (i * 60, 10, 200 - i * 40)).save(tmp_path / "input" / f"img_{i}.png")
    for d in ("embeddings", "tags", "predictions"):
        (tmp_path / "lightly" / ".lightly" / d).mkdir(parents=True)
    (tmp_path / "secret.txt").write_text(SECRET + "\nsecond line\n")
    return JobPaths(tmp_path / "input", tmp_path / "lightly", tmp_path / "out")


def _config(docker: dict, selection: dict | None = None) -> WorkerConfigV4:
    return WorkerConfigV4.model_validate(
        {
            "worker_type": "FULL",
            "docker": docker,
            "selection": selection
            or {"n_samples": 2, "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]},
        }
    )


def _fails(config: WorkerConfigV4, paths: JobPaths, caplog: pytest.LogCaptureFixture) -> str:
    with caplog.at_level(logging.DEBUG), pytest.raises(JobError) as err:
        run_job(config, paths, NullReporter(), JobOptions("cpu", "resnet-tiny", 16))
    message = str(err.value)
    assert SECRET not in message and "second line" not in message
    assert SECRET not in caplog.text and "root:x" not in caplog.text
    return message


@pytest.mark.parametrize(
    "relevant",
    [
        ".lightly/../../secret.txt",  # the probe: passes the server's '.lightly/' prefix check
        ".lightly/../../../../../../../../etc/passwd",
        ".lightly/link.txt",  # a symlink inside .lightly/ that leads out
    ],
)
def test_relevant_filenames_file_stays_in_dot_lightly(
    layout: JobPaths, relevant: str, caplog: pytest.LogCaptureFixture
) -> None:
    (layout.lightly_root / ".lightly" / "link.txt").symlink_to(layout.lightly_root.parent / "secret.txt")
    message = _fails(_config({"relevant_filenames_file": relevant}), layout, caplog)
    assert "relevant_filenames_file" in message and "must stay inside .lightly/" in message


@pytest.mark.parametrize("embeddings", ["/etc/passwd", "../../../secret.txt", "link.csv"])
def test_custom_embeddings_stay_in_dot_lightly_embeddings(
    layout: JobPaths, embeddings: str, caplog: pytest.LogCaptureFixture
) -> None:
    (layout.lightly_root / ".lightly" / "embeddings" / "link.csv").symlink_to(layout.lightly_root.parent / "secret.txt")
    message = _fails(_config({"embeddings": embeddings}), layout, caplog)
    assert "embeddings" in message
    assert "must stay inside .lightly/embeddings/" in message or "not an absolute path" in message


def test_a_file_that_is_not_csv_is_refused_without_quoting_it(
    layout: JobPaths, caplog: pytest.LogCaptureFixture
) -> None:
    (layout.lightly_root / ".lightly" / "embeddings" / "e.csv").write_text(SECRET + "\n")
    message = _fails(_config({"embeddings": "e.csv"}), layout, caplog)
    assert "line 1: bad header" in message


def test_relevant_filenames_that_are_not_text_name_the_line(layout: JobPaths, caplog: pytest.LogCaptureFixture) -> None:
    (layout.lightly_root / ".lightly" / "rel.txt").write_bytes(b"img_0.png\nimg_1.png\n\xff\xfe\n")
    message = _fails(_config({"relevant_filenames_file": ".lightly/rel.txt"}), layout, caplog)
    assert "line 3: not UTF-8 text" in message


def test_query_tags_and_prediction_tasks_stay_inside(layout: JobPaths) -> None:
    from lightly_worker.selection import SelectionError
    from lightly_worker.selection.lightly_io import load_predictions

    (layout.lightly_root / ".lightly" / "predictions" / "tasks.json").write_text('["../../../x"]')
    with pytest.raises(SelectionError, match="must stay inside"):
        load_predictions(layout.lightly_root, ["img_0.png"], "../../../x")


def test_inside_resolves_symlinked_roots(tmp_path: Path) -> None:
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "mount").symlink_to(tmp_path / "real")
    assert inside(tmp_path / "mount", "sub", "x") == (tmp_path / "real" / "sub").resolve()
    assert inside(tmp_path / "mount", "", "x") == (tmp_path / "real").resolve()
    with pytest.raises(PathOutsideRoot, match="climbs out"):
        inside(tmp_path / "mount", "sub/../..", "x")
    with pytest.raises(PathOutsideRoot, match="absolute"):
        inside(tmp_path / "mount", "/etc", "x")


def test_datasource_paths_stay_inside_the_mounts(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "escape").symlink_to("/etc")
    with pytest.raises(JobError, match="INPUT datasource's fullPath 'escape' must stay inside the input mount"):
        resolve_paths(
            tmp_path / "in",
            tmp_path / "in",
            {"type": "LOCAL", "fullPath": "escape"},
            None,
            tmp_path / "out",
        )
    with pytest.raises(JobError, match=r"must not contain '\.' or '\.\.'"):
        resolve_paths(
            tmp_path / "in",
            tmp_path / "in",
            {"type": "LOCAL", "fullPath": ""},
            {"type": "LOCAL", "fullPath": "../x"},
            tmp_path / "out",
        )
