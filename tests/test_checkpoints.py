"""The SimCLR checkpoint a training run writes (``lightly_epoch_last.ckpt``, the CHECKPOINT artifact) loads with
Lightly's own recipe, and the worker reads it, its older format and Lightly's own checkpoints.

Lightly's recipe is the code of its documentation page "Load Model from Checkpoint" (Lightly Worker docs,
``docs/source/docker/advanced/code_examples/load_model_from_checkpoint.py`` in lightly-ai/lightly), run with
the ``ResNetGenerator`` and ``get_norm_layer`` of the installed, unmodified ``lightly==1.5.26``.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
from lightly_worker.embed import SimCLRBackbone, load_simclr_checkpoint
from test_worker_cli import local_run
from test_worker_e2e import _local_dataset, _wait_run, api_backend, client, make_images, server, start_worker  # noqa: F401 (fixtures)

DIVERSITY = {"n_samples": 3, "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]}


@pytest.fixture
def lightly_models(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """``lightly.models.ResNetGenerator`` and ``lightly.models.batchnorm`` of the installed lightly package.
    ``lightly.models``' own ``__init__`` imports torchvision (not installed: the worker does not use it), so
    the package is entered by its path; its modules run unchanged."""
    import lightly

    package = types.ModuleType("lightly.models")
    package.__path__ = [str(Path(lightly.__file__).parent / "models")]
    monkeypatch.setitem(sys.modules, "lightly.models", package)
    for name in ("lightly.models.batchnorm", "lightly.models.resnet"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    resnet = importlib.import_module("lightly.models.resnet")
    batchnorm = importlib.import_module("lightly.models.batchnorm")
    monkeypatch.setattr(package, "batchnorm", batchnorm, raising=False)
    return types.SimpleNamespace(ResNetGenerator=resnet.ResNetGenerator, batchnorm=batchnorm)


def load_ckpt(
    lightly_models: types.SimpleNamespace,
    ckpt_path: Path,
    model_name: str = "resnet-18",
    model_width: float = 1,
    map_location: str = "cpu",
) -> torch.nn.Module:
    """Lightly's documented recipe, as written there (``lightly.models`` passed in)."""
    ckpt = torch.load(ckpt_path, map_location=map_location)

    state_dict = OrderedDict()
    for key, value in ckpt["state_dict"].items():
        if ("projection_head" in key) or ("backbone.7" in key):
            # drop layers used for projection head
            continue
        state_dict[key.replace("model.backbone.", "")] = value

    resnet = lightly_models.ResNetGenerator(name=model_name, width=model_width)
    model = torch.nn.Sequential(
        lightly_models.batchnorm.get_norm_layer(3, 0),
        *list(resnet.children())[:-1],
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(1),
    )
    model.load_state_dict(state_dict)
    return model


def _train(tmp_path: Path, model: dict[str, Any]) -> Path:
    """A training run of the worker (local mode): its checkpoint."""
    make_images(tmp_path / "images", 8)
    lightly_config = {
        "model": model,
        "trainer": {"max_epochs": 1},
        "loader": {"batch_size": 4, "num_workers": 0},
        "collate": {"input_size": 32},
    }
    body = {"worker_config": {"enable_training": True}, "selection_config": DIVERSITY, "lightly_config": lightly_config}
    r = local_run(tmp_path / "images", tmp_path / "trained", config=body, input_size=32)
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp_path / "trained" / "lightly_epoch_last.ckpt"


def test_a_training_runs_checkpoint_loads_with_lightlys_recipe(
    tmp_path: Path, lightly_models: types.SimpleNamespace
) -> None:
    """The recipe's model (eval mode, images in [0, 1]) gives the pooled ResNet features of the model the
    worker embeds with; the dropped ``backbone.7`` (a 1x1 conv) maps them onto the worker's embedding."""
    ckpt_path = _train(tmp_path, {"name": "resnet-18", "width": 1, "num_ftrs": 16})
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert ckpt["lightly_model"] == {"model_name": "resnet-18", "model_width": 1.0}
    assert {k.split(".")[2] for k in ckpt["state_dict"]} == {str(i) for i in range(8)}

    recipe = load_ckpt(lightly_models, ckpt_path, model_name="resnet-18", model_width=1).eval()
    ours = load_simclr_checkpoint(ckpt_path)  # the model a run with this checkpoint embeds with
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = recipe(x)
        assert features.shape == (5, 512)
        torch.testing.assert_close(features, ours.features(x), rtol=1e-3, atol=1e-3)
        conv = ckpt["state_dict"]["model.backbone.7.weight"]
        projected = features @ conv.flatten(1).T + ckpt["state_dict"]["model.backbone.7.bias"]
        torch.testing.assert_close(projected, ours(x), rtol=1e-3, atol=1e-3)


def test_the_checkpoint_artifact_a_client_downloads_loads_with_lightlys_recipe(
    client,  # noqa: F811 (the fixture)
    start_worker,  # noqa: F811 (the fixture)
    tmp_path: Path,
    lightly_models: types.SimpleNamespace,
) -> None:
    """Through our server and a waiting worker: ``client.download_compute_worker_run_checkpoint`` of the
    unmodified client gives the file Lightly's recipe loads, the model the worker embeds with."""
    c, token = client
    worker = _local_dataset(c, token, start_worker, tmp_path, "ckpt-recipe", "ckpt-recipe-worker", n=8, seed=3)
    lightly_config = {"trainer": {"max_epochs": 1}, "loader": {"batch_size": 4}, "collate": {"input_size": 32}}
    sid = c.schedule_compute_worker_run(
        worker_config={"enable_training": True},
        lightly_config={**lightly_config, "model": {"num_ftrs": 8}},
        selection_config=DIVERSITY,
        runs_on=["cpu"],
    )
    assert _wait_run(c, sid, timeout=400).state == "COMPLETED", worker.log()
    path = tmp_path / "downloaded.ckpt"
    c.download_compute_worker_run_checkpoint(
        run=c.get_compute_worker_run_from_scheduled_run(sid), output_path=str(path)
    )
    recipe = load_ckpt(lightly_models, path).eval()  # the recipe's defaults: resnet-18, width 1
    ours = load_simclr_checkpoint(path)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(recipe(x), ours.features(x), rtol=1e-3, atol=1e-3)


def test_the_worker_still_reads_its_older_checkpoints_and_reads_lightlys(
    tmp_path: Path, lightly_models: types.SimpleNamespace
) -> None:
    """An older checkpoint (``resnet.*`` keys, a ReLU after the stem) gives the model it was saved from; a
    checkpoint of Lightly's worker (its SimCLR backbone and projection head under ``model.``, no config)
    gives Lightly's backbone; a run with either as ``checkpoint`` embeds with it."""
    torch.manual_seed(0)
    x = torch.rand(3, 3, 32, 32)
    old = SimCLRBackbone("resnet-tiny", 1.0, 8, layout="legacy").eval()
    legacy = {"model": "simclr", "config": {"name": "resnet-tiny", "width": 1.0, "num_ftrs": 8}, "epoch": 1}
    checkpoints = tmp_path / "lightly" / ".lightly" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save({**legacy, "state_dict": old.state_dict()}, checkpoints / "old.ckpt")
    with torch.no_grad():
        torch.testing.assert_close(load_simclr_checkpoint(checkpoints / "old.ckpt")(x), old(x))

    resnet = lightly_models.ResNetGenerator("resnet-18", width=0.25)
    theirs = torch.nn.Sequential(  # the backbone Lightly's SimCLR training builds (lightly's train CLI)
        lightly_models.batchnorm.get_norm_layer(3, 0),
        *list(resnet.children())[:-1],
        torch.nn.Conv2d(list(resnet.children())[-1].in_features, 16, 1),
        torch.nn.AdaptiveAvgPool2d(1),
    )
    with torch.no_grad():  # trained-looking statistics for the input BatchNorm
        theirs[0].running_mean.uniform_(-0.5, 0.5)
        theirs[0].running_var.uniform_(0.5, 2.0)
        theirs[0].weight.uniform_(0.5, 1.5)
        theirs[0].bias.uniform_(-0.2, 0.2)
    theirs.eval()
    state = {f"model.backbone.{k}": v for k, v in theirs.state_dict().items()}
    state["model.projection_head.layers.0.weight"] = torch.randn(16, 16)
    torch.save({"state_dict": state, "epoch": 3}, checkpoints / "lightly.ckpt")
    loaded = load_simclr_checkpoint(checkpoints / "lightly.ckpt")
    assert loaded.config["name"] == "resnet-18" and loaded.config["width"] == 0.25 and loaded.dim == 16
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), theirs(x).flatten(1), rtol=1e-3, atol=1e-3)

    make_images(tmp_path / "images", 6)
    for name, label in (("old.ckpt", "resnet-tiny, 8-d"), ("lightly.ckpt", "resnet-18, 16-d")):
        body = {"worker_config": {"checkpoint": name}, "selection_config": DIVERSITY}
        r = local_run(tmp_path / "images", tmp_path / name, config=body, lightly=tmp_path / "lightly", input_size=32)
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"loaded checkpoint {name!r} ({label})" in r.stdout + r.stderr
        header = (tmp_path / name / "data" / "embeddings.csv").read_text().splitlines()[0]
        assert header.count("embedding_") == int(label.split(", ")[1].removesuffix("-d"))
