"""Pure helpers of the run pages: progress through the run states, stage timings from the log, durations."""

from __future__ import annotations

import json
from dataclasses import dataclass

from lightly_protocol.enums import TERMINAL_RUN_STATES, RunState

#: the states a run passes on its way, in order (the terminal ones end it)
STAGES: tuple[str, ...] = tuple(s.value for s in RunState if s not in TERMINAL_RUN_STATES)
RUN_STATES: tuple[str, ...] = tuple(s.value for s in RunState)


def progress_percent(state: str) -> int:
    """How far a run in ``state`` is along ``STAGES`` (100 once it ended, whatever the end)."""
    if state in TERMINAL_RUN_STATES:
        return 100
    if state not in STAGES:
        return 0
    return round(100 * STAGES.index(state) / len(STAGES))


def run_duration_ms(state: str, created_at: int, last_modified_at: int, now: int) -> int:
    """How long the run ran: to its last change once it ended, else until now."""
    end = last_modified_at if state in TERMINAL_RUN_STATES else now
    return max(0, end - created_at)


@dataclass(frozen=True)
class Stage:
    state: str
    started_at: int  # ms
    duration_ms: int | None  # None: still in it


def stage_timings(entries: list[str], state: str, last_modified_at: int, now: int) -> list[Stage]:
    """The stages a run's log shows (JSON entries with ``ts`` and ``state``, in order): each state change
    starts one, which lasts until the next; the last lasts until the run ended, or is still going."""
    starts: list[tuple[str, int]] = []
    for raw in entries:
        entry = json.loads(raw)
        s, ts = entry.get("state"), entry.get("ts")
        if isinstance(s, str) and isinstance(ts, int) and (not starts or starts[-1][0] != s):
            starts.append((s, ts))
    stages: list[Stage] = []
    for i, (s, ts) in enumerate(starts):
        if i + 1 < len(starts):
            stages.append(Stage(s, ts, max(0, starts[i + 1][1] - ts)))
        elif state in TERMINAL_RUN_STATES:
            stages.append(Stage(s, ts, max(0, last_modified_at - ts) if s != state else 0))
        else:
            stages.append(Stage(s, ts, None))
    return stages
