"""Object-level selection on a detection set with rare classes: which strategy finds the rare objects?

    .venv/bin/python bench/detection_selection.py                    # the figures in docs/benchmarks.md
    .venv/bin/python bench/detection_selection.py --images 40 --seeds 1 --budgets 0.2 --out /tmp/x  # smoke

The data (generated per seed): ``--images`` 320x240 noisy grey images with 1-6 drawn objects each, of
six classes, each class its own shape and colour; two classes are rare (``RARE_SHARE`` of the objects
each). The predictions, in Lightly's object-detection format, imitate a detector trained on such data:

* a common object is detected with probability 0.95, a rare one with 0.8; the box is jittered by up to
  10 % of its size;
* a common object gets its true class with probability 0.95, a rare one with 0.6 (else a common class);
* the score (objectness) is noisy: uniform in [0.55, 1.0] for common objects, [0.25, 0.8] for rare ones
  (a detector is less sure about what it saw little of); false positives (Poisson(0.5) per image, a random
  box and class) score in [0.05, 0.5].

The crops are embedded with the worker's code (``crop_embed.embed_crops``, efficientnet-lite0 at 64 px),
the selection runs through the worker's ``select`` on the object-level inputs, and the selected objects'
images, in pick order, fill each budget (a fraction of the images). Measured on those images: rare-object
recall (ground-truth rare objects in the selected images / all rare objects) and class coverage (classes
with at least one ground-truth object in the selected images / 6). ``random`` draws images uniformly
(its mean over ``--random-draws`` draws per seed).

Writes ``results.json``, ``table.md`` and ``detection_selection.png`` to ``--out`` (default
``$TMPDIR/lightly_bench/detection_selection``); docs/img/detection_selection.png is that plot.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from lightly_protocol.models import SelectionConfigV4
from lightly_worker.crop_embed import embed_crops
from lightly_worker.embed import EmbedConfig
from lightly_worker.selection import SelectionInputs, list_objects, load_lightly_inputs, object_inputs, select
from PIL import Image, ImageDraw

CLASSES = ["car", "person", "bike", "sign", "bus", "dog"]
RARE = ("bus", "dog")
RARE_SHARE = 0.02
COLOURS = [(220, 40, 40), (40, 40, 220), (40, 200, 40), (230, 230, 40), (240, 140, 20), (160, 40, 200)]
SHAPES = ["rect", "ellipse", "triangle", "rect", "ellipse", "triangle"]

EMB = {"type": "EMBEDDINGS", "task": "det"}
SCORE = {"type": "SCORES", "task": "det", "score": "objectness_least_confidence"}
PRED = {"type": "PREDICTIONS", "task": "det", "name": "CLASS_DISTRIBUTION"}
BALANCE = (PRED, {"type": "BALANCE", "target": {c: 1 / len(CLASSES) for c in CLASSES}})
WEIGHTS = (SCORE, {"type": "WEIGHTS"})
DIVERSITY = (EMB, {"type": "DIVERSITY"})
STRATEGIES: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {
    "BALANCE": [BALANCE],
    "WEIGHTS": [WEIGHTS],
    "DIVERSITY": [DIVERSITY],
    "BALANCE+WEIGHTS": [BALANCE, WEIGHTS],
    "DIVERSITY+WEIGHTS": [DIVERSITY, WEIGHTS],
    "BALANCE+DIVERSITY": [BALANCE, DIVERSITY],
    "BALANCE+DIVERSITY+WEIGHTS": [BALANCE, DIVERSITY, WEIGHTS],
}


def _class_of(rng: np.random.Generator) -> int:
    p = np.full(len(CLASSES), (1 - RARE_SHARE * len(RARE)) / (len(CLASSES) - len(RARE)))
    for r in RARE:
        p[CLASSES.index(r)] = RARE_SHARE
    return int(rng.choice(len(CLASSES), p=p))


def _draw(draw: ImageDraw.ImageDraw, cls: int, box: tuple[int, int, int, int]) -> None:
    x, y, w, h = box
    xy = (x, y, x + w, y + h)
    if SHAPES[cls] == "rect":
        draw.rectangle(xy, fill=COLOURS[cls])
    elif SHAPES[cls] == "ellipse":
        draw.ellipse(xy, fill=COLOURS[cls])
    else:
        draw.polygon([(x, y + h), (x + w // 2, y), (x + w, y + h)], fill=COLOURS[cls])


def _predict(rng: np.random.Generator, cls: int, box: tuple[int, int, int, int]) -> dict[str, Any] | None:
    rare = CLASSES[cls] in RARE
    if rng.random() > (0.8 if rare else 0.95):
        return None
    if rng.random() > (0.6 if rare else 0.95):
        cls = int(rng.choice([i for i, c in enumerate(CLASSES) if c not in RARE and i != cls]))
    x, y, w, h = box
    jx, jy = rng.uniform(-0.1, 0.1, 2) * (w, h)
    score = rng.uniform(0.25, 0.8) if rare else rng.uniform(0.55, 1.0)
    bbox = [max(0.0, float(x + jx)), max(0.0, float(y + jy)), float(w), float(h)]
    return {"category_id": cls, "bbox": bbox, "score": float(score)}


def make_dataset(root: Path, n: int, seed: int) -> tuple[list[str], list[list[int]]]:
    """Images and predictions (``root/.lightly/predictions/det``); the ground-truth classes per image."""
    rng = np.random.default_rng(seed)
    pred_dir = root / ".lightly" / "predictions" / "det"
    pred_dir.mkdir(parents=True)
    (root / ".lightly" / "predictions" / "tasks.json").write_text(json.dumps(["det"]))
    schema = {"task_type": "object-detection", "categories": [{"id": i, "name": c} for i, c in enumerate(CLASSES)]}
    (pred_dir / "schema.json").write_text(json.dumps(schema))
    names, truth = [], []
    for i in range(n):
        arr = rng.normal(128, 20, (240, 320, 3)).clip(0, 255).astype(np.uint8)
        im = Image.fromarray(arr)
        draw = ImageDraw.Draw(im)
        classes, preds = [], []
        for _ in range(int(rng.integers(1, 7))):
            cls = _class_of(rng)
            w, h = (int(v) for v in rng.integers(24, 90, 2))
            box = (int(rng.integers(0, 320 - w)), int(rng.integers(0, 240 - h)), w, h)
            _draw(draw, cls, box)
            classes.append(cls)
            pred = _predict(rng, cls, box)
            if pred is not None:
                preds.append(pred)
        for _ in range(int(rng.poisson(0.5))):  # false positives
            w, h = (int(v) for v in rng.integers(24, 90, 2))
            fp = [float(rng.integers(0, 320 - w)), float(rng.integers(0, 240 - h)), float(w), float(h)]
            preds.append({"category_id": int(rng.integers(len(CLASSES))), "bbox": fp, "score": rng.uniform(0.05, 0.5)})
        name = f"img_{i:05d}.jpg"
        im.save(root / name, quality=90)
        (pred_dir / f"img_{i:05d}.json").write_text(json.dumps({"file_name": name, "predictions": preds}))
        names.append(name)
        truth.append(classes)
    return names, truth


def metrics(images: list[int], truth: list[list[int]]) -> tuple[float, float]:
    """Rare-object recall and class coverage of the images ``images``."""
    rare = [CLASSES.index(r) for r in RARE]
    total = sum(c in rare for t in truth for c in t)
    found = sum(c in rare for i in images for c in truth[i])
    covered = {c for i in images for c in truth[i]}
    return found / max(1, total), len(covered) / len(CLASSES)


def image_order(picks: list[int], objects: list[Any]) -> list[int]:
    return list(dict.fromkeys(objects[i].image for i in picks))


def run_seed(seed: int, args: argparse.Namespace, work: Path) -> dict[str, dict[str, list[float]]]:
    root = work / f"seed{seed}"
    names, truth = make_dataset(root, args.images, seed)
    conf = SelectionConfigV4.model_validate(
        {"n_samples": -1, "strategies": [{"input": i, "strategy": s} for i, s in [DIVERSITY, WEIGHTS, BALANCE]]}
    )
    image_inputs = SelectionInputs(names, **load_lightly_inputs(root, names, conf))
    objects = list_objects(names, "det", image_inputs.predictions["det"], "png")
    cfg = EmbedConfig(input_size=64, batch_size=64, num_workers=args.workers)
    emb = embed_crops(root, names, objects, cfg)
    inputs = object_inputs(image_inputs, "det", objects, emb)
    budgets = [max(1, round(b * len(names))) for b in args.budgets]
    out: dict[str, dict[str, list[float]]] = {}
    rng = np.random.default_rng(seed + 1000)
    draws = [metrics_at(list(rng.permutation(len(names))), truth, budgets) for _ in range(args.random_draws)]
    out["random"] = {k: list(np.mean([d[k] for d in draws], axis=0)) for k in ("recall", "coverage")}
    for label, strategies in STRATEGIES.items():
        n = len(objects)
        c = SelectionConfigV4.model_validate(
            {"n_samples": n, "strategies": [{"input": i, "strategy": s} for i, s in strategies]}
        )
        order = image_order(select(c, inputs).selected, objects)
        out[label] = metrics_at(order, truth, budgets)
    return out


def metrics_at(order: list[int], truth: list[list[int]], budgets: list[int]) -> dict[str, list[float]]:
    pairs = [metrics(order[:b], truth) for b in budgets]
    return {"recall": [p[0] for p in pairs], "coverage": [p[1] for p in pairs]}


def summarize(per_seed: list[dict[str, dict[str, list[float]]]], budgets: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label in per_seed[0]:
        for key in ("recall", "coverage"):
            vals = np.array([s[label][key] for s in per_seed])
            out.setdefault(label, {})[key] = {"mean": vals.mean(0).tolist(), "std": vals.std(0).tolist()}
    return {"budgets": budgets, "results": out}


def write_table(summary: dict[str, Any], path: Path) -> None:
    budgets = summary["budgets"]
    head = "| strategy | " + " | ".join(f"rare recall @{b:.0%}" for b in budgets)
    head += " | " + " | ".join(f"coverage @{b:.0%}" for b in budgets) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(budgets))]
    for label, r in summary["results"].items():
        rec = " | ".join(f"{m:.2f} ± {s:.2f}" for m, s in zip(r["recall"]["mean"], r["recall"]["std"], strict=True))
        cov = " | ".join(f"{m:.2f}" for m in r["coverage"]["mean"])
        lines.append(f"| {label} | {rec} | {cov} |")
    path.write_text("\n".join(lines) + "\n")


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    x = [100 * b for b in summary["budgets"]]
    for label, r in summary["results"].items():
        style = {"color": "black", "linestyle": "--"} if label == "random" else {}
        for ax, key in zip(axes, ("recall", "coverage"), strict=True):
            ax.errorbar(x, r[key]["mean"], yerr=r[key]["std"], label=label, marker="o", capsize=2, **style)
    axes[0].set(xlabel="budget (% of images)", ylabel="rare-object recall", title="Rare objects found")
    axes[1].set(xlabel="budget (% of images)", ylabel="class coverage", title="Classes covered")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budgets", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    p.add_argument("--random-draws", type=int, default=20)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "lightly_bench" / "detection_selection")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        per_seed = [run_seed(s, args, Path(tmp)) for s in range(args.seeds)]
    summary = summarize(per_seed, args.budgets)
    summary["config"] = {"images": args.images, "seeds": args.seeds, "seconds": round(time.perf_counter() - t0, 1)}
    (args.out / "results.json").write_text(json.dumps(summary, indent=2))
    write_table(summary, args.out / "table.md")
    plot(summary, args.out / "detection_selection.png")
    print((args.out / "table.md").read_text())


if __name__ == "__main__":
    main()
