"""The worker's command line: sanity check, key=value overrides, errors, token sources, local mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lightly_worker.config import ConfigError, parse_args, parse_value
from test_worker_e2e import make_images


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LIGHTLY_")}
    return subprocess.run(
        [sys.executable, "-m", "lightly_worker.cli", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=timeout,
    )


def local_run(
    input_dir: Path,
    out: Path,
    *extra: str,
    config: dict[str, Any] | None = None,
    lightly: Path | None = None,
    input_size: int | None = 64,
) -> subprocess.CompletedProcess[str]:
    """The worker in local mode on CPU: ``input_dir`` in, ``out`` the output folder; ``config`` the body of a
    run config file (written beside ``out``), ``lightly`` the LIGHTLY folder, ``extra`` more key=value."""
    args = ["mode=local", f"input_mount={input_dir}", f"output_dir={out}", "device=cpu"]
    if input_size is not None:
        args.append(f"embedding.input_size={input_size}")
    if lightly is not None:
        args.append(f"lightly_mount={lightly}")
    if config is not None:
        path = out.with_name(out.name + ".json")
        path.write_text(json.dumps(config))
        args.append(f"config={path}")
    return run(*args, *extra)


def test_sanity_check_needs_no_network_or_token() -> None:
    r = run("sanity_check=True", env={"LIGHTLY_SERVER_LOCATION": "http://127.0.0.1:9"})
    assert r.returncode == 0
    assert "version" in r.stdout and "Congratulations! It looks like the Lightly container is running!" in r.stdout


def test_unknown_keys_get_a_did_you_mean_hint() -> None:
    r = run("lightly.loader.batchsize=64")
    assert r.returncode == 2 and "Did you mean 'lightly.loader.batch_size'" in r.stderr
    r = run("--help")
    assert r.returncode == 2 and "key=value" in r.stderr


@pytest.mark.parametrize(
    ("arg", "needle"),
    [
        ("worker.labels=5", "worker.labels must be a list"),
        ("metrics.port=http", "metrics.port must be a port number"),
        ("mode=batch", "use mode=waiting (default) or mode=local"),
        ("lightly.loader.batch_size=0", "lightly.loader.batch_size must be a positive integer"),
        ("device=tpu", "use auto, cpu or cuda"),
    ],
)
def test_bad_values_are_explained(arg: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
        parse_args([arg])


def test_values_parse_like_yaml_scalars() -> None:
    assert [parse_value(x) for x in ("True", "false", "64", "0.5", "[gpu, a100]", "[]", "null", "'x'", "abc")] == [
        True,
        False,
        64,
        0.5,
        ["gpu", "a100"],
        [],
        None,
        "x",
        "abc",
    ]
    args = parse_args(
        [
            "worker.labels=[gpu]",
            "lightly.loader.batch_size=64",
            "lightly.collate.input_size=64",
            "enable_training=True",
            "token=s3cret",
        ]
    )
    assert args.lightly_overrides() == {"loader": {"batch_size": 64}, "collate": {"input_size": 64}}
    assert args.docker_overrides() == {"enable_training": True}
    assert args.redacted()["token"] == "***"


def test_token_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "token"
    f.write_text("from-file\n")
    monkeypatch.setenv("LIGHTLY_TOKEN", "from-env")
    monkeypatch.setenv("LIGHTLY_TOKEN_FILE", str(f))
    assert parse_args(["token=from-arg"]).token() == "from-arg"
    assert parse_args([]).token() == "from-file"
    monkeypatch.delenv("LIGHTLY_TOKEN_FILE")
    assert parse_args([]).token() == "from-env"
    f.write_text("")
    monkeypatch.setenv("LIGHTLY_TOKEN_FILE", str(f))
    with pytest.raises(ConfigError, match="is empty"):
        parse_args([]).token()


def test_waiting_mode_without_a_token_says_how_to_give_one() -> None:
    r = run("worker.worker_id=" + "a" * 24)
    assert r.returncode == 2 and "LIGHTLY_TOKEN_FILE" in r.stderr


def test_local_mode_selects_from_a_folder(tmp_path: Path) -> None:
    make_images(tmp_path / "images", 12)
    r = local_run(tmp_path / "images", tmp_path / "out", "n_samples=4", lightly=tmp_path / "none")
    assert r.returncode == 0, r.stderr
    assert "Selected 4 of 12 samples (1 corrupt, 1 duplicates left out)." in r.stdout
    selected = (tmp_path / "out" / "filenames" / "selected_filenames.txt").read_text().split()
    assert len(selected) == 4
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["summary"]["n_selected"] == 4 and report["summary"]["embedding_dim"] == 1280
    html = (tmp_path / "out" / "report.html").read_text()
    assert "data:image/png;base64," in html and "Selection report" in html
    assert (tmp_path / "out" / "plots" / "distance_distr_before.png").stat().st_size > 1000


def test_local_mode_with_a_config_file_and_its_errors(tmp_path: Path) -> None:
    make_images(tmp_path / "images", 10)
    cfg = tmp_path / "run.json"
    cfg.write_text(
        json.dumps(
            {
                "worker_config": {"normalize_embeddings": True},
                "selection_config": {
                    "proportion_samples": 0.5,
                    "strategies": [
                        {"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}},
                        {
                            "input": {"type": "RANDOM", "random_seed": 1},
                            "strategy": {"type": "WEIGHTS", "strength": 0.2},
                        },
                    ],
                },
            }
        )
    )
    common = (f"input_mount={tmp_path / 'images'}", "embedding.input_size=64", "device=cpu")
    r = run("mode=local", f"config={cfg}", f"output_dir={tmp_path / 'out'}", *common)
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "out" / "filenames" / "selected_filenames.txt").read_text().split()) == 5
    cfg.write_text(
        json.dumps(
            {
                "selection_config": {
                    "n_samples": 3,
                    "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "THRESHOLD"}}],
                }
            }
        )
    )
    r = run("mode=local", f"config={cfg}", f"output_dir={tmp_path / 'out2'}", *common)
    assert r.returncode == 1 and "THRESHOLD cannot use input EMBEDDINGS" in r.stderr
    r = run("mode=local", f"output_dir={tmp_path / 'out3'}", *common)
    assert r.returncode == 2 and "needs n_samples=N" in r.stderr
    r = run("mode=local", f"input_mount={tmp_path / 'nothing'}", f"output_dir={tmp_path / 'out4'}", "n_samples=2")
    assert r.returncode == 1 and "does not exist" in r.stderr


def test_the_reported_version_is_the_images_when_its_build_set_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightly_worker import __version__, worker_version

    monkeypatch.delenv("LIGHTLY_WORKER_VERSION", raising=False)
    assert worker_version() == __version__
    monkeypatch.setenv("LIGHTLY_WORKER_VERSION", "")  # the Dockerfile's default: no version given
    assert worker_version() == __version__
    monkeypatch.setenv("LIGHTLY_WORKER_VERSION", "1.2.3")
    assert worker_version() == "1.2.3"


def test_a_worker_name_outside_lightlys_pattern_is_refused_with_what_to_use() -> None:
    from lightly_worker.config import ConfigError, parse_args

    with pytest.raises(ConfigError, match=r"worker.name='gpu.host.example'.*e.g. worker.name=gpu-worker-1"):
        parse_args(["worker.name=gpu.host.example", "token=t"])
    assert parse_args(["worker.name=gpu-worker 1", "token=t"])["worker.name"] == "gpu-worker 1"


def test_the_n_samples_shorthand_uses_the_recommended_strategies_unless_told_otherwise() -> None:
    from lightly_worker.cli import local_config
    from lightly_worker.config import ConfigError, parse_args
    from lightly_worker.selection.advice import RECOMMENDED_STRATEGIES

    def types(*extra: str) -> list[str]:
        cfg = local_config(parse_args(["mode=local", "n_samples=10", *extra]))
        return [e.strategy.type for e in cfg.selection.strategies]

    assert types() == [s["type"] for s in RECOMMENDED_STRATEGIES] == ["DIVERSITY", "TYPICALITY"]
    typicality = local_config(parse_args(["mode=local", "n_samples=10"])).selection.strategies[1].strategy
    assert typicality.num_nearest_neighbors == RECOMMENDED_STRATEGIES[1]["num_nearest_neighbors"]
    assert types("strategy=diversity") == ["DIVERSITY"]  # Lightly's DIVERSITY alone, on request
    assert types("strategy=coverage") == ["COVERAGE_EXT"]
    with pytest.raises(ConfigError, match="strategy='best' is not one of recommended, diversity, coverage"):
        parse_args(["mode=local", "n_samples=10", "strategy=best"])


def test_a_folder_option_without_a_folder_says_so() -> None:
    r = run("mode=local", "input_mount=none", "output_dir=out", "n_samples=2")
    assert r.returncode == 2 and "input_mount must be a folder path, got None" in r.stderr, r.stderr


def test_a_sigterm_while_the_worker_starts_stops_it_cleanly(tmp_path: Path) -> None:
    """As PID 1 of a pod a SIGTERM without a handler is ignored: one that arrives while the worker still
    imports torch must not be lost (the pod would hang in Terminating for its whole grace period)."""
    import signal
    import time

    from lightly_devkit.servers import create_token, loopback_env, start_server

    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    server = start_server(url, tmp_path / "server.log")
    try:
        env = {
            **loopback_env(),
            "LIGHTLY_SERVER_LOCATION": server.url,
            "LIGHTLY_TOKEN": create_token(url, "alice"),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "lightly_worker.cli", "worker.name=early-sigterm", "worker.poll_wait_seconds=5"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        time.sleep(1.0)  # inside the imports (torch), before the agent's own handlers
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out[-3000:]
        assert "SIGTERM received while starting: stopping" in out, out[-3000:]
        assert "worker stopped" in out, out[-3000:]
    finally:
        server.stop()


def test_an_empty_server_location_is_refused_never_replaced_by_lightlys_public_api(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mis-set, empty LIGHTLY_SERVER_LOCATION must not send the token to https://api.lightly.ai."""
    from lightly_worker.cli import main

    monkeypatch.setenv("LIGHTLY_SERVER_LOCATION", "")
    monkeypatch.setenv("LIGHTLY_TOKEN", "secret-token-value")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "LIGHTLY_SERVER_LOCATION is set but empty" in err and "secret-token-value" not in err


def test_an_unreadable_video_is_reported_among_the_corrupt_files(tmp_path: Path) -> None:
    """Lightly's corruptness check names a video that cannot be opened; it is no silent omission."""
    pytest.importorskip("av", reason="PyAV (av) reads videos")
    make_images(tmp_path / "images", 12)
    (tmp_path / "images" / "clips").mkdir()
    (tmp_path / "images" / "clips" / "broken clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    r = local_run(tmp_path / "images", tmp_path / "out", "n_samples=4", lightly=tmp_path / "none")
    assert r.returncode == 0, r.stderr
    assert "(2 corrupt, 1 duplicates left out)" in r.stdout, r.stdout
    corrupt = (tmp_path / "out" / "filenames" / "corrupt_filenames.txt").read_text().split("\n")
    assert "clips/broken clip.mp4" in corrupt
    info = json.loads((tmp_path / "out" / "data" / "corruptness_check_information.json").read_text())
    assert info["corrupt_samples"]["clips/broken clip.mp4"].startswith("unreadable video: ")


def test_a_checkpoint_file_is_the_model_a_later_run_embeds_with(tmp_path: Path) -> None:
    """A training run leaves lightly_epoch_last.ckpt; put in .lightly/checkpoints/ of the LIGHTLY datasource,
    ``checkpoint`` makes a later run embed with that model (the same embeddings), or train it further;
    a file that is no checkpoint fails the run saying what to use."""
    import shutil

    make_images(tmp_path / "images", 8)
    lightly = tmp_path / "lightly"
    selection = {"n_samples": 3, "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]}
    train = {"enable_training": True}
    lightly_cfg = {
        "trainer": {"max_epochs": 1},
        "loader": {"batch_size": 4, "num_workers": 0},
        "collate": {"input_size": 32},
    }

    def local(name: str, docker: dict, lightly_config: dict | None = None) -> subprocess.CompletedProcess[str]:
        body = {"worker_config": docker, "selection_config": selection, "lightly_config": lightly_config or {}}
        return local_run(tmp_path / "images", tmp_path / name, config=body, lightly=lightly, input_size=None)

    r = local("trained", train, lightly_cfg)
    assert r.returncode == 0, r.stderr
    (lightly / ".lightly" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "trained" / "lightly_epoch_last.ckpt", lightly / ".lightly" / "checkpoints" / "mine.ckpt")

    r = local("reused", {"checkpoint": "mine.ckpt"}, {"collate": {"input_size": 32}})
    assert r.returncode == 0, r.stderr
    assert "loaded checkpoint 'mine.ckpt' (resnet-18" in r.stdout + r.stderr
    want = (tmp_path / "trained" / "data" / "embeddings.csv").read_text()
    assert (tmp_path / "reused" / "data" / "embeddings.csv").read_text() == want

    r = local("further", {**train, "checkpoint": "mine.ckpt"}, lightly_cfg)  # trains the loaded model on
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "further" / "lightly_epoch_last.ckpt").is_file()

    (lightly / ".lightly" / "checkpoints" / "junk.ckpt").write_bytes(b"not a checkpoint")
    for name, docker, needle in [
        ("junk", {"checkpoint": "junk.ckpt"}, "is not a checkpoint this worker can load"),
        ("missing", {"checkpoint": "nope.ckpt"}, "no such file in .lightly/checkpoints/"),
        ("outside", {"checkpoint": "../../etc/passwd"}, "checkpoint"),
    ]:
        r = local(name, docker)
        assert r.returncode != 0 and needle in r.stdout + r.stderr, (name, r.stdout[-500:], r.stderr[-500:])


def test_sequence_selection_selects_whole_runs_of_video_frames(tmp_path: Path) -> None:
    """``selected_sequence_length`` 4: videos split into runs of 4 consecutive frames (a tail shorter than
    4 is no sequence), the selection picks n_samples / 4 of them, every frame of each, and
    data/sequence_information.json says which; images are in no sequence; n_samples must be a multiple."""
    pytest.importorskip("av", reason="PyAV (av) reads videos")
    from test_embed import make_video

    make_video(tmp_path / "in" / "clips" / "a.mp4", 12)
    make_video(tmp_path / "in" / "clips" / "b b.mp4", 10)
    make_images(tmp_path / "in" / "stills", 3)

    def local(name: str, n_samples: int) -> subprocess.CompletedProcess[str]:
        strategies = [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]
        body = {
            "worker_config": {"selected_sequence_length": 4},
            "selection_config": {"n_samples": n_samples, "strategies": strategies},
        }
        return local_run(tmp_path / "in", tmp_path / name, config=body, input_size=32)

    r = local("seq", 8)
    assert r.returncode == 0, r.stderr
    assert "images are in no video sequence" in r.stdout + r.stderr
    selected = (tmp_path / "seq" / "filenames" / "selected_filenames.txt").read_text().splitlines()
    assert len(selected) == 8
    info = json.loads((tmp_path / "seq" / "data" / "sequence_information.json").read_text())
    assert len(info) == 2
    for entry, names in zip(info, (selected[:4], selected[4:]), strict=True):
        assert entry["video_name"] in ("clips/a.mp4", "clips/b b.mp4")
        first = entry["frame_indices"][0]
        assert first % 4 == 0 and entry["frame_indices"] == list(range(first, first + 4))
        assert entry["frame_names"] == names
        assert all(isinstance(t, int) for t in entry["frame_timestamps_pts"])
        # Lightly's keys, in its example's order; seconds = pts x time base: frame f of a 10 fps video is at f / 10
        assert list(entry) == [
            "video_name",
            "frame_names",
            "frame_timestamps_pts",
            "frame_timestamps_sec",
            "frame_indices",
        ]
        assert entry["frame_timestamps_sec"] == pytest.approx([f / 10 for f in entry["frame_indices"]])
        assert entry["frame_indices"][-1] < (12 if entry["video_name"] == "clips/a.mp4" else 8)  # no tail

    r = local("odd", 6)
    assert r.returncode != 0 and "n_samples 6 is not a multiple of selected_sequence_length 4" in r.stdout + r.stderr


def test_sequences_are_complete_runs_of_consecutive_frames() -> None:
    import numpy as np
    from lightly_worker.sequences import sequence_embeddings, split_sequences

    names = [f"v-{i:02d}-mp4.png" for i in range(10) if i != 5] + ["w-00-mp4.png", "img.jpg"]
    found, images = split_sequences(names, 3)
    assert images == 1
    # v: 0-2 complete, 3-5 misses frame 5, 6-8 complete, 9 a tail; w: one frame only
    assert [(s.video, s.frames) for s in found] == [("v.mp4", (0, 1, 2)), ("v.mp4", (6, 7, 8))]
    emb = np.arange(len(names) * 2, dtype=np.float32).reshape(-1, 2)
    mean = sequence_embeddings(emb, found, normalize=False)
    assert np.allclose(mean[0], emb[[0, 1, 2]].mean(0)) and np.allclose(mean[1], emb[list(found[1].positions)].mean(0))
    unit = sequence_embeddings(emb, found, normalize=True)
    assert np.allclose(np.linalg.norm(unit, axis=1), 1.0)


def test_a_local_folders_files_modified_in_a_window_of_whole_seconds(tmp_path: Path) -> None:
    """The datapool's next run takes the files modified after processedUntilTimestamp: [since + 1, until + 1]
    in unix seconds, the server's from/to window for buckets; hidden folders (.lightly) are never files."""
    import os

    from lightly_worker.sources import LocalSource

    for name, mtime in (("old.jpg", 100.5), ("edge.jpg", 101.0), ("new/a.jpg", 150.0), ("late.jpg", 201.5)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (mtime, mtime))
    (tmp_path / ".lightly").mkdir()
    (tmp_path / ".lightly" / "x.jpg").write_bytes(b"x")
    source = LocalSource(tmp_path)
    assert set(source.walk(modified=(100, 200))) == {"edge.jpg", "new/a.jpg"}
    assert set(source.walk(modified=(0, 300))) == {"old.jpg", "edge.jpg", "new/a.jpg", "late.jpg"}


def test_num_threads_and_num_processes_are_what_training_and_embedding_run_with(tmp_path: Path) -> None:
    """``num_threads`` is torch's thread count while the run trains and embeds (more than the vCPUs here, so
    no default can give it) and ``num_processes`` the loaders' worker processes; the log says which ran."""
    from lightly_worker.embed._common import cpu_count

    make_images(tmp_path / "images", 6)
    threads = cpu_count() + 1
    body = {
        "worker_config": {"enable_training": True, "num_threads": threads, "num_processes": 0},
        "selection_config": {
            "n_samples": 2,
            "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}],
        },
        "lightly_config": {"trainer": {"max_epochs": 1}, "loader": {"batch_size": 4}, "collate": {"input_size": 32}},
    }
    r = local_run(tmp_path / "images", tmp_path / "out", config=body, input_size=32)
    assert r.returncode == 0, r.stderr[-3000:]
    log = r.stdout + r.stderr
    assert f"(0 loader workers, {threads} threads)" in log, log[-3000:]
    assert f"0 decode workers, {threads} threads" in log, log[-3000:]
