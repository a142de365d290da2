"""Object-level selection at scale: crops embedded from memory vs the old write-every-crop path.

    .venv/bin/python bench/crop_bench.py                        # the figures in docs/benchmarks.md
    .venv/bin/python bench/crop_bench.py --images 100 --per-image 20 --cases memory:none   # smoke

Generated 1280x720 photo-like JPEGs (bench/embedding_bench.py's generator), each with ``--per-image``
boxes of 24-400 px. Every case runs in its own process, so its peak RSS is its own:

* ``memory:<model>``: ``crop_embed.embed_crops`` (each image decoded once for all its crops, crops resized in
  memory, batches to the model), then ``crops.write_crops`` of the selected 1 % (what a run writes);
* ``files:<model>``: the path before it: every crop written as PNG, embedded from the files, the
  unselected ones deleted;
* model ``none`` is a pooling layer (the data path alone: read, decode, crop, resize, batch);
  ``efficientnet-lite0`` is the worker's default embedding model.

Reports objects/s, peak RSS of the main process and of the largest decode worker, and bytes written.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from embedding_bench import make_jpegs
from lightly_worker.crop_embed import embed_crops
from lightly_worker.crops import write_crops
from lightly_worker.embed import EmbedConfig, embed_samples
from lightly_worker.selection import ObjectRef
from lightly_worker.selection.objects import crop_name
from lightly_worker.selection.scores import ObjectPrediction
from torch import nn


def make_objects(names: list[str], per_image: int, size: tuple[int, int], seed: int = 0) -> list[ObjectRef]:
    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    for i, name in enumerate(names):
        for k in range(per_image):
            bw, bh = (int(v) for v in rng.integers(24, 400, 2))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            pred = ObjectPrediction(0, 0.5, np.array([1.0]), (float(x), float(y), float(bw), float(bh)))
            out.append(ObjectRef(i, k, "thing", pred, crop_name(name, k, "thing", "png")))
    return out


def _model(name: str, size: int) -> nn.Module | None:
    if name == "none":
        return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten())
    return None  # EmbedConfig.model builds it


def run_case(root: Path, names: list[str], objects: list[ObjectRef], case: str, args: argparse.Namespace) -> dict:
    path, model_name = case.split(":")
    cfg = EmbedConfig(model="efficientnet-lite0" if model_name == "none" else model_name, input_size=args.input_size)
    cfg.batch_size, cfg.num_workers = args.batch, args.workers
    model = _model(model_name, args.input_size)
    picks = objects[:: max(1, round(1 / args.select))]
    out = Path(tempfile.mkdtemp(dir=args.tmp))
    t0 = time.perf_counter()
    if path == "memory":
        emb = embed_crops(root, names, objects, cfg, model)
        t_embed = time.perf_counter() - t0
        write_crops(root, names, picks, out, "png")
        written = sum(p.stat().st_size for p in out.rglob("*.png"))
    else:
        write_crops(root, names, objects, out, "png")
        written = sum(p.stat().st_size for p in out.rglob("*.png"))
        emb = embed_samples(out, [o.name for o in objects], cfg, model)
        t_embed = time.perf_counter() - t0
        keep = {o.name for o in picks}
        for o in objects:
            if o.name not in keep:
                (out / o.name).unlink()
    total = time.perf_counter() - t0
    shutil.rmtree(out)
    return {
        "case": case,
        "objects": len(objects),
        "images": len(names),
        "dim": int(emb.shape[1]),
        "embed_s": round(t_embed, 1),
        "total_s": round(total, 1),
        "objects_per_s": round(len(objects) / total, 1),
        "peak_rss_main_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_worker_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "embeddings_mib": round(emb.nbytes / 2**20, 1),
        "disk_written_mib": round(written / 2**20, 1),
        "device": str(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--per-image", type=int, default=20)
    p.add_argument("--cases", nargs="+", default=["memory:none", "files:none", "memory:efficientnet-lite0"])
    p.add_argument("--limit", type=int, nargs="+", default=[0, 0, 2000], help="objects per case (0: all)")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=-1)
    p.add_argument("--select", type=float, default=0.01, help="fraction of objects whose crops are written")
    p.add_argument("--tmp", default=None, help="folder for the data (default: the system's temp folder)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    size = (1280, 720)
    if args.one:  # a child: one case on prepared data
        root, case, limit = args.one.split("|")
        names = sorted(q.name for q in Path(root).glob("*.jpg"))
        objects = make_objects(names, args.per_image, size)
        if int(limit):
            objects = objects[: int(limit)]
            names = names[: objects[-1].image + 1]
        print(json.dumps(run_case(Path(root), names, objects, case, args)))
        return
    root = Path(tempfile.mkdtemp(dir=args.tmp))
    try:
        t = time.perf_counter()
        make_jpegs(root, args.images, size)
        print(f"generated {args.images} images in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        limits = args.limit + [0] * (len(args.cases) - len(args.limit))
        for case, limit in zip(args.cases, limits, strict=False):
            child = [sys.executable, __file__, "--one", f"{root}|{case}|{limit}", *_pass(args)]
            res = subprocess.run(child, capture_output=True, text=True, check=True)
            print(res.stdout.strip().splitlines()[-1], flush=True)
    finally:
        shutil.rmtree(root)


def _pass(args: argparse.Namespace) -> list[str]:
    out = ["--per-image", str(args.per_image), "--input-size", str(args.input_size), "--batch", str(args.batch)]
    out += ["--workers", str(args.workers), "--select", str(args.select)]
    return out + (["--tmp", args.tmp] if args.tmp else [])


if __name__ == "__main__":
    main()
