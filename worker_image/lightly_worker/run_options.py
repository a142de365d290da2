"""A run's process and thread counts (``docker.num_processes``, ``docker.num_threads``), applied before
the run: Lightly's options for the data loader's processes and torch's threads.

``num_processes`` is the data loader's worker processes (embedding and training) where the run's
``lightly.loader.num_workers`` is not set (that key is the more specific); ``num_threads`` is
``torch.set_num_threads`` for the run. -1 means one per vCPU for both; 0 processes loads in the run's
own process. A run without ``num_threads`` gets the thread count the process started with.
"""

from __future__ import annotations

import os

from lightly_protocol.models import WorkerConfigV4

_started_with: list[int] = []  # torch's thread count before the first run changed it


def with_num_processes(config: WorkerConfigV4) -> WorkerConfigV4:
    """``config`` with ``docker.num_processes`` as ``lightly.loader.num_workers`` where that is unset."""
    docker = config.docker
    if docker is None or docker.num_processes is None:
        return config
    wire = config.model_dump(mode="json", exclude_none=True)
    loader = wire.setdefault("lightly", {}).setdefault("loader", {})
    loader.setdefault("num_workers", docker.num_processes)
    return WorkerConfigV4.model_validate(wire)


def apply_num_threads(config: WorkerConfigV4) -> int:
    """Set torch's thread count for the run (``docker.num_threads``; unset: the count the process started
    with); the count set."""
    import torch

    if not _started_with:
        _started_with.append(torch.get_num_threads())
    wanted = config.docker.num_threads if config.docker else None
    if wanted is None:
        threads = _started_with[0]
    elif wanted == -1 or wanted == 0:
        threads = os.cpu_count() or 1
    else:
        threads = wanted
    torch.set_num_threads(threads)
    return threads


def prepare_run(config: WorkerConfigV4) -> WorkerConfigV4:
    """Both: the config the run uses, after torch's thread count is set."""
    apply_num_threads(config)
    return with_num_processes(config)
