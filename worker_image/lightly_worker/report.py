"""Outputs in Lightly's layout: filenames, embeddings, config, plots, report.json and report.html."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

MAX_PAIRWISE = 4000  # samples used for distance histograms and the scatter plot


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{x}\n" for x in lines))


def nearest_neighbour_distances(emb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Distance of each (sub-sampled) sample to its nearest other sample."""
    if len(emb) < 2:
        return np.zeros(0, dtype=np.float32)
    if len(emb) > MAX_PAIRWISE:
        emb = emb[rng.choice(len(emb), MAX_PAIRWISE, replace=False)]
    x = emb.astype(np.float64)
    sq = (x * x).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0)
    np.fill_diagonal(d2, np.inf)
    return np.sqrt(d2.min(1)).astype(np.float32)


def pca_2d(emb: np.ndarray) -> np.ndarray:
    x = emb - emb.mean(0, keepdims=True)
    if x.shape[1] < 2 or len(x) < 2:
        return np.zeros((len(x), 2), dtype=np.float32)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return (x @ vt[:2].T).astype(np.float32)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def make_plots(
    out_dir: Path, emb: np.ndarray | None, selected: list[int], seed: int = 0
) -> tuple[dict[str, Path], dict[str, Any]]:
    """PNG plots under plots/ and the distance statistics behind them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, Path] = {}
    stats: dict[str, Any] = {}
    if emb is None or len(emb) == 0:
        return plots, stats
    rng = np.random.default_rng(seed)
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    before = nearest_neighbour_distances(emb, rng)
    after = nearest_neighbour_distances(emb[selected], rng) if len(selected) > 1 else np.zeros(0)
    for name, values, title in (
        ("distance_distr_before", before, "Nearest-neighbour distance, all samples"),
        ("distance_distr_after", after, "Nearest-neighbour distance, selected samples"),
    ):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        if len(values):
            ax.hist(values, bins=40, color="#3b6ea5" if "before" in name else "#d9822b", log=True)
        ax.set_title(title)
        ax.set_xlabel("distance")
        ax.set_ylabel("samples (log)")
        path = plot_dir / f"{name}.png"
        path.write_bytes(_png(fig))
        plt.close(fig)
        plots[name] = path
        stats[name.replace("distance_distr_", "nn_distance_")] = {
            "mean": float(values.mean()) if len(values) else None,
            "min": float(values.min()) if len(values) else None,
            "max": float(values.max()) if len(values) else None,
        }
    idx = np.arange(len(emb))
    if len(emb) > MAX_PAIRWISE:
        keep = set(selected)
        rest = np.setdiff1d(idx, np.fromiter(keep, dtype=int)) if keep else idx
        sample = rng.choice(rest, min(len(rest), MAX_PAIRWISE), replace=False)
        idx = np.unique(np.concatenate([sample, np.array(sorted(keep), dtype=int)]))
    xy = pca_2d(emb[idx])
    chosen = np.isin(idx, np.array(selected, dtype=int))
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(xy[~chosen, 0], xy[~chosen, 1], s=6, c="#b0b7c3", label="not selected")
    ax.scatter(xy[chosen, 0], xy[chosen, 1], s=14, c="#d9822b", label="selected")
    ax.set_title("Embeddings (PCA), selection highlighted")
    ax.legend(loc="best")
    path = plot_dir / "scatter_pca.png"
    path.write_bytes(_png(fig))
    plt.close(fig)
    plots["scatter_pca"] = path
    return plots, stats


def write_report(out_dir: Path, report: dict[str, Any], plots: dict[str, Path]) -> tuple[Path, Path]:
    """report.json, and report.html that embeds the plots (self-contained, no external files)."""
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    rows = []
    for key in (
        "n_input_files",
        "n_corrupt",
        "n_duplicates",
        "n_datapool",
        "n_candidates",
        "n_selected",
        "stop_reason",
        "embedding_model",
        "embedding_dim",
        "device",
        "duration_seconds",
    ):
        if key in report.get("summary", {}):
            rows.append(f"<tr><th>{html.escape(key)}</th><td>{html.escape(str(report['summary'][key]))}</td></tr>")
    stage_rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{v:.2f} s</td></tr>" for k, v in report.get("stage_seconds", {}).items()
    )
    images = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(path.read_bytes()).decode()}"><figcaption>{html.escape(name)}</figcaption></figure>'
        for name, path in plots.items()
    )
    selected = report.get("selected_filenames_preview", [])
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Lightly worker report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
th,td{{text-align:left;padding:.25em 1em;border-bottom:1px solid #ddd}}figure{{display:inline-block;margin:1em}}
img{{max-width:520px}}code{{background:#f4f4f4}}</style></head><body>
<h1>Selection report</h1>
<p>Run <code>{html.escape(str(report.get("run_id") or "local"))}</code>,
dataset <code>{html.escape(str(report.get("dataset_id") or "-"))}</code>,
worker version {html.escape(str(report.get("worker_version")))}.</p>
<h2>Summary</h2><table>{"".join(rows)}</table>
<h2>Stages</h2><table>{stage_rows}</table>
<h2>Plots</h2>{images}
<h2>Selected samples (first {len(selected)})</h2><pre>{html.escape(chr(10).join(selected))}</pre>
<h2>Configuration</h2><pre>{html.escape(json.dumps(report.get("config", {}), indent=2, default=str))}</pre>
</body></html>
"""
    html_path = out_dir / "report.html"
    html_path.write_text(page)
    return json_path, html_path
