"""Outputs in Lightly's layout: filenames, embeddings, config, plots, report.json, report.html, and from
the same content report_v2.json (``report_v2``) and report.pdf (``report_pdf``).

report.html also shows what was chosen: a grid of thumbnails of the selected images (read from the
input at report time, at most ``THUMB_MAX_COUNT`` of them, each at most ``THUMB_SIDE`` px and embedded
as a JPEG of at most ``THUMB_MAX_BYTES`` bytes; never written to report.json or uploaded as files),
the PCA scatter with the picks in pick order, and what each strategy contributed to the picks.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .report_pdf import write_pdf
from .report_v2 import report_v2

if TYPE_CHECKING:
    from .sources import InputSource

MAX_PAIRWISE = 4000  # samples used for distance histograms and the scatter plot
THUMB_MAX_COUNT = 48  # thumbnails of the first selected samples in report.html
THUMB_SIDE = 96  # px, longest side
THUMB_QUALITY = 80
THUMB_MAX_BYTES = 24_000  # per thumbnail; a larger JPEG is left out
#: report key of the thumbnails (JPEG bytes, base64): rendered into report.html, left out of report.json
THUMBNAILS_KEY = "_thumbnails"

log = logging.getLogger("lightly_worker.report")


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
    nearest: npt.NDArray[np.float32] = np.sqrt(d2.min(1)).astype(np.float32)
    return nearest


def pca_2d(emb: np.ndarray) -> np.ndarray:
    x = emb - emb.mean(0, keepdims=True)
    if x.shape[1] < 2 or len(x) < 2:
        return np.zeros((len(x), 2), dtype=np.float32)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    projected: npt.NDArray[np.float32] = (x @ vt[:2].T).astype(np.float32)
    return projected


def make_thumbnails(
    input_root: Path | InputSource, names: list[str], max_count: int = THUMB_MAX_COUNT
) -> list[dict[str, Any]]:
    """Small JPEGs of the first ``max_count`` of ``names`` (images or video frames under ``input_root``).

    Each entry: ``{"filename", "width", "height", "jpeg_base64"}``, or ``{"filename", "error"}`` when the
    sample cannot be read now (it is then shown as missing, the report still gets written)."""
    from PIL import Image

    from .embed.decode import load_video_frames, open_rgb
    from .embed.files import FrameRef, resolve_sample
    from .sources import LocalSource, as_source

    source = as_source(input_root)
    out: list[dict[str, Any]] = []
    for name in names[:max_count]:
        try:
            ref = resolve_sample(source, name)
            if isinstance(ref, FrameRef):
                frames = load_video_frames(source, ref.key, [ref.frame], THUMB_SIDE)
                if ref.frame not in frames:
                    raise OSError(f"frame {ref.frame} could not be decoded")
                im = Image.fromarray(frames[ref.frame])
            else:
                image = source.path(ref.key) if isinstance(source, LocalSource) else source.read_bytes(ref.key)
                with open_rgb(image, THUMB_SIDE) as src:
                    src.load()
                    im = src.copy()
            im.thumbnail((THUMB_SIDE, THUMB_SIDE))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=THUMB_QUALITY)
            data = buf.getvalue()
            if len(data) > THUMB_MAX_BYTES:
                raise OSError(f"thumbnail of {len(data)} bytes is over the {THUMB_MAX_BYTES} byte cap")
            b64 = base64.b64encode(data).decode()
            out.append({"filename": name, "width": im.width, "height": im.height, "jpeg_base64": b64})
        except (OSError, ValueError) as exc:
            log.warning("no thumbnail for %s: %s", name, exc)
            out.append({"filename": name, "error": str(exc)})
    return out


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
        color = "#3b6ea5" if "before" in name else "#d9822b"
        plots[name] = _histogram(plt, plot_dir / f"{name}.png", values, title, color)
        stats[name.replace("distance_distr_", "nn_distance_")] = _summary(values)
    plots["scatter_pca"] = _scatter_pca(plt, plot_dir / "scatter_pca.png", emb, selected, rng)
    stats.update(_random_baseline(emb, selected, rng))
    return plots, stats


def _summary(values: np.ndarray) -> dict[str, float | None]:
    return {
        "mean": float(values.mean()) if len(values) else None,
        "min": float(values.min()) if len(values) else None,
        "max": float(values.max()) if len(values) else None,
    }


def coverage(emb: np.ndarray, chosen: np.ndarray, rng: np.random.Generator) -> float | None:
    """Lightly's coverage: 1 / (1 + the mean distance from each (sub-sampled) sample to its nearest chosen one)."""
    if len(chosen) == 0 or len(emb) == 0:
        return None
    x = emb if len(emb) <= MAX_PAIRWISE else emb[rng.choice(len(emb), MAX_PAIRWISE, replace=False)]
    c = emb[chosen[:MAX_PAIRWISE]].astype(np.float64)
    x = x.astype(np.float64)
    d2 = np.maximum((x * x).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2 * x @ c.T, 0)
    return float(1.0 / (1.0 + np.sqrt(d2.min(1)).mean()))


def _random_baseline(emb: np.ndarray, selected: list[int], rng: np.random.Generator) -> dict[str, Any]:
    """The selection against a random subset of the same size (Lightly's report dashboard): the random
    subset's nearest-neighbour distances, and the coverage of both."""
    picked = np.array(selected, dtype=int)
    random = rng.choice(len(emb), len(picked), replace=False) if len(picked) else picked
    return {
        "nn_distance_random": _summary(
            nearest_neighbour_distances(emb[random], rng) if len(random) > 1 else np.zeros(0)
        ),
        "coverage_selected": coverage(emb, picked, rng),
        "coverage_random": coverage(emb, random, rng),
    }


def _histogram(plt: Any, path: Path, values: np.ndarray, title: str, color: str) -> Path:
    """A histogram of nearest-neighbour distances (log scale) as a PNG at ``path``."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if len(values):
        ax.hist(values, bins=40, color=color, log=True)
    ax.set_title(title)
    ax.set_xlabel("distance")
    ax.set_ylabel("samples (log)")
    path.write_bytes(_png(fig))
    plt.close(fig)
    return path


def _scatter_pca(plt: Any, path: Path, emb: np.ndarray, selected: list[int], rng: np.random.Generator) -> Path:
    """The embeddings' PCA scatter with the selection coloured in pick order (at most ``MAX_PAIRWISE``
    points besides the selected ones) as a PNG at ``path``."""
    idx = np.arange(len(emb))
    if len(emb) > MAX_PAIRWISE:
        keep = set(selected)
        rest = np.setdiff1d(idx, np.fromiter(keep, dtype=int)) if keep else idx
        sample = rng.choice(rest, min(len(rest), MAX_PAIRWISE), replace=False)
        idx = np.unique(np.concatenate([sample, np.array(sorted(keep), dtype=int)]))
    xy = pca_2d(emb[idx])
    chosen = np.isin(idx, np.array(selected, dtype=int))
    order = {s: r for r, s in enumerate(selected)}
    rank = np.array([order[i] + 1 for i in idx[chosen]], dtype=float)  # 1 = first pick
    fig, ax = plt.subplots(figsize=(6.5, 5))
    ax.scatter(xy[~chosen, 0], xy[~chosen, 1], s=6, c="#b0b7c3", label="not selected")
    if chosen.any():
        pts = ax.scatter(
            xy[chosen, 0], xy[chosen, 1], s=16, c=rank, cmap="plasma", edgecolors="k", linewidths=0.3, label="selected"
        )
        fig.colorbar(pts, ax=ax, label="pick order")
        for (px, py), r in zip(xy[chosen], rank, strict=True):
            if r <= 10:
                ax.annotate(str(int(r)), (px, py), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_title("Embeddings (PCA), selection in pick order (first 10 numbered)")
    ax.legend(loc="best")
    path.write_bytes(_png(fig))
    plt.close(fig)
    return path


def _thumbnail_grid(thumbs: list[dict[str, Any]], n_selected: int) -> str:
    if not thumbs:
        return "<p>No thumbnails (nothing selected, or the inputs could not be read at report time).</p>"
    cells = []
    for i, t in enumerate(thumbs, 1):
        name = html.escape(t["filename"])
        if "jpeg_base64" in t:
            img = (
                f'<img alt="{name}" title="{name}" width="{t["width"]}" height="{t["height"]}" '
                f'src="data:image/jpeg;base64,{t["jpeg_base64"]}">'
            )
        else:
            img = f'<div title="{html.escape(t.get("error", ""))}">(unreadable)</div>'
        cells.append(f"<figure>{img}<figcaption>{i}. {name}</figcaption></figure>")
    more = f" of {n_selected}" if n_selected > len(thumbs) else ""
    return (
        f"<p>The first {len(thumbs)}{more} selected, in pick order.</p>"
        f'<div class="grid" id="thumbnails">{"".join(cells)}</div>'
    )


def _contributions(details: dict[str, Any]) -> str:
    rows = details.get("contributions") or []
    coverage = details.get("coverage")
    if coverage:
        items = "".join(
            f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in coverage.items()
        )
        return (
            "<p>COVERAGE_EXT (extension, ProbCover): each pick covers the candidates within the radius; "
            f"the densest uncovered regions go first.</p><table>{items}</table>"
        )
    if not rows:
        return "<p>One strategy chose every sample (no combination to break down).</p>"
    body = "".join(
        f"<tr><td>{html.escape(r['strategy'])}</td><td>{r['strength']:g}</td>"
        f"<td>{r['objective_at_picks']:.3f}</td><td>{r['objective_of_candidates']:.3f}</td></tr>"
        for r in rows
    )
    return (
        "<p>Each strategy's objective is in (0, 1] (1 = the best remaining candidate for that strategy); "
        "a pick maximises the product of the objectives raised to their strengths. A strategy whose "
        "objective is much higher at the picks than over the candidates steered the selection.</p>"
        "<table><tr><th>strategy</th><th>strength</th><th>mean objective at the picks</th>"
        f"<th>mean over the candidates</th></tr>{body}</table>"
    )


#: the summary's rows report.html shows, in this order
SUMMARY_KEYS = (
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
)


def _summary_rows(summary: dict[str, Any]) -> list[str]:
    return [
        f"<tr><th>{html.escape(key)}</th><td>{html.escape(str(summary[key]))}</td></tr>"
        for key in SUMMARY_KEYS
        if key in summary
    ]


def write_report(out_dir: Path, report: dict[str, Any], plots: dict[str, Path]) -> tuple[Path, Path]:
    """report.json, and report.html that embeds the plots (self-contained, no external files)."""
    json_path = out_dir / "report.json"
    thumbs = report.get(THUMBNAILS_KEY, [])
    public = {k: v for k, v in report.items() if k != THUMBNAILS_KEY}
    json_path.write_text(json.dumps(public, indent=2, sort_keys=True, default=str))
    rows = _summary_rows(report.get("summary", {}))
    stage_rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{v:.2f} s</td></tr>" for k, v in report.get("stage_seconds", {}).items()
    )
    images = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(path.read_bytes()).decode()}"><figcaption>{html.escape(name)}</figcaption></figure>'
        for name, path in plots.items()
    )
    selected = report.get("selected_filenames_preview", [])
    grid = _thumbnail_grid(thumbs, int(report.get("summary", {}).get("n_selected", len(thumbs))))
    contributions = _contributions(report.get("selection_details", {}))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Lightly worker report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
th,td{{text-align:left;padding:.25em 1em;border-bottom:1px solid #ddd}}figure{{display:inline-block;margin:1em}}
img{{max-width:520px}}code{{background:#f4f4f4}}
.grid{{display:grid;grid-template-columns:repeat(auto-fill,minmax(112px,1fr));gap:8px}}
.grid figure{{margin:0;text-align:center}}.grid img{{width:96px;height:96px;object-fit:contain;background:#eee}}
.grid figcaption{{font-size:11px;overflow-wrap:anywhere}}</style></head><body>
<h1>Selection report</h1>
<p>Run <code>{html.escape(str(report.get("run_id") or "local"))}</code>,
dataset <code>{html.escape(str(report.get("dataset_id") or "-"))}</code>,
worker version {html.escape(str(report.get("worker_version")))}.</p>
<h2>Summary</h2><table>{"".join(rows)}</table>
<h2>Stages</h2><table>{stage_rows}</table>
<h2>Selected images</h2>{grid}
<h2>How the strategies chose</h2>{contributions}
<h2>Plots</h2>{images}
<h2>Selected samples (first {len(selected)})</h2><pre>{html.escape(chr(10).join(selected))}</pre>
<h2>Configuration</h2><pre>{html.escape(json.dumps(report.get("config", {}), indent=2, default=str))}</pre>
</body></html>
"""
    html_path = out_dir / "report.html"
    html_path.write_text(page)
    v2 = report_v2(public)
    (out_dir / "report_v2.json").write_text(json.dumps(v2, indent=2, sort_keys=True, default=str))
    try:
        write_pdf(out_dir / "report.pdf", report, plots, thumbs)
    except Exception as exc:  # the selection stands without its PDF; the log says why it is missing
        log.error("report.pdf could not be written: %s", exc, exc_info=True)
        (out_dir / "report.pdf").unlink(missing_ok=True)
    return json_path, html_path
