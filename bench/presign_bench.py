"""Presigned S3 GET URLs per second: botocore's ``generate_presigned_url`` against the server's
``lightly_server.storage.sigv4.Presigner`` (the same URLs, byte for byte: tests/test_sigv4.py), no I/O.

    .venv/bin/python bench/presign_bench.py [--signs 5000] [--repeat 3]

A listing signs one read URL per file, so this is the server's CPU per listed key that signing costs
(docs/server.md, "Bucket datasources"). Prints one JSON document; the figures are in docs/server.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

from lightly_server.storage.s3 import s3_client
from lightly_server.storage.sigv4 import PROBE_KEY, Presigner


def _per_op_ms(fn: Callable[[int], object], n: int, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--signs", type=int, default=5000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    client = s3_client("eu-west-1", "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", 5)
    bucket = "bench-bucket"
    probe = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": PROBE_KEY})
    fast = Presigner("GET", probe, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    keys = [f"images/2026/12/{i:07d} é.jpg" for i in range(args.signs)]
    boto_ms = _per_op_ms(
        lambda i: client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": keys[i]}, ExpiresIn=900),
        args.signs,
        args.repeat,
    )
    fast_ms = _per_op_ms(lambda i: fast.sign(keys[i], 900), args.signs, args.repeat)
    doc = {
        "vcpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "signs": args.signs,
        "repeat": args.repeat,
        "botocore_ms_per_url": round(boto_ms, 4),
        "sigv4_presigner_ms_per_url": round(fast_ms, 4),
        "botocore_over_presigner": round(boto_ms / fast_ms, 1),
        "server_cpu_s_per_million_keys": {"botocore": round(boto_ms * 1000, 1), "presigner": round(fast_ms * 1000, 1)},
    }
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
