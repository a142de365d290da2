"""The SimCLR checkpoint (``lightly_epoch_last.ckpt``, the CHECKPOINT artifact): written so that Lightly's own
recipe loads it, read in that layout, in Lightly's own, and in this worker's older one.

Lightly's documented recipe ("Load Model from Checkpoint") reads ``ckpt["state_dict"]``, drops the keys
with ``projection_head`` or ``backbone.7``, strips ``model.backbone.`` and loads the rest into
``Sequential(BatchNorm2d(3), *list(ResNetGenerator(name, width).children())[:-1], AdaptiveAvgPool2d(1),
Flatten(1))``. So the state dict holds Lightly's worker backbone, ``model.backbone.<i>.*``:

* ``0``: a BatchNorm2d(3) that is this model's input normalisation (running mean = ImageNet mean,
  running variance = std**2 - eps, weight 1, bias 0): the recipe's model takes images in [0, 1];
* ``1``, ``2``: the stem's conv and BatchNorm; ``3``..``6``: ResNet layer1..layer4 (``<i>.<block>.conv1``...);
* ``7``: the 1x1 conv to ``num_ftrs`` (our linear map; the recipe drops it and returns the pooled features).

Beside ``state_dict``: ``model`` ("simclr"), ``config`` (name, width, num_ftrs, layout), ``lightly_model``
(the ``model_name``/``model_width`` to give Lightly's recipe), ``epoch`` and ``train_config``; everything
``torch.load(weights_only=True)`` reads. A model from an older checkpoint of this worker (its layout has a
ReLU after the stem, which Lightly's has not) is saved in that older format again.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .models import RESNETS, BasicBlock, SimCLRBackbone

if TYPE_CHECKING:
    from .simclr import TrainConfig

PREFIX = "model.backbone."
BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default, as Lightly's get_norm_layer builds it
_STAGE = re.compile(r"^(\d+)\.(\d+)\.(.+)$")  # "<layer>.<block>.<rest>" below PREFIX


def lightly_model_args(config: dict[str, Any]) -> dict[str, Any]:
    """The ``model_name`` and ``model_width`` for Lightly's ResNetGenerator that build this model's ResNet
    (``resnet-tiny``, ours, is Lightly's ``resnet-9`` at an eighth of the width)."""
    block, layers, base = RESNETS[config["name"]]
    for name, (b, ls, b64) in RESNETS.items():
        if b is block and ls == layers and b64 == 64:
            return {"model_name": name, "model_width": float(config["width"]) * base / 64}
    raise ValueError(f"model {config['name']!r} has no ResNetGenerator equivalent")  # pragma: no cover


def to_lightly_state_dict(backbone: SimCLRBackbone) -> dict[str, torch.Tensor]:
    """The backbone's weights under Lightly's worker keys (``model.backbone.<i>.*``)."""
    state = {k: v.detach().cpu() for k, v in backbone.state_dict().items()}
    out: dict[str, torch.Tensor] = {
        f"{PREFIX}0.weight": torch.ones(3),
        f"{PREFIX}0.bias": torch.zeros(3),
        f"{PREFIX}0.running_mean": state["mean"].flatten().clone(),
        f"{PREFIX}0.running_var": state["std"].flatten() ** 2 - BN_EPS,
        f"{PREFIX}0.num_batches_tracked": torch.tensor(0, dtype=torch.long),
    }
    starts = _layer_starts(backbone.resnet.layers)
    for key, value in state.items():
        if key.startswith("resnet.stem."):
            index, rest = key.removeprefix("resnet.stem.").split(".", 1)
            out[f"{PREFIX}{int(index) + 1}.{rest}"] = value
        elif key.startswith("resnet.stages."):
            index, rest = key.removeprefix("resnet.stages.").split(".", 1)
            layer = max(i for i, s in enumerate(starts) if s <= int(index))
            out[f"{PREFIX}{layer + 3}.{int(index) - starts[layer]}.{rest}"] = value
    out[f"{PREFIX}7.weight"] = state["fc.weight"][:, :, None, None].clone()
    out[f"{PREFIX}7.bias"] = state["fc.bias"]
    return out


def _layer_starts(layers: list[int]) -> list[int]:
    """Index of each ResNet layer's first block in our flat ``stages``."""
    return [sum(layers[:i]) for i in range(len(layers))]


def backbone_from_lightly_state_dict(state: dict[str, Any], name: str | None = None) -> SimCLRBackbone:
    """The model of a state dict with Lightly's worker keys (this worker's checkpoint or Lightly's own): its
    ResNet inferred from the keys' shapes (``name``, the checkpoint's own, where it matches)."""
    sub = {k.removeprefix(PREFIX): v for k, v in state.items() if k.startswith(PREFIX)}
    for need in ("0.running_mean", "1.weight", "7.weight"):
        if need not in sub:
            raise ValueError(f"state_dict has no {PREFIX}{need} (not a Lightly SimCLR backbone)")
    blocks = [len({m[2] for k in sub if (m := _STAGE.match(k)) and m[1] == str(i)}) for i in (3, 4, 5, 6)]
    bottleneck = any(k.startswith("3.0.conv3.") for k in sub)
    stem = int(sub["1.weight"].shape[0])
    model_name, base = _resnet_name(blocks, bottleneck, name)
    backbone = SimCLRBackbone(model_name, stem / base, int(sub["7.weight"].shape[0]), layout="lightly")
    starts = _layer_starts(blocks)
    ours: dict[str, torch.Tensor] = {}
    for key, value in sub.items():
        head, _, rest = key.partition(".")
        if head in ("1", "2"):
            ours[f"resnet.stem.{int(head) - 1}.{rest}"] = value
        elif (m := _STAGE.match(key)) and m[1] in ("3", "4", "5", "6"):
            ours[f"resnet.stages.{starts[int(m[1]) - 3] + int(m[2])}.{m[3]}"] = value
    ours["fc.weight"] = sub["7.weight"].flatten(1)
    ours["fc.bias"] = sub["7.bias"]
    scale = torch.sqrt(sub["0.running_var"].float() + BN_EPS) / sub["0.weight"].float()
    ours["std"] = scale.view(1, 3, 1, 1)
    ours["mean"] = (sub["0.running_mean"].float() - sub["0.bias"].float() * scale).view(1, 3, 1, 1)
    backbone.load_state_dict(ours, strict=True)
    return backbone.eval()


def _resnet_name(blocks: list[int], bottleneck: bool, wanted: str | None) -> tuple[str, int]:
    """The RESNETS name (and its base width) with these blocks per layer: ``wanted`` where it fits."""
    fits = [
        (n, base)
        for n, (block, layers, base) in RESNETS.items()
        if layers == blocks and (block is not BasicBlock) == bottleneck
    ]
    for n, base in fits:
        if n == wanted:
            return n, base
    for n, base in fits:
        if base == 64:
            return n, base
    kind = "Bottleneck" if bottleneck else "BasicBlock"
    raise ValueError(f"a ResNet of {kind}s with {blocks} blocks per layer is none of {', '.join(RESNETS)}")


def save_simclr_checkpoint(path: Path, backbone: SimCLRBackbone, cfg: TrainConfig, epoch: int) -> None:
    """Write the checkpoint (atomically: a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    config = dict(backbone.config)
    ckpt: dict[str, Any] = {"model": "simclr", "config": config, "epoch": epoch, "train_config": asdict(cfg)}
    if config.get("layout") == "lightly":
        ckpt["state_dict"] = to_lightly_state_dict(backbone)
        ckpt["lightly_model"] = lightly_model_args(config)
    else:  # an older checkpoint's model, trained further: its own format
        ckpt["state_dict"] = {k: v.detach().cpu() for k, v in backbone.state_dict().items()}
    torch.save(ckpt, tmp)
    tmp.replace(path)


def load_simclr_checkpoint(path: Path) -> SimCLRBackbone:
    """The embedding model of a checkpoint (``weights_only``: safe to load): this worker's (Lightly's layout),
    this worker's older format (``resnet.*`` keys), or Lightly's own (``model.backbone.*`` keys)."""
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path} has no state_dict (not a SimCLR checkpoint of a Lightly worker)")
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    if any(str(k).startswith(PREFIX) for k in state):
        return backbone_from_lightly_state_dict(state, config.get("name"))
    if ckpt.get("model") != "simclr" or not config:
        raise ValueError(f"{path} has neither {PREFIX}* keys nor this worker's older format")
    backbone = SimCLRBackbone(config["name"], config["width"], config["num_ftrs"], config.get("layout", "legacy"))
    backbone.load_state_dict(state)
    return backbone.eval()
