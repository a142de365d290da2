"""Embedding throughput vs the decode-only ceiling of the same data path, on generated 1080p JPEGs.

    .venv/bin/python bench/embedding_bench.py                 # 96 images, sizes 224 and 64
    .venv/bin/python bench/embedding_bench.py --n 2000 --sizes 224 --batch 128   # e.g. on a GPU box

Measures (best of --repeat runs each):
  * decode per image, 1 thread: Pillow full decode + resize vs DCT-domain ``draft`` + resize (load_image);
  * ceiling: the embed DataLoader (same ChunkDataset, workers, chunking) iterated without a model,
    including the uint8 -> float conversion on the device;
  * embed: embed_samples end to end (model loaded beforehand; its load time is reported separately).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from lightly_worker.embed import EmbedConfig, embed_samples, embedding_model_from_config, load_image
from lightly_worker.embed._common import cpu_count, resolve_device, resolve_workers
from lightly_worker.embed.decode import ChunkDataset, make_chunks
from lightly_worker.embed.files import resolve_sample
from PIL import Image, ImageDraw, ImageFilter


def make_jpegs(root: Path, n: int, size: tuple[int, int] = (1920, 1080), seed: int = 0) -> list[str]:
    """Photo-like content (shapes, gradients, blur, sensor noise) so that JPEGs have realistic entropy."""
    rng = np.random.default_rng(seed)
    w, h = size
    names = []
    base_noise = rng.normal(0, 10, (h, w, 3)).astype(np.float32)
    for i in range(n):
        grad = np.linspace(0, 1, w, dtype=np.float32)[None, :, None] * rng.uniform(0, 200, 3).astype(np.float32)
        im = Image.fromarray(np.broadcast_to(grad + rng.uniform(0, 50, 3), (h, w, 3)).astype(np.uint8))
        draw = ImageDraw.Draw(im)
        for _ in range(40):
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            x1, y1 = x0 + int(rng.integers(20, w // 3)), y0 + int(rng.integers(20, h // 3))
            fill = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
        im = im.filter(ImageFilter.GaussianBlur(1.5))
        arr = np.asarray(im, dtype=np.float32) + np.roll(base_noise, i * 37, axis=1)
        name = f"img_{i:05d}.jpg"
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(root / name, quality=90)
        names.append(name)
    return names


def best(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def decode_per_image(root: Path, names: list[str], size: int, draft: bool, repeat: int) -> float:
    sub = names[: min(len(names), 32)]
    return best(lambda: [load_image(root / n, size, draft=draft) for n in sub], repeat) / len(sub)


def ceiling(root: Path, names: list[str], cfg: EmbedConfig, repeat: int) -> float:
    """Images/s of the embed data path without the model (same dataset, chunking, workers, device copy)."""
    device = resolve_device(cfg.device)
    refs = [resolve_sample(root, n) for n in names]
    workers = resolve_workers(cfg.num_workers)
    chunk = max(1, min(cfg.batch_size, math.ceil(len(names) / max(1, workers))))
    chunks = make_chunks(refs, chunk)
    ds = ChunkDataset(chunks, cfg.input_size, root, draft=cfg.draft)

    def run() -> None:
        loader = torch.utils.data.DataLoader(
            ds,
            batch_size=None,
            num_workers=min(workers, len(chunks)),
            pin_memory=device.type == "cuda",
            prefetch_factor=4 if workers else None,
        )
        for _, images, _ in loader:
            x = images.to(device, non_blocking=True).float().div_(255.0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        del x

    return len(names) / best(run, repeat)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=96, help="number of generated 1920x1080 JPEGs")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 64])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=-1)
    p.add_argument("--threads", type=int, nargs="+", default=[0], help="torch threads for the model (0 = auto)")
    p.add_argument("--device", default="auto")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--dir", type=Path, default=None, help="reuse/keep images here")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    tmp = None
    root = args.dir
    if root is None:
        tmp = tempfile.TemporaryDirectory()
        root = Path(tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    names = sorted(x.name for x in root.glob("img_*.jpg"))[: args.n]
    if len(names) < args.n:
        t = time.perf_counter()
        names = make_jpegs(root, args.n)
        print(f"generated {args.n} 1080p JPEGs in {time.perf_counter() - t:.1f} s")
    mb = sum((root / n).stat().st_size for n in names) / len(names) / 1e6
    device = resolve_device(args.device)
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "-"
    print(
        f"{len(names)} JPEGs 1920x1080 q90, mean {mb:.2f} MB; device {device} {gpu}; vCPUs {cpu_count()}; "
        f"loadavg {os.getloadavg()[0]:.1f}; torch {torch.__version__}"
    )
    results: dict[str, object] = {"n": len(names), "vcpus": cpu_count(), "device": str(device), "gpu": gpu}

    print("\ndecode 1080p JPEG -> S x S uint8, 1 thread (ms/image, best of runs)")
    for s in args.sizes:
        full = decode_per_image(root, names, s, False, args.repeat)
        dr = decode_per_image(root, names, s, True, args.repeat)
        print(
            f"  S={s:4d}: full decode + resize {full * 1e3:6.1f} ms | draft + resize {dr * 1e3:6.1f} ms "
            f"| speed-up {full / dr:4.1f}x | {1 / dr:5.0f} img/s/thread"
        )
        results[f"decode_full_ms_{s}"] = full * 1e3
        results[f"decode_draft_ms_{s}"] = dr * 1e3

    print("\nembedding (EfficientNet-Lite0, 1280-d) vs decode-only ceiling of the same data path")
    for s in args.sizes:
        for threads in args.threads:
            cfg = EmbedConfig(
                input_size=s, batch_size=args.batch, num_workers=args.workers, device=args.device, torch_threads=threads
            )
            t = time.perf_counter()
            model = embedding_model_from_config(cfg.model, s)
            load_s = time.perf_counter() - t
            ceil_draft = ceiling(root, names, cfg, args.repeat)
            ceil_full = ceiling(root, names, EmbedConfig(**{**cfg.__dict__, "draft": False}), 1)
            emb_s = best(lambda cfg=cfg, model=model: embed_samples(root, names, cfg, model), args.repeat)
            rate = len(names) / emb_s
            tl = threads or "auto"
            print(
                f"  S={s:4d} threads={tl}: embed {rate:7.1f} img/s | ceiling {ceil_draft:7.1f} img/s (draft), "
                f"{ceil_full:7.1f} img/s (no draft) | embed/ceiling {rate / ceil_draft:6.1%} | load {load_s:.1f} s"
            )
            results[f"embed_{s}_t{tl}"] = rate
            results[f"ceiling_{s}"] = ceil_draft
            results[f"ceiling_nodraft_{s}"] = ceil_full
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
