"""Signals that arrive while the worker is still starting (importing torch takes seconds).

As PID 1 of a container, a process ignores SIGTERM while it has no handler for it, so a pod deleted
during the worker's startup would otherwise hang in Terminating for its whole grace period. The CLI
installs these handlers first; the agent, once its own handlers are in place, stops at once when a
signal came in meanwhile.
"""

from __future__ import annotations

import signal
from typing import Any

_received: list[int] = []


def remember() -> None:
    """Record SIGTERM/SIGINT until the agent installs its own handlers."""

    def handler(signum: int, _frame: Any) -> None:
        _received.append(signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def received() -> str | None:
    """The name of the first signal that arrived during startup, if any."""
    return signal.Signals(_received[0]).name if _received else None
