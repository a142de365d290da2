"""Fault-injection tests only: hold the worker at a named point until the test lets it go.

A directory in ``LIGHTLY_WORKER_FAILPOINT_DIR`` where a point with a ``<NAME>.hold`` file waits for
``<NAME>.go`` (or ``all.go``). Names are run stages (``EMBEDDING``, ...) and ``SHARD`` (a shard worker
holding a shard, before its work). Never active unless the variable is set.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .job import Cancelled

FAILPOINT_ENV = "LIGHTLY_WORKER_FAILPOINT_DIR"


def failpoint(name: str, cancel: threading.Event) -> None:
    """Wait at ``name`` while the test holds it (no-op unless the variable is set).

    Writes ``<NAME>.reached`` when it gets there, so a test can kill or stop the worker at exactly
    this point while the heartbeats go on; ``cancel`` (a shutdown past its grace period) still stops it.
    """
    folder = os.environ.get(FAILPOINT_ENV)
    if not folder or not (Path(folder) / f"{name}.hold").exists():
        return
    gate = Path(folder)
    (gate / f"{name}.reached").write_text(str(os.getpid()))
    while not (gate / f"{name}.go").exists() and not (gate / "all.go").exists():
        if cancel.wait(0.05):
            raise Cancelled("the worker is shutting down")
