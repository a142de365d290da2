"""embed_samples: the DataLoader-driven embedding loop (CUDA + mixed precision when present, CPU otherwise)."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..sources import InputSource, as_source
from ._common import LOG, Progress, autocast_dtype, cpu_count, report, resolve_device, resolve_workers
from .decode import ChunkDataset, make_chunks
from .files import ImageRef, SampleRef, resolve_sample
from .models import channels_last, embedding_model_from_config


@dataclass
class EmbedConfig:
    model: str = "efficientnet-lite0"  # or "simclr" (pass the trained model) or a resnet-* name (random init)
    input_size: int = 224
    batch_size: int = 32
    num_workers: int = -1  # decode worker processes: -1 = all vCPUs, 0 = decode in this process
    device: str = "auto"  # "auto" = cuda if available, else cpu
    normalize: bool = True  # unit-length rows
    seed: int = 0
    precision: str = "auto"  # auto = bf16 (fp16 where bf16 is unsupported) autocast on CUDA, fp32 on CPU
    torch_threads: int = 0  # CPU intra-op threads for the model; 0 = auto: vCPUs - 1 (see threads_for)
    draft: bool = True  # DCT-domain downscaled JPEG decode; False only for benchmarks


def threads_for(cfg: EmbedConfig, device: torch.device) -> int:
    """Intra-op threads for the model on CPU: cfg.torch_threads, or by default vCPUs - 1 (at least 1).

    One vCPU is left to the decode workers and the main loop. The model and the decoders share the cores,
    and OpenMP's barriers make a model running on every core stall whenever a decoder (or any other process)
    takes one: on the 2-vCPU dev box 2 threads were 2x *slower* than 1 (see docs/benchmarks.md). On a GPU
    the setting does not matter (the model runs on the device).
    """
    if device.type != "cpu":
        return torch.get_num_threads()
    return cfg.torch_threads if cfg.torch_threads > 0 else max(1, cpu_count() - 1)


def loader_worker_init(_: int) -> None:
    torch.set_num_threads(1)


def embed_samples(
    input_root: Path | InputSource,
    names: list[str],
    cfg: EmbedConfig,
    model: nn.Module | None = None,
    *,
    failed: list[str] | None = None,
    progress: Progress | None = None,
    log: logging.Logger = LOG,
) -> np.ndarray:
    """N x D float32 embeddings in the order of ``names`` (images or video frame names under input_root, a
    folder or an ``InputSource``).

    ``model``: any module mapping float B x 3 x S x S in [0, 1] to B x D (e.g. train_simclr's result);
    default: cfg.model built offline. Samples that cannot be read or decoded get a zero row, are logged and
    appended to ``failed`` (run check_samples first to exclude them).
    """
    source = as_source(input_root)
    if cfg.input_size < 1 or cfg.batch_size < 1:
        raise ValueError("input_size and batch_size must be >= 1")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model_label = cfg.model if model is None else type(model).__name__
    model = prepare_model(cfg, model, device)
    amp = autocast_dtype(device, cfg.precision)
    n = len(names)
    loader, workers = _loader(source, names, cfg, device, log)

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads_for(cfg, device))
    log.info(
        "embedding %d samples with %s on %s (input %d px, batch %d, %d decode workers, %d threads, amp %s)",
        n,
        model_label,
        device,
        cfg.input_size,
        cfg.batch_size,
        workers,
        torch.get_num_threads(),
        amp,
    )
    t0 = time.perf_counter()
    try:
        out, bad = run_model(loader, model, device, amp, n, progress)
    finally:
        torch.set_num_threads(old_threads)
    if out is None:  # no samples: run the model once on a dummy to learn D
        with torch.inference_mode():
            d = model(torch.zeros(1, 3, cfg.input_size, cfg.input_size, device=device)).reshape(1, -1).shape[1]
        out = np.zeros((0, d), dtype=np.float32)
    _zero_failed(out, bad, names, failed, log)
    if cfg.normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
    dt = time.perf_counter() - t0
    log.info("embedded %d samples in %.1f s (%.1f samples/s), dim %d", n, dt, n / dt if dt > 0 else 0.0, out.shape[1])
    return out


def prepare_model(cfg: EmbedConfig, model: nn.Module | None, device: torch.device) -> nn.Module:
    """The model to run: ``model`` or cfg.model built offline, in eval mode on ``device``, channels_last."""
    if model is None:
        model = embedding_model_from_config(cfg.model, cfg.input_size)
    model = model.eval().to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    # The loader's uint8 N x 3 x S x S tensors are NHWC in memory (a permuted view), i.e. already channels_last;
    # a channels_last model avoids a layout conversion per conv (measured 1.5-2x on CPU for EfficientNet-Lite0).
    return channels_last(model)


def _loader(
    source: InputSource, names: list[str], cfg: EmbedConfig, device: torch.device, log: logging.Logger
) -> tuple[DataLoader[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], int]:
    """The DataLoader of decoded chunks of ``names`` and its number of decode worker processes."""
    n = len(names)
    refs: list[SampleRef] = []
    for name in names:
        try:
            refs.append(resolve_sample(source, name))
        except FileNotFoundError:
            refs.append(ImageRef(name, name))  # fails in the loader -> zero row, reported
    workers = resolve_workers(cfg.num_workers)
    # Items of one model batch each; with few samples, smaller items so that every worker gets some.
    chunk = max(1, min(cfg.batch_size, math.ceil(n / max(1, workers)))) if n else 1
    chunks = make_chunks(refs, chunk)
    workers = min(workers, len(chunks))
    dataset = ChunkDataset(chunks, cfg.input_size, source, draft=cfg.draft, log=log)
    loader = DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=loader_worker_init if workers > 0 else None,
    )
    return loader, workers


def run_model(
    loader: DataLoader[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    model: nn.Module,
    device: torch.device,
    amp: torch.dtype | None,
    n: int,
    progress: Progress | None,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Run ``model`` over every batch: the N x D rows (None when there were no batches) and which rows
    could not be decoded."""
    out: np.ndarray | None = None
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    bad = np.zeros(n, dtype=bool)
    done = 0

    def flush() -> None:
        nonlocal out
        if not pending:
            return
        pos = torch.cat([p for p, _ in pending]).numpy()
        feats = torch.cat([f for _, f in pending]).float().cpu().numpy()
        pending.clear()
        if out is None:
            out = np.zeros((n, feats.shape[1]), dtype=np.float32)
        out[pos] = feats

    with torch.inference_mode():
        for positions, images, ok in loader:
            x = images.to(device, non_blocking=True).float().div_(255.0)
            ctx = torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
            with ctx:
                feats = model(x)
            feats = feats.reshape(feats.shape[0], -1)
            pending.append((positions, feats))
            if not bool(ok.all()):
                bad[positions[~ok].numpy()] = True
            if len(pending) >= 64 or device.type == "cpu":
                flush()
            done += len(positions)
            report(progress, done, n)
        flush()
    return out, bad


def _zero_failed(
    out: np.ndarray, bad: np.ndarray, names: list[str], failed: list[str] | None, log: logging.Logger
) -> None:
    """Zero the rows that could not be decoded, log them and add them to ``failed``."""
    if bad.any():
        out[bad] = 0.0
        names_bad = [names[i] for i in np.flatnonzero(bad)]
        log.warning("%d sample(s) could not be decoded and got zero embeddings: %s", len(names_bad), names_bad[:5])
        if failed is not None:
            failed.extend(names_bad)
