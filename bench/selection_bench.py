"""Benchmark of DIVERSITY selection (exact greedy k-center) against its memory-bandwidth floor.

Every pick of the exact greedy reads all N x D float32 values once, so the floor is
``N * D * 4 * K`` bytes divided by the measured streaming-read bandwidth of the machine.

CPU (default; N=100k, D=128, K=1000 = 51.2 GB of reads): times, in one run,
``lightly_worker.selection.select`` (the API the pipeline calls), a plain numpy implementation
(``X @ c`` + ``minimum`` + ``argmax``) and ``fpsample.fps_sampling`` (when installed), all from the
same start index, and checks that their pick sequences agree (and the first ``--check`` picks with a
float64 brute force).

GPU: ``--device cuda --n 1000000 --d 512 --k 10000``: times ``select(..., device="cuda")``,
measures the device's read and copy bandwidth, and checks the first ``--check`` picks against a
float64 greedy on the GPU. Exit status 1 when a check fails.

    .venv/bin/python bench/selection_bench.py [--n 100000 --d 128 --k 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightly_protocol.models import SelectionConfigV4
from lightly_worker.selection import HAVE_NUMBA, SelectionInputs, kcenter_greedy, select


def data(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def cpu_read_bandwidth(repeats: int = 5) -> float:
    """Best streaming-read rate (bytes/s): numpy sum over 1 GiB of float32."""
    a = np.ones(2**28, dtype=np.float32)
    a.sum()
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - t)
    return a.nbytes / best


def cuda_bandwidth(repeats: int = 10) -> tuple[float, float]:
    """(read bytes/s via sum, copy bytes/s counting read+write) over 2 GiB on the GPU."""
    a = torch.ones(2**29, dtype=torch.float32, device="cuda")
    b = torch.empty_like(a)
    a.sum()
    b.copy_(a)
    torch.cuda.synchronize()

    def best(f: Callable[[], Any]) -> float:
        out = math.inf
        for _ in range(repeats):
            torch.cuda.synchronize()
            t = time.perf_counter()
            f()
            torch.cuda.synchronize()
            out = min(out, time.perf_counter() - t)
        return out

    nbytes = a.numel() * 4
    read = nbytes / best(a.sum)
    copy = 2 * nbytes / best(lambda: b.copy_(a))
    return read, copy


def numpy_kcenter(x: np.ndarray, k: int, first: int) -> list[int]:
    sq = np.einsum("ij,ij->i", x, x)
    min_d2 = np.full(len(x), np.inf, dtype=np.float32)
    picks = [first]
    idx = first
    for _ in range(k - 1):
        d2 = sq - 2.0 * (x @ x[idx]) + sq[idx]
        np.minimum(min_d2, d2, out=min_d2)
        min_d2[idx] = -1.0
        idx = int(np.argmax(min_d2))
        picks.append(idx)
    return picks


def reference_kcenter(x: np.ndarray | torch.Tensor, k: int, first: int, device: str) -> list[int]:
    """float64 brute force (no expansion: sum((x - c)^2)) for the first k picks."""
    xt = torch.as_tensor(x, device=device).double()
    min_d2 = torch.full((xt.shape[0],), math.inf, dtype=torch.float64, device=device)
    picks = [first]
    for _ in range(k - 1):
        d2 = ((xt - xt[picks[-1]]) ** 2).sum(1)
        torch.minimum(min_d2, d2, out=min_d2)
        min_d2[picks[-1]] = -1.0
        picks.append(int(torch.argmax(min_d2)))
    return picks


def timed(f: Callable[[], Any], repeats: int, sync: bool = False) -> tuple[float, Any]:
    best, out = math.inf, None
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = f()
        if sync:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def agree(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two pick sequences."""
    n = 0
    for u, v in zip(a, b, strict=False):
        if u != v:
            break
        n += 1
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check", type=int, default=50, help="picks compared with a float64 brute force")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-baselines", action="store_true", help="skip numpy and fpsample (CPU)")
    ap.add_argument("--json", type=Path, help="write the results as JSON here")
    args = ap.parse_args()

    cuda = args.device.startswith("cuda")
    x = data(args.n, args.d, args.seed)
    traffic = args.n * args.d * 4 * args.k
    config = SelectionConfigV4.model_validate(
        {"n_samples": args.k, "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]}
    )
    inputs = SelectionInputs([str(i) for i in range(args.n)], embeddings=x)
    out: dict[str, Any] = {
        "n": args.n,
        "d": args.d,
        "k": args.k,
        "device": args.device,
        "traffic_gb": traffic / 1e9,
        "torch_threads": torch.get_num_threads(),
        "backend": "torch-cuda" if cuda else ("numba" if HAVE_NUMBA else "torch-cpu"),
    }
    if cuda:
        out["gpu"] = torch.cuda.get_device_name()
        read_bw, copy_bw = cuda_bandwidth()
        torch.cuda.empty_cache()
        out["read_bw_gbs"], out["copy_bw_gbs"] = read_bw / 1e9, copy_bw / 1e9
        bw = copy_bw
    else:
        bw = cpu_read_bandwidth()
        out["read_bw_gbs"] = bw / 1e9
    floor = traffic / bw
    out["floor_s"] = floor

    # warm-up (JIT / CUDA context) on a small slice
    small = SelectionInputs(inputs.filenames[:2000], embeddings=x[:2000])
    select(config.model_copy(update={"n_samples": 10}), small, device=args.device)

    t_ours, res = timed(lambda: select(config, inputs, device=args.device), args.repeats, sync=cuda)
    ours = res.selected
    first = ours[0]
    out["ours_s"] = t_ours
    out["ours_vs_floor"] = t_ours / floor
    out["ours_gbs"] = traffic / t_ours / 1e9
    ok = len(ours) == min(args.k, args.n)

    ref = reference_kcenter(x, min(args.check, len(ours)), first, args.device)
    out["ref_agree"] = f"{agree(ours, ref)}/{len(ref)}"
    ok &= agree(ours, ref) == len(ref)

    if not cuda and not args.no_baselines:
        if HAVE_NUMBA:  # the fallback used when numba is not installed
            t_tc, tc = timed(lambda: kcenter_greedy(x, args.k, backend="torch").picks, args.repeats)
            out["torch_cpu_fallback_s"] = t_tc
            out["torch_cpu_fallback_agree"] = f"{agree(ours, tc)}/{len(ours)}"
        t_np, np_picks = timed(lambda: numpy_kcenter(x, args.k, first), args.repeats)
        out["numpy_s"] = t_np
        out["numpy_agree"] = f"{agree(ours, np_picks)}/{len(ours)}"
        try:
            import fpsample

            t_fp, fp_picks = timed(lambda: fpsample.fps_sampling(x, args.k, start_idx=first).tolist(), args.repeats)
            out["fpsample_s"] = t_fp
            out["fpsample_agree"] = f"{agree(ours, fp_picks)}/{len(ours)}"
            out["speedup_vs_fpsample"] = t_fp / t_ours
        except ImportError:
            out["fpsample_s"] = None
    out["ok"] = bool(ok)

    print(json.dumps(out, indent=2))
    print(
        f"\nDIVERSITY N={args.n} D={args.d} K={args.k} on {args.device}: ours {t_ours:.3f} s "
        f"({out['ours_gbs']:.1f} GB/s-eq, {t_ours / floor:.2f}x the {floor:.3f} s floor at {bw / 1e9:.1f} GB/s)"
    )
    if "torch_cpu_fallback_s" in out:
        print(f"  torch CPU fallback (no numba) {out['torch_cpu_fallback_s']:.3f} s")
    if "numpy_s" in out:
        print(f"  numpy {out['numpy_s']:.3f} s")
    if out.get("fpsample_s"):
        print(f"  fpsample {out['fpsample_s']:.3f} s -> ours is {out['speedup_vs_fpsample']:.1f}x faster")
    print(f"  float64 reference agreement (first picks): {out['ref_agree']}; ok={ok}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
