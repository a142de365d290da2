"""report.pdf: the content of report.html on A4 pages, drawn with matplotlib's PDF backend (already a
worker dependency: no browser, no other package at run time).

Pages: the summary with the stages and the selection-versus-random dashboard; the thumbnails of the
selection in pick order; the plots; how the strategies chose; the selected filenames; the configuration.
Long lists are cut to what fits and say how much was left out.
"""

from __future__ import annotations

import base64
import io
import json
import textwrap
from pathlib import Path
from typing import Any

A4 = (8.27, 11.69)  # inches, portrait
GRID_COLUMNS = 6
MAX_FILENAME_LINES = 200
MAX_CONFIG_LINES = 180
LINES_PER_PAGE = 90


def _page(pdf: Any, plt: Any, title: str) -> tuple[Any, Any]:
    fig = plt.figure(figsize=A4)
    fig.text(0.06, 0.96, title, fontsize=16, weight="bold", va="top")
    return fig, pdf


def _save(pdf: Any, plt: Any, fig: Any) -> None:
    pdf.savefig(fig)
    plt.close(fig)


def _table(fig: Any, rect: list[float], rows: list[tuple[str, str]], title: str) -> None:
    ax = fig.add_axes(rect)
    ax.axis("off")
    ax.set_title(title, loc="left", fontsize=12, weight="bold")
    if not rows:
        ax.text(0, 0.9, "(none)", fontsize=9)
        return
    table = ax.table(cellText=[[k, v] for k, v in rows], colWidths=[0.45, 0.55], loc="upper left", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8.5)
    table.scale(1, 1.25)


def _text_pages(pdf: Any, plt: Any, title: str, lines: list[str], note: str = "") -> None:
    chunks = [lines[i : i + LINES_PER_PAGE] for i in range(0, len(lines), LINES_PER_PAGE)] or [["(none)"]]
    for n, chunk in enumerate(chunks):
        fig, _ = _page(pdf, plt, title if n == 0 else f"{title} (continued)")
        body = "\n".join(chunk) + (f"\n\n{note}" if note and n == len(chunks) - 1 else "")
        fig.text(0.06, 0.92, body, fontsize=6.5, family="monospace", va="top")
        _save(pdf, plt, fig)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def write_pdf(path: Path, report: dict[str, Any], plots: dict[str, Path], thumbnails: list[dict[str, Any]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(path, metadata={"Title": "Lightly worker report", "Creator": "lightly_worker"}) as pdf:
        _summary_page(pdf, plt, report)
        _thumbnail_page(pdf, plt, report, thumbnails)
        _plot_pages(pdf, plt, plots)
        _text_sections(pdf, plt, report)
    return path


def _summary_page(pdf: Any, plt: Any, report: dict[str, Any]) -> None:
    summary = report.get("summary", {})
    stats = report.get("distance_statistics", {})
    fig, _ = _page(pdf, plt, "Selection report")
    fig.text(
        0.06,
        0.925,
        f"Run {report.get('run_id') or 'local'}, dataset {report.get('dataset_id') or '-'}, "
        f"worker version {report.get('worker_version')}",
        fontsize=9,
        va="top",
    )
    _table(fig, [0.06, 0.60, 0.88, 0.28], [(k, _fmt(v)) for k, v in summary.items()], "Summary")
    stages = [(k, f"{v:.2f} s") for k, v in report.get("stage_seconds", {}).items()]
    _table(fig, [0.06, 0.30, 0.88, 0.24], stages, "Stages")
    dashboard = [
        ("diversity (mean NN distance), selected", _fmt((stats.get("nn_distance_after") or {}).get("mean"))),
        ("diversity (mean NN distance), random", _fmt((stats.get("nn_distance_random") or {}).get("mean"))),
        ("coverage, selected", _fmt(stats.get("coverage_selected"))),
        ("coverage, random", _fmt(stats.get("coverage_random"))),
    ]
    _table(fig, [0.06, 0.08, 0.88, 0.16], dashboard, "Selection versus a random subset of the same size")
    _save(pdf, plt, fig)


def _thumbnail_page(pdf: Any, plt: Any, report: dict[str, Any], thumbnails: list[dict[str, Any]]) -> None:
    from PIL import Image

    fig, _ = _page(pdf, plt, "Selected images")
    n_selected = int(report.get("summary", {}).get("n_selected", len(thumbnails)))
    more = f" of {n_selected}" if n_selected > len(thumbnails) else ""
    fig.text(0.06, 0.925, f"The first {len(thumbnails)}{more} selected, in pick order.", fontsize=9, va="top")
    rows = max(1, -(-len(thumbnails) // GRID_COLUMNS))
    cell_w, cell_h = 0.88 / GRID_COLUMNS, min(0.1, 0.86 / rows)
    for i, t in enumerate(thumbnails):
        r, c = divmod(i, GRID_COLUMNS)
        ax = fig.add_axes([0.06 + c * cell_w, 0.90 - (r + 1) * cell_h, cell_w * 0.92, cell_h * 0.78])
        ax.set_xticks([])
        ax.set_yticks([])
        if "jpeg_base64" in t:
            with Image.open(io.BytesIO(base64.b64decode(t["jpeg_base64"]))) as im:
                ax.imshow(im.convert("RGB"))
        else:
            ax.text(0.5, 0.5, "(unreadable)", ha="center", va="center", fontsize=6)
        name = t["filename"] if len(t["filename"]) <= 24 else "..." + t["filename"][-21:]
        ax.set_title(f"{i + 1}. {name}", fontsize=5.5)
    _save(pdf, plt, fig)


def _plot_pages(pdf: Any, plt: Any, plots: dict[str, Path]) -> None:
    from PIL import Image

    items = list(plots.items())
    for start in range(0, len(items), 2):
        fig, _ = _page(pdf, plt, "Plots")
        for k, (name, png) in enumerate(items[start : start + 2]):
            ax = fig.add_axes([0.06, 0.50 - k * 0.45, 0.88, 0.40])
            ax.axis("off")
            with Image.open(png) as im:
                ax.imshow(im.convert("RGB"))
            ax.set_title(name, fontsize=9)
        _save(pdf, plt, fig)


def _text_sections(pdf: Any, plt: Any, report: dict[str, Any]) -> None:
    details = report.get("selection_details", {})
    lines = []
    for row in details.get("contributions") or []:
        lines.append(
            f"{row['strategy']}: strength {row['strength']:g}, mean objective at the picks "
            f"{row['objective_at_picks']:.3f}, over the candidates {row['objective_of_candidates']:.3f}"
        )
    for key, value in (details.get("coverage") or {}).items():
        lines.append(f"COVERAGE_EXT {key}: {value}")
    if not lines:
        lines = ["One strategy chose every sample (no combination to break down)."]
    wrapped = [w for line in lines for w in textwrap.wrap(line, 120)]
    _text_pages(pdf, plt, "How the strategies chose", wrapped)

    selected = report.get("selected_filenames_preview", [])
    n_selected = int(report.get("summary", {}).get("n_selected", len(selected)))
    shown = selected[:MAX_FILENAME_LINES]
    note = f"({n_selected - len(shown)} more in filenames/selected_filenames.txt)" if n_selected > len(shown) else ""
    _text_pages(pdf, plt, "Selected samples", [f"{i + 1}. {n}" for i, n in enumerate(shown)], note)

    config = json.dumps(report.get("config", {}), indent=2, default=str).splitlines()
    cut = f"({len(config) - MAX_CONFIG_LINES} more lines in report.json)" if len(config) > MAX_CONFIG_LINES else ""
    wrapped = [w for line in config[:MAX_CONFIG_LINES] for w in (textwrap.wrap(line, 130) or [""])]
    _text_pages(pdf, plt, "Configuration", wrapped, cut)
