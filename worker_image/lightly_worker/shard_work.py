"""The work of a split run (an extension: docs/worker.md, "Parallel runs"; docs/server.md, Shards)
without the server: one shard's check and embedding, and the
assembly of all shards into the job state the rest of the pipeline expects.

Both call the stages' own functions (``stages.check_files``, ``stages.embed_files``,
``stages.record_check``, ``stages.record_embeddings``, ``stages.custom_embeddings``), so a split run
checks, embeds and leaves out files exactly like a single worker does. The one difference: a shard
cannot know the exact duplicates of files in other shards, so it reports each file's content hash
and ``assemble`` removes the duplicates over the whole input, in input order, as ``check_samples``
does.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from . import stages
from .embed import CheckResult, split_duplicates
from .job import Job, JobError
from .shardfile import ShardFileError, ShardResult, names_digest

log = logging.getLogger("lightly_worker.run")

Progress = Callable[[int, int], None]


@functools.lru_cache(maxsize=2)
def built_model(name: str, input_size: int, seed: int) -> Any:
    """The embedding model, built once per worker process and kept for its next shards (loading
    EfficientNet-Lite0's weights costs about as much as embedding a small shard). Seeded as
    ``embed_samples`` seeds it, so random-init models get the same weights as in a single run."""
    import torch

    from .embed import embedding_model_from_config

    torch.manual_seed(seed)
    return embedding_model_from_config(name, input_size)


def distributable(job: Job) -> str | None:
    """Why this run cannot be split (None: it can). Training needs all images in one process."""
    if stages.wants_training(job):
        return "enable_training is set: a training run is not split (one worker trains and embeds it)"
    if job.model is not None:
        return "a checkpoint is set: its model is on this worker only (one worker embeds the run with it)"
    return None


def process_shard(job: Job, names: list[str], index: int, start: int, progress: Progress | None) -> ShardResult:
    """Check and embed the files ``names`` (= files ``[start, start + len(names))`` of the listing) with
    the run's config; ``progress(done, total)`` counts files through both steps."""
    n = len(names)
    custom = bool(job.docker and job.docker.embeddings)

    def checking(done: int, total: int) -> None:
        if progress is not None:
            progress(done if custom else done // 2, n)

    checked = stages.check_files(job, names, remove_duplicates=False, progress=checking)
    pos = {name: i for i, name in enumerate(names)}
    unreadable: list[int] = []
    if custom:  # the coordinator reads the CSV itself (cheap); the check is the shard's work
        emb, model, size = np.zeros((n, 0), np.float32), "custom", 0
    else:
        cfg = stages.embed_config(job)

        def embedding(done: int, total: int) -> None:  # the second half of the shard's work
            if progress is not None:
                progress(n // 2 + done * (n - n // 2) // max(1, total), n)

        net = job.model if job.model is not None else built_model(cfg.model, cfg.input_size, cfg.seed)
        ok_emb, failed = stages.embed_files(job, checked.ok, cfg, embedding, model=net)
        emb = np.zeros((n, ok_emb.shape[1]), np.float32)
        if checked.ok:
            emb[[pos[x] for x in checked.ok]] = ok_emb
        unreadable = sorted(pos[x] for x in failed)
        model, size = cfg.model, cfg.input_size
    if progress is not None:
        progress(n, n)
    digests = [bytes.fromhex(checked.digests[x]) if x in checked.digests else None for x in names]
    corrupt = {pos[x]: reason for x, reason in checked.corrupt.items()}
    return ShardResult(index, start, start + n, names_digest(names), emb, digests, corrupt, unreadable, model, size)


def assemble(job: Job, names: list[str], results: list[ShardResult], ranges: list[tuple[int, int]]) -> None:
    """Fill the job from all shards' results as the check and embed stages would have.

    ``names``: the published listing; ``ranges``: the shards' ``[start, stop)`` in index order;
    ``results[i]`` must be shard i's (verified, ``ShardFileError`` -> ``JobError``). Leaves
    ``job.checked``, ``job.candidates``, ``job.emb`` and ``job.model_name`` and writes the check's outputs.
    """
    if len(results) != len(ranges):
        raise JobError(f"{len(results)} shard results for {len(ranges)} shards")
    if (ranges[0][0] if ranges else 0) != 0 or (ranges[-1][1] if ranges else 0) != len(names):
        raise JobError(f"the shards do not cover the {len(names)} listed files")
    checked = CheckResult()
    rows: dict[str, np.ndarray] = {}
    failed: list[str] = []
    models: set[tuple[str, int, int]] = set()
    for i, (result, (start, stop)) in enumerate(zip(results, ranges, strict=True)):
        part = names[start:stop]
        try:
            result.check(i, start, stop, part)
        except ShardFileError as exc:
            raise JobError(f"shard {i} has a wrong result: {exc}") from None
        models.add((result.model, result.input_size, int(result.embeddings.shape[1])))
        for j, name in enumerate(part):
            if j in result.corrupt:
                checked.corrupt[name] = result.corrupt[j]
                continue
            digest = result.digests[j]
            if digest is not None:
                checked.digests[name] = digest.hex()
            rows[name] = result.embeddings[j]
        failed += [part[j] for j in result.unreadable]
    if len(models) > 1:
        shown = ", ".join(f"{m} at {s} px ({d}-d)" for m, s, d in sorted(models))
        raise JobError(
            f"the shards were embedded with different settings ({shown}); give every worker of the fleet the "
            "same embedding.model and embedding.input_size (or set lightly.collate.input_size in the run's config)"
        )
    passed = sorted(rows)  # check_samples' order
    checked.ok, checked.duplicates = split_duplicates(passed, checked.digests)
    stages.record_check(job, checked)
    if job.docker and job.docker.embeddings:
        stages.custom_embeddings(job)
    else:
        model, _, dim = models.pop() if models else (job.options.embedding_model, 0, 0)
        emb = np.stack([rows[x] for x in job.candidates]) if job.candidates else np.zeros((0, dim), np.float32)
        kept = set(job.candidates)
        stages.record_embeddings(job, emb.astype(np.float32), [x for x in failed if x in kept], model)
    stages.check_datapool_dim(job)
