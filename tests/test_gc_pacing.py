"""The serving process's collector runs on a clock (``gc_pacing``): young collections every tick, a full
one every ``full_every_s``, every pause in ``lightly_server_gc_pause_seconds``.

The pacer is checked in a fresh interpreter (the collector is process-wide, so pacing pytest's own
process would change every other test), and in a real ``lightly-server serve`` process through its
``/metrics``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest
from conftest import ServerProcess
from lightly_server.gc_pacing import GC_PAUSES, GcPacer, PauseRecorder


def _sample(name: str, generation: str) -> float:
    for metric in GC_PAUSES.collect():
        for s in metric.samples:
            if s.name == name and s.labels.get("generation") == generation:
                return s.value
    raise AssertionError(f"no {name}{{generation={generation}}}")


def test_the_recorder_observes_each_collection_under_its_generation() -> None:
    import gc

    recorder = PauseRecorder()
    before = {g: _sample("lightly_server_gc_pause_seconds_count", g) for g in "012"}
    gc.callbacks.append(recorder)
    try:
        gc.collect(0)
        gc.collect(1)
    finally:
        gc.callbacks.remove(recorder)
    after = {g: _sample("lightly_server_gc_pause_seconds_count", g) for g in "012"}
    assert after["0"] == before["0"] + 1
    assert after["1"] == before["1"] + 1
    assert after["2"] == before["2"]
    assert _sample("lightly_server_gc_pause_seconds_sum", "1") > 0


@pytest.mark.parametrize(("young", "full"), [(0, 1), (-1, 1), (2, 1)])
def test_bad_intervals_are_refused(young: float, full: float) -> None:
    with pytest.raises(ValueError, match="young_every_s"):
        GcPacer(young_every_s=young, full_every_s=full)


PACED = r"""
import gc, json, sys, time, weakref
from lightly_server import gc_pacing
pacer = gc_pacing.tune_process(young_every_s=0.05, full_every_s=0.6)
assert gc_pacing.tune_process() is pacer  # once per process
seen = []
gc.callbacks.append(lambda phase, info: phase == "stop" and seen.append(info["generation"]))

class Node:
    pass

freed = []
def cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a  # only the collector can free these
    weakref.finalize(a, freed.append, 1)

for _ in range(100):
    cycle()
# no allocation pressure from here on: only the clock can start a collection
deadline = time.monotonic() + 10
while (len(freed) < 100 or pacer.full_collections < 1) and time.monotonic() < deadline:
    time.sleep(0.05)
pacer.stop()
print(json.dumps({"freed": len(freed), "young": pacer.young_collections, "full": pacer.full_collections,
                  "generations": sorted(set(seen)), "thresholds": gc.get_threshold(), "enabled": gc.isenabled(),
                  "frozen": gc.get_freeze_count() > 0}))
"""


def test_the_pacer_frees_cycles_without_allocation_pressure_and_runs_full_collections() -> None:
    r = subprocess.run([sys.executable, "-c", PACED], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["freed"] == 100, got  # the automatic collector alone would not have run (count < 50,000)
    assert got["young"] >= 5 and got["full"] >= 1, got
    assert 1 in got["generations"] and 2 in got["generations"], got
    assert got["thresholds"][2] >= 10**9, got  # never an automatic full collection
    assert got["enabled"] and got["frozen"], got


def test_a_serving_process_paces_its_collector_and_shows_the_pauses(server: ServerProcess) -> None:
    def count(generation: str) -> float:
        for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
            if line.startswith("lightly_server_gc_pause_seconds_count{") and f'generation="{generation}"' in line:
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError("no lightly_server_gc_pause_seconds_count in /metrics")

    first = count("1")
    deadline = time.monotonic() + 10
    while count("1") < first + 2:  # a young tick every 0.5 s, whatever the load
        assert time.monotonic() < deadline, f"generation-1 collections stayed at {count('1')} (from {first})"
        time.sleep(0.3)
