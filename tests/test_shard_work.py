"""A split run's work without the server (issue 11): shards checked and embedded one by one, assembled,
give exactly the single-worker run's outputs; an embedding does not depend on its batch neighbours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lightly_protocol.models import WorkerConfigV4
from lightly_protocol.shards import shard_ranges
from lightly_worker.embed import EmbedConfig, embed_samples, load_custom_embeddings, save_embeddings
from lightly_worker.job import Job, JobError, JobOptions
from lightly_worker.pipeline import JobPaths, NullReporter, Stage, job_stages, run_job
from lightly_worker.shard_work import assemble, distributable, process_shard
from lightly_worker.shardfile import decode, encode
from PIL import Image

SELECTION = {"n_samples": 7, "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]}


def _images(root: Path, n: int = 23) -> None:
    rng = np.random.default_rng(3)
    root.mkdir(parents=True)
    for i in range(n):
        arr = np.clip(rng.normal(rng.integers(0, 255, 3), 50, size=(40, 40, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(root / f"img_{i:02d}.jpg", quality=90)
    # duplicates in other shards than their originals, and corrupt files
    (root / "zz_copy_of_01.jpg").write_bytes((root / "img_01.jpg").read_bytes())
    (root / "aa_copy_of_20.jpg").write_bytes((root / "img_20.jpg").read_bytes())
    (root / "img_05b.jpg").write_bytes((root / "img_06.jpg").read_bytes()[:150])
    (root / "empty.png").write_bytes(b"")


def _config(docker: dict | None = None) -> WorkerConfigV4:
    return WorkerConfigV4.model_validate(
        {
            "worker_type": "FULL",
            "docker": docker or {},
            "selection": SELECTION,
            "lightly": {"loader": {"num_workers": 0}},
        }
    )


def _split_stages(shard_size: int) -> tuple[Stage, ...]:
    """The default stages with check and embed done shard by shard through the binary format."""

    def check(job: Job) -> None:
        job.say("split")

    def embed(job: Job) -> None:
        ranges = shard_ranges(len(job.names), shard_size)
        results = []
        for i, (start, stop) in enumerate(ranges):
            names = job.names[start:stop]
            results.append(decode(encode(process_shard(job, names, i, start, None))))
        assemble(job, job.names, results, ranges)

    swap = {"CHECKING_CORRUPTNESS": check, "EMBEDDING": embed}
    return tuple(Stage(s.state, swap[s.state], s.applies) if s.state in swap else s for s in job_stages())


def _run(tmp: Path, out: str, config: WorkerConfigV4, model: str, stages: tuple[Stage, ...] | None):  # type: ignore[no-untyped-def]
    paths = JobPaths(tmp / "input", tmp / "lightly", tmp / out)
    return run_job(config, paths, NullReporter(), JobOptions("cpu", model, 32), stages=stages)


def _same_outputs(a: Path, b: Path) -> None:
    for rel in (
        "filenames/selected_filenames.txt",
        "filenames/corrupt_filenames.txt",
        "filenames/duplicate_filenames.txt",
        "filenames/removed_filenames.txt",
        "data/corruptness_check_information.json",
    ):
        assert (a / rel).read_text() == (b / rel).read_text(), rel
    na, ea = load_custom_embeddings(a / "data" / "embeddings.csv")
    nb, eb = load_custom_embeddings(b / "data" / "embeddings.csv")
    assert na == nb
    diff = float(np.abs(ea - eb).max())
    print(f"max abs embedding difference single vs split: {diff:.2e}")
    assert diff <= 1e-5


@pytest.mark.parametrize("shard_size", [4, 7, 100])
def test_split_run_gives_the_single_worker_outputs(tmp_path: Path, shard_size: int) -> None:
    _images(tmp_path / "input")
    (tmp_path / "lightly").mkdir()
    single = _run(tmp_path, "single", _config(), "resnet-tiny", None)
    split = _run(tmp_path, "split", _config(), "resnet-tiny", _split_stages(shard_size))
    assert split.selected == single.selected and len(single.selected) == 7
    _same_outputs(single.output_dir, split.output_dir)
    summary = split.report["summary"]
    assert (summary["n_corrupt"], summary["n_duplicates"], summary["n_candidates"]) == (2, 2, 23)


def test_split_run_with_custom_embeddings(tmp_path: Path) -> None:
    _images(tmp_path / "input")
    emb_dir = tmp_path / "lightly" / ".lightly" / "embeddings"
    emb_dir.mkdir(parents=True)
    names = sorted(p.name for p in (tmp_path / "input").iterdir())
    save_embeddings(emb_dir / "e.csv", names, np.random.default_rng(1).normal(size=(len(names), 6)).astype(np.float32))
    config = _config({"embeddings": "e.csv"})
    single = _run(tmp_path, "single", config, "resnet-tiny", None)
    split = _run(tmp_path, "split", config, "resnet-tiny", _split_stages(5))
    assert split.selected == single.selected
    _same_outputs(single.output_dir, split.output_dir)


def test_default_model_embedding_does_not_depend_on_its_batch(tmp_path: Path) -> None:
    """EfficientNet-Lite0 in eval mode: a file's embedding alone, in a batch of 3, in a batch of 16."""
    _images(tmp_path / "input")
    names = [f"img_{i:02d}.jpg" for i in range(16)]
    cfg = EmbedConfig(input_size=64, batch_size=16, num_workers=0, device="cpu")
    whole = embed_samples(tmp_path / "input", names, cfg)
    parts = [embed_samples(tmp_path / "input", names[i : i + 3], cfg) for i in range(0, 16, 3)]
    alone = [embed_samples(tmp_path / "input", [n], cfg) for n in names[:4]]
    diff_parts = float(np.abs(np.concatenate(parts) - whole).max())
    diff_alone = float(np.abs(np.concatenate(alone) - whole[:4]).max())
    print(f"max abs diff: batches of 3 vs 16 {diff_parts:.2e}; alone vs 16 {diff_alone:.2e}")
    assert diff_parts <= 1e-5 and diff_alone <= 1e-5


def test_assembly_refuses_results_that_do_not_fit(tmp_path: Path) -> None:
    _images(tmp_path / "input")
    (tmp_path / "lightly").mkdir()
    config = _config()
    paths = JobPaths(tmp_path / "input", tmp_path / "lightly", tmp_path / "out")
    job = Job(config, paths, NullReporter(), JobOptions("cpu", "resnet-tiny", 32), {})
    job.out.mkdir()
    job.names = sorted(p.name for p in (tmp_path / "input").iterdir())
    ranges = shard_ranges(len(job.names), 14)
    r0 = process_shard(job, job.names[0:14], 0, 0, None)
    r1 = process_shard(job, job.names[14:], 1, 14, None)
    with pytest.raises(JobError, match="shard 1 has a wrong result: the result is for shard"):
        assemble(job, job.names, [r0, r0], ranges)
    job.options.embedding_input_size = 48
    r1_other = process_shard(job, job.names[14:], 1, 14, None)
    with pytest.raises(JobError, match="embedded with different settings"):
        assemble(job, job.names, [r0, r1_other], ranges)
    assemble(job, job.names, [r0, r1], ranges)
    assert len(job.candidates) == len(job.names) - 4 and job.emb is not None  # 2 corrupt, 2 duplicates


def test_training_runs_are_not_split(tmp_path: Path) -> None:
    paths = JobPaths(tmp_path, None, tmp_path)
    train = Job(_config({"enable_training": True}), paths, NullReporter(), None, {})  # type: ignore[arg-type]
    assert "training run is not split" in (distributable(train) or "")
    assert distributable(Job(_config(), paths, NullReporter(), None, {})) is None  # type: ignore[arg-type]


def test_the_fleet_default_from_the_command_line_and_the_runs_own_value_wins() -> None:
    from lightly_worker.agent import merge_cli_defaults
    from lightly_worker.config import parse_args
    from lightly_worker.shards import parallelism_of

    fleet = parse_args(["docker.parallelism=auto", "docker.shard_size=500"])  # what spec.workerConfig passes
    assert parallelism_of(merge_cli_defaults(_config(), fleet)) == "auto"
    assert merge_cli_defaults(_config(), fleet).docker.shard_size == 500  # type: ignore[union-attr]
    assert parallelism_of(merge_cli_defaults(_config({"parallelism": 1}), fleet)) == 1
    assert parallelism_of(merge_cli_defaults(_config(), parse_args(["parallelism=4"]))) == 4
    assert parallelism_of(merge_cli_defaults(_config(), parse_args([]))) == 1
