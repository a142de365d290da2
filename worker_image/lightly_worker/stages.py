"""The stages of one selection job, each a function of the ``Job`` state (their table:
``pipeline.job_stages``).

A stage reads what earlier stages left in the job, does one thing, and leaves its product for the
next ones. Cancellation, timing and the order are the loop's (``pipeline.run_job``), not theirs;
a stage reports its message with ``job.say`` and raises ``JobError`` for what the user can fix.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from lightly_protocol.models import WorkerConfigV4
from lightly_protocol.validation import config_problems

from .embed import (
    CheckResult,
    EmbedConfig,
    EmbeddingsError,
    SimCLRBackbone,
    TrainConfig,
    VideoTiming,
    check_samples,
    embed_samples,
    list_samples,
    load_custom_embeddings,
    load_simclr_checkpoint,
    run_threads,
    save_embeddings,
    train_simclr,
    video_timing,
)
from .job import Job, JobError, JobPaths, Reporter, produced
from .object_selection import object_task_of, sample_objects
from .object_training import task_objects, train_on_task_crops, training_task_of
from .paths import PathOutsideRoot, inside
from .report import THUMBNAILS_KEY, make_plots, make_thumbnails, write_lines
from .selection import (
    SelectionError,
    SelectionInputs,
    SelectionResult,
    load_lightly_inputs,
    select,
    strategy_warning,
)
from .sequences import (
    SequenceError,
    sequence_embeddings,
    sequence_information,
    sequence_inputs,
    sequence_selection,
    split_sequences,
)
from .sources import SourceAccessError
from .tiling import without_tiling

log = logging.getLogger("lightly_worker.run")


# ---------------------------------------------------------------- stages


def initialize(job: Job) -> None:
    config, paths = job.config, job.paths
    job.say("checking the configuration")
    problems = config_problems(config)
    if config.selection is None:
        problems.append("the run has no selection config; pass selection_config to schedule_compute_worker_run")
    if problems:
        raise JobError("invalid configuration: " + "; ".join(problems))
    try:
        paths.input.check()
        if paths.lightly_mirror is not None:
            wanted = lightly_files_needed(config)
            job.say(f"copying {len(wanted)} .lightly/ file(s) or folder(s) from {paths.lightly_mirror.label}")
            paths.lightly_mirror.pull(wanted)
    except SourceAccessError as exc:
        raise JobError(str(exc)) from None
    job.device = _device(job.options.device)
    _load_checkpoint(job)
    write_config(job.out / "config", job.report["config"])


def write_config(folder: Path, config: Any) -> None:
    """The run's configuration as ``config.json`` and, as in Lightly's output layout, ``config.yaml`` (the same
    content; it never holds a token: the worker's own arguments are not part of it)."""
    folder.mkdir(exist_ok=True)
    plain = json.loads(json.dumps(config, default=str))  # YAML of plain types only (no Python tags)
    (folder / "config.json").write_text(json.dumps(plain, indent=2, sort_keys=True))
    (folder / "config.yaml").write_text(yaml.safe_dump(plain, sort_keys=True, allow_unicode=True))


def _load_checkpoint(job: Job) -> None:
    """``checkpoint`` (a file in ``.lightly/checkpoints/`` of the LIGHTLY datasource) or ``checkpoint_run_id``
    (that run's CHECKPOINT artifact, downloaded by the agent): the model the run trains further
    (``enable_training``) or embeds with."""
    docker = job.docker
    name = docker.checkpoint if docker else None
    run_id = docker.checkpoint_run_id if docker else None
    if not name and not run_id:
        return
    if name and run_id:
        raise JobError("give checkpoint or checkpoint_run_id, not both")
    if name:
        if job.paths.lightly_root is None:
            raise JobError(f"checkpoint {name!r} needs a LIGHTLY datasource (.lightly/checkpoints/ in it)")
        path = _confined(
            job.paths.lightly_root / ".lightly" / "checkpoints",
            name,
            "checkpoint",
            ".lightly/checkpoints/ of the LIGHTLY datasource",
        )
        what = f"checkpoint {name!r}"
        if not path.is_file():
            raise JobError(f"{what}: no such file in .lightly/checkpoints/ of the LIGHTLY datasource")
    else:
        if job.paths.run_checkpoint is None:
            raise JobError(f"checkpoint_run_id {run_id!r}: the run's checkpoint was not fetched (no API in local mode)")
        path, what = job.paths.run_checkpoint, f"the checkpoint of run {run_id}"
    try:
        job.model = load_simclr_checkpoint(path)
    except Exception as exc:  # torch.load's unpickling errors, a wrong state dict, a truncated file
        raise JobError(
            f"{what} is not a checkpoint this worker can load ({type(exc).__name__}: {str(exc)[:300]}); use the "
            "lightly_epoch_last.ckpt a run with enable_training wrote (its CHECKPOINT artifact), or a Lightly "
            "worker's checkpoint of a SimCLR ResNet (model.backbone.* keys)"
        ) from None
    job.say(f"loaded {what} ({job.model.config['name']}, {job.model.dim}-d)")


def load_dataset(job: Job) -> None:
    config, paths = job.config, job.paths
    source = paths.input
    job.say(f"listing files under {source.label}")
    relevant = _relevant_filenames(config, paths)
    window = None if job.process_all else paths.processed_window
    try:
        names = list_samples(source, relevant, unreadable=job.unreadable_videos, modified=window, log=log)
    except SourceAccessError as exc:
        raise JobError(str(exc)) from None
    if window is not None and window[0]:  # one listing: the store (or the walk) left out what earlier runs processed
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(window[0]))
        log.info("datapool: files processed by earlier runs (until %s) are not listed", when)
    if relevant is not None:
        missing = sorted(set(relevant) - set(names))
        if missing:
            log.warning(
                "%d files of relevant_filenames_file do not exist in the input%s and are skipped",
                len(missing),
                " (or were processed by earlier datapool runs)" if window is not None else "",
            )
    if config.selection and config.selection.lightly_path_regex:
        rx = re.compile(config.selection.lightly_path_regex)
        names = [n for n in names if rx.search(n)]
    if not names and not (window and window[0]):  # a later datapool run says "no new input files" below
        raise JobError(f"no input files found under {source.label} (images: jpg, png, webp, bmp, tiff)")
    log.info("found %d input files", len(names))
    job.names = names
    _load_datapool(job, window)


def _load_datapool(job: Job, window: tuple[int, int] | None) -> None:
    docker = job.docker
    job.datapool_path = dp_path = _datapool_path(job.paths)
    if job.use_datapool:
        if dp_path is None:
            raise JobError("use_datapool needs a LIGHTLY datasource to keep the datapool in")
        if docker and docker.enable_training:
            raise JobError("use_datapool cannot be combined with enable_training (the embeddings would change)")
        if dp_path.exists():
            try:
                job.datapool_names, job.datapool_emb = load_custom_embeddings(dp_path)
            except EmbeddingsError as exc:
                raise JobError(f"the datapool {dp_path} is unreadable: {exc}") from None
            log.info("datapool: %d samples selected in earlier runs", len(job.datapool_names))
    if job.datapool_names and not job.process_all:
        seen = set(job.datapool_names)
        job.names = [n for n in job.names if n not in seen]
    if (window is not None or job.datapool_names) and not job.process_all and not job.names:
        raise JobError(
            "no new input files since the last run (every file was processed by an earlier datapool run); "
            "add files or set datasource.process_all"
        )


def check_corruptness(job: Job) -> None:
    job.say(f"checking {len(job.names)} files for corruption and exact duplicates")
    record_check(job, check_files(job, job.names, progress=_progress(job.reporter, "checked")))


def check_files(
    job: Job, names: list[str], *, remove_duplicates: bool = True, progress: Callable[[int, int], None] | None = None
) -> CheckResult:
    """The corruptness (and exact-duplicate) check of ``names`` with the run's settings; the one
    check of both the single-worker path and a shard (which leaves duplicates to the assembly)."""
    docker = job.docker
    threshold = docker.corruptness_check.corruption_threshold if docker and docker.corruptness_check else None
    return check_samples(
        job.paths.input,
        names,
        num_workers=-1,
        corruption_threshold=threshold,
        remove_duplicates=remove_duplicates,
        progress=progress,
    )


def record_check(job: Job, checked: CheckResult) -> None:
    """Write the check's outputs and leave the candidates (ok files) in the job. Videos the listing could
    not open are corrupt files too (they have no frames to check)."""
    out = job.out
    for video, reason in job.unreadable_videos.items():
        checked.corrupt.setdefault(video, reason)
    write_lines(out / "filenames" / "corrupt_filenames.txt", sorted(checked.corrupt))
    write_lines(out / "filenames" / "duplicate_filenames.txt", sorted(checked.duplicates))
    (out / "data").mkdir(exist_ok=True)
    (out / "data" / "corruptness_check_information.json").write_text(
        json.dumps({"corrupt_samples": checked.corrupt, "duplicate_samples": checked.duplicates}, indent=2)
    )
    if checked.corrupt:
        log.warning("%d corrupt files are left out: %s", len(checked.corrupt), ", ".join(sorted(checked.corrupt)[:10]))
    if checked.duplicates:
        log.info("%d exact duplicates are left out", len(checked.duplicates))
    job.checked, job.candidates = checked, checked.ok
    if not job.candidates:
        raise JobError("every input file is corrupt or a duplicate; nothing to select from")


def wants_training(job: Job) -> bool:
    return bool(job.docker and job.docker.enable_training)


def _threads(job: Job) -> int:
    """The torch threads of training and embedding (``docker.num_threads``; unset: the default)."""
    return run_threads(job.docker.num_threads if job.docker else None)


def train(job: Job) -> None:
    lightly_dump = job.lightly_dump
    epochs = lightly_dump.get("trainer", {}).get("maxEpochs", "default")
    cfg = replace(
        TrainConfig.from_lightly(lightly_dump),
        torch_threads=_threads(job),
    )
    checkpoint, init = job.out / "lightly_epoch_last.ckpt", job.model if isinstance(job.model, SimCLRBackbone) else None
    if (task := training_task_of(job)) is not None:  # training.task_name: on the crops of the task's objects
        objects = task_objects(job, task)
        job.say(f"self-supervised training (SimCLR) on {len(objects)} crops of task {task}, {epochs} epochs")
        job.model = train_on_task_crops(
            job, task, objects, cfg, checkpoint, init, _progress(job.reporter, "trained"), log
        )
        return
    job.say(f"self-supervised training (SimCLR) on {len(job.candidates)} images, {epochs} epochs")
    job.model = train_simclr(
        job.paths.input,
        job.candidates,
        cfg,
        device=job.device,
        checkpoint_path=checkpoint,
        init=init,
        progress=_progress(job.reporter, "trained"),
        log=log,
    )


def embed(job: Job) -> None:
    docker = job.docker
    if docker and docker.embeddings:
        custom_embeddings(job)
    else:
        _model_embeddings(job)
    check_datapool_dim(job)


def normalize_embeddings(job: Job) -> bool:
    docker = job.docker
    return True if docker is None or docker.normalize_embeddings is None else docker.normalize_embeddings


def check_datapool_dim(job: Job) -> None:
    dp, emb = job.datapool_emb, job.emb
    assert emb is not None
    if dp is not None and dp.shape[1] != emb.shape[1]:
        raise JobError(
            f"the datapool has {dp.shape[1]}-d embeddings but this run makes {emb.shape[1]}-d ones; "
            "use the same embedding settings as the earlier runs or start a new datapool"
        )


def custom_embeddings(job: Job) -> None:
    """The candidates' rows of the run's custom embeddings CSV (``docker.embeddings``): the file of that
    name in ``.lightly/embeddings/`` of the LIGHTLY datasource (Lightly's way), else the embedding of that
    name uploaded to the dataset (``client.upload_embeddings``)."""
    assert job.docker is not None and job.docker.embeddings
    name, normalize = job.docker.embeddings, normalize_embeddings(job)
    uploaded = job.paths.uploaded_embeddings
    csv_path: Path | None = None
    if job.paths.lightly_root is not None:
        csv_path = _confined(
            job.paths.lightly_root / ".lightly" / "embeddings",
            name,
            "embeddings",
            ".lightly/embeddings/ of the LIGHTLY datasource",
        )
        if uploaded is not None and not csv_path.is_file():
            csv_path = None
    if csv_path is None:
        if uploaded is None:
            raise JobError(
                f"custom embeddings {name!r}: no LIGHTLY datasource (.lightly/embeddings/ in it) and no embedding "
                "of that name uploaded to the dataset (client.upload_embeddings)"
            )
        csv_path = uploaded
        job.say(f"reading custom embeddings {name} (uploaded to the dataset)")
    else:
        job.say(f"reading custom embeddings {name}")
    try:
        emb_names, emb_all = load_custom_embeddings(csv_path)
    except (EmbeddingsError, OSError) as exc:
        raise JobError(f"custom embeddings {name!r}: {exc}") from None
    index = {n: i for i, n in enumerate(emb_names)}
    missing = [n for n in job.candidates if n not in index]
    if missing:
        raise JobError(
            f"custom embeddings {name} have no row for {len(missing)} input files "
            f"(e.g. {missing[0]!r}); add them or restrict the input with relevant_filenames_file"
        )
    emb = emb_all[[index[n] for n in job.candidates]].astype(np.float32)
    if normalize:
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    job.emb, job.model_name = emb, "custom"


def embed_config(job: Job) -> EmbedConfig:
    """The embedder's settings for this run (its lightly config, the worker's options, the device)."""
    lightly_dump, opts = job.lightly_dump, job.options
    loader = lightly_dump.get("loader", {})
    collate = lightly_dump.get("collate", {})
    size = opts.embedding_input_size or collate.get("inputSize") or (224 if job.device == "cuda" else 128)
    return EmbedConfig(
        model="simclr" if job.model is not None else opts.embedding_model,
        input_size=int(size),
        batch_size=int(loader.get("batchSize") or 32),
        num_workers=int(loader.get("numWorkers", -1)),
        device=job.device,
        normalize=normalize_embeddings(job),
        seed=int(lightly_dump.get("seed") or 0),
        torch_threads=_threads(job),
    )


def embed_files(
    job: Job,
    names: list[str],
    cfg: EmbedConfig,
    progress: Callable[[int, int], None] | None,
    model: Any = None,
) -> tuple[np.ndarray, list[str]]:
    """(embeddings in the order of ``names``, the names that could not be read: zero rows); the one
    embedding call of both the single-worker path and a shard. ``model``: an already built
    ``cfg.model`` (a shard worker keeps one between shards); default the trained one or a new one."""
    failed: list[str] = []
    model = model if model is not None else job.model
    emb = embed_samples(job.paths.input, names, cfg, model=model, failed=failed, progress=progress)
    return emb, failed


def _model_embeddings(job: Job) -> None:
    cfg = embed_config(job)
    job.say(f"embedding {len(job.candidates)} images with {cfg.model} at {cfg.input_size} px")
    emb, failed = embed_files(job, job.candidates, cfg, _progress(job.reporter, "embedded"))
    record_embeddings(job, emb, failed, cfg.model)


def record_embeddings(job: Job, emb: np.ndarray, failed: list[str], model_name: str) -> None:
    """Leave the candidates' embeddings in the job; files that failed to decode are left out like corrupt ones."""
    candidates = job.candidates
    if failed:  # unreadable after all (e.g. vanished): left out like corrupt files
        log.warning("%d files could not be read while embedding; left out: %s", len(failed), failed[:5])
        bad = set(failed)
        keep = [i for i, n in enumerate(candidates) if n not in bad]
        candidates = [candidates[i] for i in keep]
        emb = emb[keep]
        checked = produced(job.checked, "the checked files")
        checked.corrupt.update({n: "unreadable while embedding" for n in bad})
        write_lines(job.out / "filenames" / "corrupt_filenames.txt", sorted(checked.corrupt))
        if not candidates:
            raise JobError("no input file could be read; nothing to select from")
    job.candidates, job.emb, job.model_name = candidates, emb, model_name


def wants_metadata(job: Job) -> bool:
    assert job.config.selection is not None
    types = {e.input.type for e in job.config.selection.strategies}
    crops = any(e.input.type == "EMBEDDINGS" and e.input.task for e in without_tiling(job.config.selection).strategies)
    return crops or bool(types & {"METADATA", "SCORES", "PREDICTIONS"})


def load_metadata(job: Job) -> None:
    job.say("reading metadata and predictions from .lightly/")
    if job.paths.lightly_root is None:
        raise JobError(
            "METADATA, SCORES and PREDICTIONS inputs and EMBEDDINGS of a task need a LIGHTLY datasource with "
            ".lightly/ files"
        )
    assert job.config.selection is not None
    try:
        job.extra = load_lightly_inputs(job.paths.lightly_root, job.candidates, without_tiling(job.config.selection))
    except SelectionError as exc:
        raise JobError(str(exc)) from None


def load_queries(job: Job) -> None:
    """SIMILARITY queries (no run state of their own: their time counts to the stage before)."""
    assert job.config.selection is not None and job.emb is not None
    for entry in job.config.selection.strategies:
        if entry.strategy.type == "SIMILARITY" and entry.input.tag_name:
            tag = entry.input.tag_name
            if entry.input.dataset_id:
                job.query[tag] = _dataset_query_embeddings(job, tag, entry.input.dataset_id)
            else:
                job.query[tag] = _query_embeddings(tag, job.candidates, job.emb, job.paths)


def _sequence_length(job: Job) -> int:
    docker = job.docker
    return int(docker.selected_sequence_length or 1) if docker else 1


def sample(job: Job) -> None:
    if _sequence_length(job) > 1:
        _sample_sequences(job, _sequence_length(job))
        return
    if (task := object_task_of(job)) is not None:  # object-level selection (crops of a prediction task)
        sample_objects(job, task, embed_config(job))
        return
    candidates = job.candidates
    job.say(f"selecting from {len(candidates)} candidates")
    inputs = SelectionInputs(
        filenames=candidates,
        embeddings=job.emb,
        datapool_embeddings=job.datapool_emb,
        query_embeddings=job.query,
        **job.extra,
    )
    assert job.config.selection is not None
    if advice := strategy_warning(job.config.selection, len(candidates)):
        log.warning(advice)
    try:
        job.result = result = select(job.config.selection, inputs, device=job.device)
    except SelectionError as exc:
        raise JobError(str(exc)) from None
    job.selected = [candidates[i] for i in result.selected]
    log.info("selected %d of %d candidates (%s)", len(job.selected), len(candidates), result.stop_reason)


def _sample_sequences(job: Job, length: int) -> None:
    """Sequence selection (``sequences.py``): select whole runs of ``length`` consecutive video frames."""
    assert job.config.selection is not None and job.emb is not None
    candidates = job.candidates
    found, images = split_sequences(candidates, length)
    if images:
        log.warning("sequence selection: %d images are in no video sequence and are left out", images)
    if not found:
        raise JobError(
            f"selected_sequence_length {length}: no video has {length} consecutive readable frames (sequence "
            "selection works on videos only); use a smaller length or set it to 1"
        )
    n_frames = len(candidates) - images  # Lightly: proportion_samples of the frames in the dataset
    try:
        cfg, parts = sequence_inputs(sequence_selection(job.config.selection, length, n_frames), job.extra, found)
    except SequenceError as exc:
        raise JobError(str(exc)) from None
    job.say(f"selecting from {len(found)} sequences of {length} frames ({len(found) * length} frames)")
    inputs = SelectionInputs(
        filenames=[q.name for q in found],
        embeddings=sequence_embeddings(job.emb, found, normalize_embeddings(job)),
        datapool_embeddings=job.datapool_emb,
        query_embeddings=job.query,
        **parts,
    )
    try:
        picked = select(cfg, inputs, device=job.device)
    except SelectionError as exc:
        raise JobError(str(exc)) from None
    chosen = [found[i] for i in picked.selected]
    positions = [p for q in chosen for p in q.positions]
    job.result = SelectionResult(
        selected=positions,
        removed_by_threshold=[p for i in picked.removed_by_threshold for p in found[i].positions],
        stop_reason=picked.stop_reason,
        details={**picked.details, "sequences": {"length": length, "available": len(found), "selected": len(chosen)}},
    )
    job.selected = [candidates[p] for p in positions]
    timings: dict[str, VideoTiming] = {}
    for video in {q.video for q in chosen}:
        try:
            timings[video] = video_timing(job.paths.input, video)
        except Exception as exc:  # the video was read for its frames; a failure now leaves its times out
            log.warning("sequence information: no frame times of %s (%s)", video, exc)
    (job.out / "data").mkdir(exist_ok=True)
    info = sequence_information(chosen, timings, candidates)
    (job.out / "data" / "sequence_information.json").write_text(json.dumps(info, indent=2))
    log.info(
        "selected %d sequences (%d frames) of %d (%s)", len(chosen), len(positions), len(found), picked.stop_reason
    )


def save_results(job: Job) -> None:
    out, candidates, selected, emb = job.out, job.candidates, job.selected, job.emb
    result = produced(job.result, "the selection")
    assert emb is not None
    job.say(f"writing results to {out}")
    write_lines(out / "filenames" / "selected_filenames.txt", selected)
    write_lines(out / "filenames" / "sampled_filenames_excluding_datapool.txt", selected)
    job.removed = [candidates[i] for i in result.removed_by_threshold]
    chosen = set(result.selected)
    not_selected = [n for i, n in enumerate(candidates) if i not in chosen]
    write_lines(out / "filenames" / "removed_filenames.txt", not_selected)
    write_lines(out / "filenames" / "threshold_removed_filenames.txt", job.removed)
    save_embeddings(out / "data" / "embeddings.csv", candidates, emb)
    dp_emb = job.datapool_emb
    sel_names = job.datapool_names + selected
    sel_emb = emb[result.selected] if dp_emb is None else np.concatenate([dp_emb, emb[result.selected]])
    save_embeddings(out / "data" / "selected_embeddings_including_datapool.csv", sel_names, sel_emb)
    docker, dp_path = job.docker, job.datapool_path
    update_pool = job.use_datapool and (
        docker is None or docker.datasource is None or docker.datasource.enable_datapool_update is not False
    )
    if update_pool and dp_path is not None:
        dp_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = dp_path.with_suffix(".tmp")
        save_embeddings(tmp, sel_names, sel_emb)
        tmp.replace(dp_path)
        log.info("datapool updated: %d samples", len(sel_names))
    if job.paths.lightly_mirror is not None:
        try:
            job.paths.lightly_mirror.push()
        except SourceAccessError as exc:
            raise JobError(str(exc)) from None


def generate_report(job: Job) -> None:
    emb = job.emb
    result, checked = produced(job.result, "the selection"), produced(job.checked, "the checked files")
    assert emb is not None
    job.say("plots and report")
    job.plots, stats = make_plots(job.out, emb, result.selected)
    job.report["summary"] = {
        "n_input_files": len(job.names) + len(job.datapool_names if not job.process_all else []),
        "n_corrupt": len(checked.corrupt),
        "n_duplicates": len(checked.duplicates),
        "n_datapool": len(job.datapool_names),
        "n_candidates": len(job.candidates),
        "n_removed_by_threshold": len(job.removed),
        "n_selected": len(job.selected),
        "stop_reason": result.stop_reason,
        "embedding_model": job.model_name,
        "embedding_dim": int(emb.shape[1]),
        "device": job.device,
    }
    job.report["distance_statistics"] = stats
    job.report["selected_filenames_preview"] = job.selected[:200]
    job.report["selection_details"] = result.details
    job.report[THUMBNAILS_KEY] = make_thumbnails(job.paths.input, job.selected)


# ---------------------------------------------------------------- helpers


def lightly_files_needed(config: WorkerConfigV4) -> list[str]:
    """The keys (and prefixes, ending in '/') of the LIGHTLY datasource's ``.lightly/`` files the run reads:
    what a bucket LIGHTLY datasource's mirror copies before the run."""
    docker, wanted = config.docker, []
    if docker and docker.relevant_filenames_file:
        rel = str(docker.relevant_filenames_file).replace("\\", "/")
        while rel.startswith("./"):
            rel = rel[2:]
        wanted.append(rel)
    if docker and docker.use_datapool:
        wanted.append(".lightly/datapool/datapool_latest.csv")
    if docker and docker.embeddings:
        wanted.append(f".lightly/embeddings/{docker.embeddings}")
    if docker and docker.checkpoint:
        wanted.append(f".lightly/checkpoints/{docker.checkpoint}")
    if docker and docker.enable_training and docker.training and docker.training.task_name:
        wanted.append(".lightly/predictions/")  # training on the crops of a prediction task
    for entry in config.selection.strategies if config.selection else []:
        if entry.input.type == "METADATA":
            wanted.append(".lightly/metadata/")
        if entry.input.type in ("PREDICTIONS", "SCORES") or (entry.input.type == "EMBEDDINGS" and entry.input.task):
            wanted.append(".lightly/predictions/")
        if entry.strategy.type == "SIMILARITY" and entry.input.tag_name and not entry.input.dataset_id:
            wanted.append(f".lightly/tags/{entry.input.tag_name}.txt")
    return list(dict.fromkeys(wanted))


def _confined(root: Path, rel: str, what: str, where: str) -> Path:
    try:
        return inside(root, rel, what, where)
    except PathOutsideRoot as exc:
        raise JobError(str(exc)) from None


def _device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise JobError("device=cuda was requested but no CUDA GPU is visible in this container")
    return requested


def _relevant_filenames(config: WorkerConfigV4, paths: JobPaths) -> list[str] | None:
    name = config.docker.relevant_filenames_file if config.docker else None
    if not name:
        return None
    if paths.lightly_root is None:
        raise JobError(
            "relevant_filenames_file needs a LIGHTLY datasource (client.set_local_config(purpose='LIGHTLY'))"
        )
    rel = str(name).replace("\\", "/")
    while rel.startswith("./"):
        rel = rel[2:]
    if not rel.startswith(".lightly/"):
        raise JobError(f"relevant_filenames_file {name!r} must lie under .lightly/ of the LIGHTLY datasource")
    path = _confined(
        paths.lightly_root / ".lightly",
        rel[len(".lightly/") :],
        "relevant_filenames_file",
        ".lightly/ of the LIGHTLY datasource",
    )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise JobError(f"relevant_filenames_file {name!r} cannot be read ({exc.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise JobError(
            f"relevant_filenames_file {name!r}, line {line}: not UTF-8 text (expected one filename per line)"
        ) from None
    return [x.strip() for x in text.splitlines() if x.strip() and not x.startswith("#")]


def _datapool_path(paths: JobPaths) -> Path | None:
    if paths.lightly_root is None:
        return None
    return _confined(
        paths.lightly_root / ".lightly",
        "datapool/datapool_latest.csv",
        "the datapool",
        ".lightly/ of the LIGHTLY datasource",
    )


def _progress(reporter: Reporter, verb: str) -> Callable[[int, int], None]:
    """Progress callback: stop between batches when the worker shuts down; a tqdm bar on stderr (the
    container log) and a log line every ~10 % (the run's log in the API and log.txt)."""
    from tqdm import tqdm

    last = [-1]
    bar: list[Any] = []

    def report(done: int, total: int) -> None:
        reporter.check_cancel()
        if not bar:
            bar.append(tqdm(total=total, desc=verb, unit="img", mininterval=2.0, file=sys.stderr, leave=False))
        bar[0].update(done - bar[0].n)
        if done >= total:
            bar[0].close()
        step = int(10 * done / total) if total else 10
        if step != last[0]:
            last[0] = step
            log.info("%s %d/%d", verb, done, total)

    return report


def _dataset_query_embeddings(job: Job, tag: str, dataset_id: str) -> np.ndarray:
    """SIMILARITY to another dataset's tag: that dataset's stored embeddings of the tag's files."""
    assert job.emb is not None
    where = f"SIMILARITY to tag {tag!r} of dataset {dataset_id}"
    if tag not in job.paths.dataset_queries:
        raise JobError(f"{where}: another dataset's tag is read through the API (waiting mode), not in local mode")
    wanted, csv_path = job.paths.dataset_queries[tag]
    try:
        names, emb = load_custom_embeddings(csv_path)
    except (EmbeddingsError, OSError) as exc:
        raise JobError(f"{where}: its embeddings are unreadable: {exc}") from None
    index = {n: i for i, n in enumerate(names)}
    rows = [index[n] for n in wanted if n in index]
    if not rows:
        raise JobError(f"{where}: none of its {len(wanted)} files has a stored embedding")
    if len(rows) < len(wanted):
        log.warning(
            "%s: %d of its %d files have no stored embedding; left out", where, len(wanted) - len(rows), len(wanted)
        )
    query = emb[rows].astype(np.float32)
    if query.shape[1] != job.emb.shape[1]:
        raise JobError(
            f"{where}: its embeddings are {query.shape[1]}-d but this run's are {job.emb.shape[1]}-d; embed both "
            "datasets with the same model"
        )
    if normalize_embeddings(job):
        query = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
    job.say(f"{where}: {len(rows)} query embeddings")
    return query


def _query_embeddings(tag: str, names: list[str], emb: np.ndarray, paths: JobPaths) -> np.ndarray:
    """SIMILARITY queries: filenames listed in .lightly/tags/<tag>.txt of the LIGHTLY datasource."""
    if paths.lightly_root is None:
        raise JobError(f"SIMILARITY to tag {tag!r} needs a LIGHTLY datasource with .lightly/tags/{tag}.txt")
    path = _confined(
        paths.lightly_root / ".lightly" / "tags", f"{tag}.txt", "the SIMILARITY query tag", ".lightly/tags/"
    )
    try:
        wanted = [x.strip() for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    except (OSError, UnicodeDecodeError):
        raise JobError(
            f"SIMILARITY query tag {tag!r}: list its filenames, one per line, in .lightly/tags/{tag}.txt"
        ) from None
    index = {n: i for i, n in enumerate(names)}
    rows = [index[n] for n in wanted if n in index]
    if not rows:
        raise JobError(f"none of the {len(wanted)} files of query tag {tag!r} is among the input files")
    return emb[rows]
