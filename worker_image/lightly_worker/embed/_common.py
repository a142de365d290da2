"""Small shared helpers: progress callbacks, CPU counts, device and thread selection."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import torch

Progress = Callable[[int, int], None]

LOG = logging.getLogger("lightly_worker.embed")


def cpu_count() -> int:
    """vCPUs this process may run on (cgroup/affinity aware where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(num_workers: int) -> int:
    """-1 = all vCPUs, 0 = in-process, n = n worker processes."""
    if num_workers < -1:
        raise ValueError(f"num_workers must be >= -1, got {num_workers}")
    return cpu_count() if num_workers == -1 else num_workers


def run_threads(num_threads: int | None) -> int:
    """A run's ``num_threads`` as a thread count for torch: -1 (and 0) one per vCPU; None: 0, the
    component's own default."""
    if num_threads is None:
        return 0
    return cpu_count() if num_threads <= 0 else num_threads


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return dev


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` ("auto", "fp32", "fp16", "bf16"); None = no autocast."""
    if precision not in ("auto", "fp32", "fp16", "bf16"):
        raise ValueError(f"precision must be auto, fp32, fp16 or bf16, got {precision!r}")
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)
