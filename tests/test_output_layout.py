"""Lightly's output layout where a user's scripts read it: the run's configuration as ``config/config.yaml``
(beside ``config/config.json``), a run config given as a YAML file (local mode, ``config=run.yaml``), and the
plots under Lightly's names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from test_worker_e2e import make_images


def test_a_yaml_run_config_is_read_and_the_output_holds_config_yaml_and_lightlys_plot_names(tmp_path: Path) -> None:
    make_images(tmp_path / "images", 10)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "worker_config:\n"
        "  normalize_embeddings: true\n"
        "selection_config:\n"
        "  n_samples: 3\n"
        "  strategies:\n"
        "    - input: {type: EMBEDDINGS}\n"
        "      strategy: {type: DIVERSITY}\n"
    )
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIGHTLY_")}
    args = [f"input_mount={tmp_path / 'images'}", f"output_dir={out}", "embedding.input_size=64", "device=cpu"]
    r = subprocess.run(
        [sys.executable, "-m", "lightly_worker.cli", "mode=local", f"config={cfg}", "token=SECRET-TOKEN", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert len((out / "filenames" / "selected_filenames.txt").read_text().split()) == 3
    as_yaml = yaml.safe_load((out / "config" / "config.yaml").read_text())
    assert as_yaml == json.loads((out / "config" / "config.json").read_text())
    assert "SECRET-TOKEN" not in (out / "config" / "config.yaml").read_text()
    text = json.dumps(as_yaml)
    assert "DIVERSITY" in text and "normalize" in text.lower(), text[:500]
    for plot in ("distance_distr_before", "distance_distr_after", "scatter_pca"):
        assert (out / "plots" / f"{plot}.png").stat().st_size > 1000, plot
