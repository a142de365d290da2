"""One selection job: list → check → (train) → embed → load inputs → select → save → report.

Used by the waiting mode (a scheduled run) and the local mode (a folder, no server). Progress goes
to a ``Reporter`` (run states and messages); log lines go to the ``lightly_worker.run`` logger.
Problems the user can fix raise ``JobError`` with a message that says what to do.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from lightly_protocol.models import WorkerConfigV4
from lightly_protocol.validation import config_problems, local_path_problem

from . import worker_version
from .paths import PathOutsideRoot, inside
from .report import make_plots, write_lines, write_report

log = logging.getLogger("lightly_worker.run")


class JobError(Exception):
    """The job cannot succeed as configured; the message is shown to the user as the run's message."""


class Cancelled(Exception):
    """The worker is shutting down; the job stops between steps."""


class Reporter(Protocol):
    def stage(self, state: str, message: str) -> None: ...

    def check_cancel(self) -> None: ...


class NullReporter:
    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self.echo = echo

    def stage(self, state: str, message: str) -> None:
        if self.echo:
            self.echo(f"[{state}] {message}")

    def check_cancel(self) -> None:
        return None


@dataclass
class JobPaths:
    input_root: Path  # where the INPUT datasource's files are
    lightly_root: Path | None  # where the LIGHTLY datasource's .lightly/ is (None: no LIGHTLY datasource)
    output_dir: Path


@dataclass
class JobResult:
    output_dir: Path
    selected: list[str]
    report: dict[str, Any]
    files: list[Path] = field(default_factory=list)


def resolve_paths(
    input_mount: Path,
    lightly_mount: Path,
    input_ds: dict[str, Any] | None,
    lightly_ds: dict[str, Any] | None,
    output_dir: Path,
) -> JobPaths:
    """Paths of a run from its datasources (LOCAL only: files under the worker's mounts)."""
    if input_ds is None:
        raise JobError("the dataset has no INPUT datasource; set one with client.set_local_config(purpose='INPUT')")
    for ds in (input_ds, lightly_ds):
        if ds is not None and ds.get("type") != "LOCAL":
            raise JobError(
                f"datasource type {ds.get('type')} is not supported by this worker; use a LOCAL datasource "
                "(client.set_local_config) with the files mounted at /input_mount"
            )
    for ds in (input_ds, lightly_ds):
        problem = local_path_problem(ds.get("fullPath", "")) if ds is not None else None
        if problem:
            raise JobError(problem)
    try:
        input_root = inside(
            input_mount, input_ds.get("fullPath", ""), "the INPUT datasource's fullPath", "the input mount"
        )
        lightly_root = (
            inside(
                lightly_mount, lightly_ds.get("fullPath", ""), "the LIGHTLY datasource's fullPath", "the lightly mount"
            )
            if lightly_ds
            else None
        )
    except PathOutsideRoot as exc:
        raise JobError(str(exc)) from None
    return JobPaths(input_root, lightly_root, output_dir)


def _confined(root: Path, rel: str, what: str, where: str) -> Path:
    try:
        return inside(root, rel, what, where)
    except PathOutsideRoot as exc:
        raise JobError(str(exc)) from None


def _stage_timer(report: dict[str, Any]) -> Callable[[str], None]:
    state = {"name": None, "t": time.perf_counter()}

    def enter(name: str) -> None:
        now = time.perf_counter()
        if state["name"]:
            report["stage_seconds"][state["name"]] = report["stage_seconds"].get(state["name"], 0.0) + (
                now - state["t"]
            )
        state["name"], state["t"] = name, now

    return enter


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


def run_job(
    config: WorkerConfigV4,
    paths: JobPaths,
    reporter: Reporter,
    *,
    device: str = "auto",
    embedding_model: str = "efficientnet-lite0",
    embedding_input_size: int | None = None,
    run_id: str | None = None,
    dataset_id: str | None = None,
    config_dump: dict[str, Any] | None = None,
) -> JobResult:
    from .embed import (
        EmbedConfig,
        EmbeddingsError,
        TrainConfig,
        check_samples,
        embed_samples,
        list_samples,
        load_custom_embeddings,
        save_embeddings,
        train_simclr,
    )
    from .selection import SelectionError, SelectionInputs, load_lightly_inputs, select

    started = time.perf_counter()
    report: dict[str, Any] = {
        "worker_version": worker_version(),
        "run_id": run_id,
        "dataset_id": dataset_id,
        "stage_seconds": {},
        "summary": {},
        "config": config_dump or config.wire(),
    }
    enter = _stage_timer(report)
    docker = config.docker
    lightly = config.lightly
    out = paths.output_dir
    out.mkdir(parents=True, exist_ok=True)

    enter("INITIALIZING")
    reporter.stage("INITIALIZING", "checking the configuration")
    problems = config_problems(config)
    if config.selection is None:
        problems.append("the run has no selection config; pass selection_config to schedule_compute_worker_run")
    if problems:
        raise JobError("invalid configuration: " + "; ".join(problems))
    if not paths.input_root.is_dir():
        raise JobError(
            f"the input directory {paths.input_root} does not exist; mount your images at the worker's "
            "input_mount and set the INPUT datasource's relative path accordingly"
        )
    dev = _device(device)
    (out / "config").mkdir(exist_ok=True)
    (out / "config" / "config.json").write_text(json.dumps(report["config"], indent=2, sort_keys=True, default=str))

    enter("LOADING_DATASET")
    reporter.check_cancel()
    reporter.stage("LOADING_DATASET", f"listing files under {paths.input_root}")
    relevant = _relevant_filenames(config, paths)
    names = list_samples(paths.input_root, relevant, log=log)
    if relevant is not None:
        missing = sorted(set(relevant) - set(names))
        if missing:
            log.warning("%d files of relevant_filenames_file do not exist in the input and are skipped", len(missing))
    if config.selection and config.selection.lightly_path_regex:
        rx = re.compile(config.selection.lightly_path_regex)
        names = [n for n in names if rx.search(n)]
    if not names:
        raise JobError(f"no input files found under {paths.input_root} (images: jpg, png, webp, bmp, tiff)")
    log.info("found %d input files", len(names))

    datapool_names: list[str] = []
    datapool_emb: np.ndarray | None = None
    use_datapool = bool(docker and docker.use_datapool)
    dp_path = _datapool_path(paths)
    if use_datapool:
        if dp_path is None:
            raise JobError("use_datapool needs a LIGHTLY datasource to keep the datapool in")
        if docker and docker.enable_training:
            raise JobError("use_datapool cannot be combined with enable_training (the embeddings would change)")
        if dp_path.exists():
            try:
                datapool_names, datapool_emb = load_custom_embeddings(dp_path)
            except EmbeddingsError as exc:
                raise JobError(f"the datapool {dp_path} is unreadable: {exc}") from None
            log.info("datapool: %d samples selected in earlier runs", len(datapool_names))
    process_all = bool(docker and docker.datasource and docker.datasource.process_all)
    if datapool_names and not process_all:
        seen = set(datapool_names)
        names = [n for n in names if n not in seen]
        if not names:
            raise JobError(
                "no new input files since the last run (all are in the datapool); add files or set "
                "datasource.process_all"
            )

    enter("CHECKING_CORRUPTNESS")
    reporter.check_cancel()
    reporter.stage("CHECKING_CORRUPTNESS", f"checking {len(names)} files for corruption and exact duplicates")
    threshold = docker.corruptness_check.corruption_threshold if docker and docker.corruptness_check else None
    checked = check_samples(
        paths.input_root, names, num_workers=-1, corruption_threshold=threshold, progress=_progress(reporter, "checked")
    )
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
    candidates = checked.ok
    if not candidates:
        raise JobError("every input file is corrupt or a duplicate; nothing to select from")

    lightly_dump = lightly.wire() if lightly else {}
    loader = lightly_dump.get("loader", {})
    collate = lightly_dump.get("collate", {})
    model = None
    if docker and docker.enable_training:
        enter("TRAINING")
        reporter.check_cancel()
        trainer = lightly_dump.get("trainer", {})
        reporter.stage(
            "TRAINING",
            f"self-supervised training (SimCLR) on {len(candidates)} images, "
            f"{trainer.get('maxEpochs', 'default')} epochs",
        )
        model = train_simclr(
            paths.input_root,
            candidates,
            TrainConfig.from_lightly(lightly_dump),
            device=dev,
            checkpoint_path=out / "lightly_epoch_last.ckpt",
            progress=_progress(reporter, "trained"),
        )

    enter("EMBEDDING")
    reporter.check_cancel()
    normalize = True if docker is None or docker.normalize_embeddings is None else docker.normalize_embeddings
    if docker and docker.embeddings:
        if paths.lightly_root is None:
            raise JobError("custom embeddings need a LIGHTLY datasource (.lightly/embeddings/ in it)")
        csv_path = _confined(
            paths.lightly_root / ".lightly" / "embeddings",
            docker.embeddings,
            "embeddings",
            ".lightly/embeddings/ of the LIGHTLY datasource",
        )
        reporter.stage("EMBEDDING", f"reading custom embeddings {docker.embeddings}")
        try:
            emb_names, emb_all = load_custom_embeddings(csv_path)
        except (EmbeddingsError, OSError) as exc:
            raise JobError(f"custom embeddings {docker.embeddings!r}: {exc}") from None
        index = {n: i for i, n in enumerate(emb_names)}
        missing = [n for n in candidates if n not in index]
        if missing:
            raise JobError(
                f"custom embeddings {docker.embeddings} have no row for {len(missing)} input files "
                f"(e.g. {missing[0]!r}); add them or restrict the input with relevant_filenames_file"
            )
        emb = emb_all[[index[n] for n in candidates]].astype(np.float32)
        if normalize:
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        model_name = "custom"
    else:
        size = embedding_input_size or collate.get("inputSize") or (224 if dev == "cuda" else 128)
        cfg = EmbedConfig(
            model="simclr" if model is not None else embedding_model,
            input_size=int(size),
            batch_size=int(loader.get("batchSize") or 32),
            num_workers=int(loader.get("numWorkers", -1)),
            device=dev,
            normalize=normalize,
            seed=int(lightly_dump.get("seed") or 0),
        )
        reporter.stage("EMBEDDING", f"embedding {len(candidates)} images with {cfg.model} at {cfg.input_size} px")
        failed: list[str] = []
        emb = embed_samples(
            paths.input_root, candidates, cfg, model=model, failed=failed, progress=_progress(reporter, "embedded")
        )
        if failed:  # unreadable after all (e.g. vanished): left out like corrupt files
            log.warning("%d files could not be read while embedding; left out: %s", len(failed), failed[:5])
            bad = set(failed)
            keep = [i for i, n in enumerate(candidates) if n not in bad]
            candidates = [candidates[i] for i in keep]
            emb = emb[keep]
            checked.corrupt.update({n: "unreadable while embedding" for n in bad})
            write_lines(out / "filenames" / "corrupt_filenames.txt", sorted(checked.corrupt))
            if not candidates:
                raise JobError("no input file could be read; nothing to select from")
        model_name = cfg.model
    if datapool_emb is not None and datapool_emb.shape[1] != emb.shape[1]:
        raise JobError(
            f"the datapool has {datapool_emb.shape[1]}-d embeddings but this run makes {emb.shape[1]}-d ones; "
            "use the same embedding settings as the earlier runs or start a new datapool"
        )

    selection = config.selection
    assert selection is not None
    input_types = {e.input.type for e in selection.strategies}
    extra: dict[str, Any] = {}
    if input_types & {"METADATA", "SCORES", "PREDICTIONS"}:
        enter("LOADING_METADATA")
        reporter.check_cancel()
        reporter.stage("LOADING_METADATA", "reading metadata and predictions from .lightly/")
        if paths.lightly_root is None:
            raise JobError("METADATA, SCORES and PREDICTIONS inputs need a LIGHTLY datasource with .lightly/ files")
        try:
            extra = load_lightly_inputs(paths.lightly_root, candidates, selection)
        except SelectionError as exc:
            raise JobError(str(exc)) from None
    query: dict[str, np.ndarray] = {}
    for entry in selection.strategies:
        if entry.strategy.type == "SIMILARITY" and entry.input.tag_name:
            query[entry.input.tag_name] = _query_embeddings(entry.input.tag_name, candidates, emb, paths)

    enter("SAMPLING")
    reporter.check_cancel()
    reporter.stage("SAMPLING", f"selecting from {len(candidates)} candidates")
    inputs = SelectionInputs(
        filenames=candidates, embeddings=emb, datapool_embeddings=datapool_emb, query_embeddings=query, **extra
    )
    try:
        result = select(selection, inputs, device=dev)
    except SelectionError as exc:
        raise JobError(str(exc)) from None
    selected = [candidates[i] for i in result.selected]
    log.info("selected %d of %d candidates (%s)", len(selected), len(candidates), result.stop_reason)

    enter("SAVING_RESULTS")
    reporter.check_cancel()
    reporter.stage("SAVING_RESULTS", f"writing results to {out}")
    write_lines(out / "filenames" / "selected_filenames.txt", selected)
    write_lines(out / "filenames" / "sampled_filenames_excluding_datapool.txt", selected)
    removed = [candidates[i] for i in result.removed_by_threshold]
    chosen = set(result.selected)
    not_selected = [n for i, n in enumerate(candidates) if i not in chosen]
    write_lines(out / "filenames" / "removed_filenames.txt", not_selected)
    write_lines(out / "filenames" / "threshold_removed_filenames.txt", removed)
    save_embeddings(out / "data" / "embeddings.csv", candidates, emb)
    sel_names = datapool_names + selected
    sel_emb = emb[result.selected] if datapool_emb is None else np.concatenate([datapool_emb, emb[result.selected]])
    save_embeddings(out / "data" / "selected_embeddings_including_datapool.csv", sel_names, sel_emb)
    update_pool = use_datapool and (
        docker is None or docker.datasource is None or docker.datasource.enable_datapool_update is not False
    )
    if update_pool and dp_path is not None:
        dp_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = dp_path.with_suffix(".tmp")
        save_embeddings(tmp, sel_names, sel_emb)
        tmp.replace(dp_path)
        log.info("datapool updated: %d samples", len(sel_names))

    enter("GENERATING_REPORT")
    reporter.check_cancel()
    reporter.stage("GENERATING_REPORT", "plots and report")
    plots, stats = make_plots(out, emb, result.selected)
    report["summary"] = {
        "n_input_files": len(names) + len(datapool_names if not process_all else []),
        "n_corrupt": len(checked.corrupt),
        "n_duplicates": len(checked.duplicates),
        "n_datapool": len(datapool_names),
        "n_candidates": len(candidates),
        "n_removed_by_threshold": len(removed),
        "n_selected": len(selected),
        "stop_reason": result.stop_reason,
        "embedding_model": model_name,
        "embedding_dim": int(emb.shape[1]),
        "device": dev,
    }
    report["distance_statistics"] = stats
    report["selected_filenames_preview"] = selected[:200]
    enter("DONE")
    report["summary"]["duration_seconds"] = round(time.perf_counter() - started, 3)
    write_report(out, report, plots)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    return JobResult(out, selected, report, files)


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
