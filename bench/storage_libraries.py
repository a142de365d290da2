"""Which storage library the server uses for bucket datasources (issue 23): boto3 (the provider's own SDK)
against obstore (one Rust API for S3, GCS and Azure), on what the server does per request.

    .venv/bin/python bench/storage_libraries.py --keys 3000 --signs 5000 --reads 200
    (obstore is not a dependency: pip install obstore first; the script says so when it is missing)

Everything is real: moto's S3 server in its own process on loopback (lightly_devkit.stores.start_s3). Both
libraries talk to the same bucket in one run of this script, and each figure is the median of ``--repeat``
rounds, so the ratios are measured side by side:

* list: every key of the bucket, 1000 per page (the datasource listing's provider pages);
* sign: ``--signs`` presigned GET URLs (what every read URL of a listing and every redirect costs; no I/O);
* read: ``--reads`` ranged reads of 64 KiB (what a video's ranged reads and the scheduling check do).

Prints one JSON document (``--json FILE`` writes it too); docs/server.md, "Bucket datasources", has the
figures and the choice.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "devkit"))

from lightly_devkit.stores import start_s3

BUCKET = "bench-libraries"
REGION = "us-east-1"


def _timed(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=3000)
    p.add_argument("--signs", type=int, default=5000)
    p.add_argument("--reads", type=int, default=200)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    try:
        import obstore
        from obstore.store import S3Store
    except ImportError:
        sys.exit("obstore is not installed: pip install obstore (it is only needed by this benchmark)")
    import boto3
    from botocore.config import Config

    with tempfile.TemporaryDirectory() as tmp:
        s3 = start_s3(Path(tmp) / "moto.log")
        try:
            client = boto3.client(
                "s3",
                endpoint_url=s3.url,
                region_name=REGION,
                aws_access_key_id="AKID",
                aws_secret_access_key="SECRET",
                config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "total_max_attempts": 3}),
            )
            client.create_bucket(Bucket=BUCKET)
            body = bytes(range(256)) * 1024  # 256 KiB
            for i in range(args.keys):
                client.put_object(
                    Bucket=BUCKET, Key=f"in/{i // 100:03d}/img-{i:06d}.jpg", Body=body if i < 50 else b"x"
                )
            store = S3Store(
                BUCKET,
                endpoint=s3.url,
                region=REGION,
                access_key_id="AKID",
                secret_access_key="SECRET",
                virtual_hosted_style_request=False,
                client_options={"allow_http": True},
            )
            keys = [f"in/{i // 100:03d}/img-{i:06d}.jpg" for i in range(args.keys)]
            hot = keys[:50]

            def boto_list() -> int:
                pages = client.get_paginator("list_objects_v2").paginate(
                    Bucket=BUCKET, Prefix="in/", PaginationConfig={"PageSize": 1000}
                )
                return sum(len(page.get("Contents", [])) for page in pages)

            def obstore_list() -> int:
                return sum(len(batch) for batch in obstore.list(store, prefix="in/", chunk_size=1000))

            assert boto_list() == obstore_list() == args.keys

            def boto_sign() -> None:
                for k in keys[: args.signs]:
                    client.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": k}, ExpiresIn=900)

            def obstore_sign() -> None:
                for k in keys[: args.signs]:
                    obstore.sign(store, "GET", k, timedelta(seconds=900))

            def boto_read() -> None:
                for i in range(args.reads):
                    client.get_object(Bucket=BUCKET, Key=hot[i % len(hot)], Range="bytes=65536-131071")["Body"].read()

            def obstore_read() -> None:
                for i in range(args.reads):
                    bytes(obstore.get_range(store, hot[i % len(hot)], start=65536, end=131072))

            rows: dict[str, dict[str, float]] = {}
            for name, (b, o, n) in {
                "list_all_keys": (boto_list, obstore_list, 1),
                "sign_get_url": (boto_sign, obstore_sign, args.signs),
                "ranged_read_64k": (boto_read, obstore_read, args.reads),
            }.items():
                tb, to = _timed(b, args.repeat), _timed(o, args.repeat)
                rows[name] = {
                    "boto3_ms_per_op": round(1000 * tb / n, 4),
                    "obstore_ms_per_op": round(1000 * to / n, 4),
                    "boto3_over_obstore": round(tb / to, 2),
                }
        finally:
            s3.stop()
    import botocore

    doc = {
        "keys": args.keys,
        "signs": args.signs,
        "reads": args.reads,
        "repeat": args.repeat,
        "versions": {"boto3": boto3.__version__, "botocore": botocore.__version__, "obstore": obstore.__version__},
        "results": rows,
    }
    out = json.dumps(doc, indent=2)
    print(out)
    if args.json:
        args.json.write_text(out)


if __name__ == "__main__":
    main()
