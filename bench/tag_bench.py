"""Benchmark of tag bitmasks (``bitMaskData``): building a tag from a selection and reading its filenames.

Compares, at each size N (every third sample selected):

- ``old``: the server's former code, a Python int grown bit by bit (``mask |= 1 << i``) and tested bit
  by bit (``mask >> i & 1``): every step copies the whole int, so both are quadratic in N;
- ``new``: ``lightly_server.bitmask`` (a byte array, one pass): linear;
- ``server``: the store's own functions end to end on an in-memory SQLite database
  (``materialize_selection_tag`` with N new samples, then ``tag_filenames``), for the new code.

Linear code doubles its time when N doubles, quadratic code quadruples it: the last column is the
growth of build + read per doubling of N, from the previous size.

    .venv/bin/python bench/tag_bench.py [--sizes 100000 200000 400000 800000] [--no-server] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any


def old_build(indices: list[int]) -> str:
    mask = 0
    for i in indices:
        mask |= 1 << i
    return hex(mask)


def old_read(mask_hex: str, n: int) -> list[int]:
    mask = int(mask_hex, 16)
    return [i for i in range(n) if mask >> i & 1]


REPEAT = 1


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    """The best of REPEAT calls (the machine may be shared)."""
    best, out = float("inf"), None
    for _ in range(REPEAT):
        t = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t)
    return best, out


def server_path(n: int) -> tuple[float, float]:
    from lightly_protocol.enums import RunState
    from lightly_server import store
    from lightly_server.db import Database
    from lightly_server.schema import datasets, run_selections, runs, tags
    from sqlalchemy import select

    db = Database("sqlite://")
    db.migrate()
    names = [f"images/{i:07d}.jpg" for i in range(n)]
    with db.write() as conn:
        conn.execute(
            datasets.insert().values(
                id="d" * 24, user_id="u", name="bench", type="Images", created_at=0, last_modified_at=0
            )
        )
        store.ensure_samples(conn, "d" * 24, names)  # the dataset's samples exist; the selection is every third
        conn.execute(
            runs.insert().values(
                id="r" * 24, user_id="u", docker_version="b", state=RunState.STARTED, dataset_id="d" * 24,
                archived=False, created_at=0, last_modified_at=0,
            )
        )  # fmt: skip
        conn.execute(run_selections.insert().values(run_id="r" * 24, tag_name=None, filenames=json.dumps(names[::3])))
    with db.write() as conn:
        run = conn.execute(select(runs).where(runs.c.id == "r" * 24)).first()
        t = time.perf_counter()
        store.materialize_selection_tag(conn, run)  # once: it creates the tag
        t_build = time.perf_counter() - t
    with db.read() as conn:
        tag = conn.execute(select(tags)).first()
        t_read, got = timed(store.tag_filenames, conn, tag)
    assert got == names[::3]
    db.dispose()
    return t_build, t_read


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 200_000, 400_000, 800_000])
    p.add_argument("--no-server", action="store_true", help="skip the end-to-end store measurement")
    p.add_argument("--repeat", type=int, default=3, help="best of this many calls per figure")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)
    from lightly_server import bitmask

    rows = []
    print(f"{'N':>8} | {'old build':>9} {'old read':>9} | {'new build':>9} {'new read':>9} | "
          f"{'server build':>12} {'server read':>11} | growth per doubling: old new server")  # fmt: skip
    prev = None
    for n in args.sizes:
        chosen = list(range(0, n, 3))
        ob, mask = timed(old_build, chosen)
        orr, got_old = timed(old_read, mask, n)
        nb, mask_new = timed(bitmask.encode, chosen, n)
        nr, inside = timed(bitmask.members, mask_new, range(n))
        assert mask_new == mask and [i for i, yes in enumerate(inside) if yes] == got_old == chosen
        sb, sr = (float("nan"), float("nan")) if args.no_server else server_path(n)
        row = {"n": n, "old_build": ob, "old_read": orr, "new_build": nb, "new_read": nr,
               "server_build": sb, "server_read": sr}  # fmt: skip
        ratio = ""
        if prev:
            doublings = math.log2(n / prev["n"])
            ratio = "  ".join(
                f"{((row[a] + row[b]) / (prev[a] + prev[b])) ** (1 / doublings):.1f}"
                for a, b in (("old_build", "old_read"), ("new_build", "new_read"), ("server_build", "server_read"))
            )
        print(f"{n:>8} | {ob:>8.3f}s {orr:>8.3f}s | {nb:>8.3f}s {nr:>8.3f}s | {sb:>11.3f}s {sr:>10.3f}s | {ratio}")
        rows.append(row)
        prev = row
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
