"""SimCLR self-supervised training on the user's data (what Lightly's worker does with enable_training).

Plain torch, no torchvision: geometric augmentations (random resized crop, flips, rotation) run in the
DataLoader workers on PIL images decoded with DCT-domain downscaling; photometric ones (colour jitter,
grayscale, Gaussian blur) run batched on the device.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..sources import InputSource, LocalSource, as_source
from ._common import LOG, Progress, autocast_dtype, cpu_count, report, resolve_device, resolve_workers
from .checkpoints import save_simclr_checkpoint
from .decode import load_video_frames, open_rgb
from .files import FrameRef, SampleRef, resolve_sample
from .models import RESNETS, SimCLRBackbone, SimCLRModel, channels_last


@dataclass
class TrainConfig:
    """Lightly's ``lightly_config`` (model/loader/trainer/optimizer/criterion/collate) with Lightly's defaults."""

    model_name: str = "resnet-18"  # resnet-9/18/34/50/101/152, or resnet-tiny (ours, for tests)
    num_ftrs: int = 32
    out_dim: int = 128
    width: float = 1.0
    input_size: int = 64
    batch_size: int = 16
    num_workers: int = -1
    shuffle: bool = True
    drop_last: bool = True
    max_epochs: int = 100
    lr: float = 1.0
    weight_decay: float = 1e-5
    momentum: float = 0.9
    temperature: float = 0.5
    cj_prob: float = 0.8
    cj_bright: float = 0.7
    cj_contrast: float = 0.7
    cj_sat: float = 0.7
    cj_hue: float = 0.2
    min_scale: float = 0.15
    random_gray_scale: float = 0.2
    gaussian_blur: float = 0.5
    sigmas: tuple[float, float] = (0.2, 2.0)
    vf_prob: float = 0.0
    hf_prob: float = 0.5
    rr_prob: float = 0.0
    rr_degrees: tuple[float, float] | None = None  # None: rotations by 90 degrees (Lightly's default)
    seed: int = 0
    precision: str = "auto"  # auto: bf16/fp16 autocast on CUDA, fp32 on CPU; "fp32" forces full precision
    torch_threads: int = 0  # CPU threads for training (the run's num_threads); 0 = one per vCPU

    @classmethod
    def from_lightly_config(cls, lightly_config: dict[str, Any] | None) -> TrainConfig:
        """From the protocol's ``lightly_config`` dict (keys as in DockerWorkerConfigV3Lightly); unset keys keep
        Lightly's defaults, unknown keys are ignored. Accepts snake_case and the wire's camelCase keys."""
        lc = _snake_keys(lightly_config or {})
        out: dict[str, Any] = {}

        def take(section: str, key: str, dest: str | None = None) -> None:
            value = (lc.get(section) or {}).get(key)
            if value is not None:
                out[dest or key] = value

        take("model", "name", "model_name")
        for k in ("num_ftrs", "out_dim", "width"):
            take("model", k)
        for k in ("batch_size", "num_workers", "shuffle", "drop_last"):
            take("loader", k)
        take("trainer", "max_epochs")
        take("trainer", "precision")
        take("optimizer", "lr")
        take("optimizer", "weight_decay")
        take("criterion", "temperature")
        collate_keys = ("input_size", "min_scale", "random_gray_scale", "gaussian_blur", "sigmas")
        for f in fields(cls):
            if f.name in collate_keys or f.name.startswith(("cj_", "vf_", "hf_", "rr_")):
                take("collate", f.name)
        if lc.get("seed") is not None:
            out["seed"] = lc["seed"]
        if "precision" in out:
            out["precision"] = {16: "auto", 32: "fp32"}.get(out["precision"], "auto")
        for k in ("sigmas", "rr_degrees"):
            if out.get(k) is not None:
                out[k] = tuple(float(v) for v in out[k])
        return cls(**out)

    @classmethod
    def from_lightly(cls, lightly_config: dict[str, Any] | None) -> TrainConfig:
        """Alias of from_lightly_config."""
        return cls.from_lightly_config(lightly_config)


def _snake_keys(value: Any) -> Any:
    """``{"maxEpochs": 1, "collate": {"cjProb": 0.5}}`` -> ``{"max_epochs": 1, "collate": {"cj_prob": 0.5}}``."""
    if isinstance(value, dict):
        return {re.sub(r"(?<!^)(?=[A-Z])", "_", str(k)).lower(): _snake_keys(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------------------------------------------
# worker side: two random geometric views per sample, uint8


def _random_resized_crop(rng: np.random.Generator, w: int, h: int, min_scale: float) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box (scale (min_scale, 1), ratio (3/4, 4/3), 10 tries, centre fallback)."""
    area = w * h
    log_r = (math.log(3 / 4), math.log(4 / 3))
    for _ in range(10):
        target = area * rng.uniform(min_scale, 1.0)
        ratio = math.exp(rng.uniform(*log_r))
        cw = round(math.sqrt(target * ratio))
        ch = round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            x0 = int(rng.integers(0, w - cw + 1))
            y0 = int(rng.integers(0, h - ch + 1))
            return x0, y0, x0 + cw, y0 + ch
    ratio = w / h
    if ratio < 3 / 4:
        cw, ch = w, round(w / (3 / 4))
    elif ratio > 4 / 3:
        ch, cw = h, round(h * (4 / 3))
    else:
        cw, ch = w, h
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    return x0, y0, x0 + cw, y0 + ch


class TwoViewDataset(Dataset[torch.Tensor]):
    """Item i = uint8 tensor 2 x 3 x S x S (two augmented views of sample i). A sample that cannot be
    loaded gives grey views (logged), unless its error is one of ``fatal`` (a subclass's own errors)."""

    fatal: tuple[type[Exception], ...] = ()

    def __init__(self, refs: list[SampleRef], cfg: TrainConfig, source: InputSource | Path) -> None:
        self.refs = refs
        self.source = as_source(source)
        self.cfg = cfg
        self.epoch = 0
        # decode so that a min_scale crop still has >= input_size pixels per side
        self.source_size = math.ceil(cfg.input_size / math.sqrt(max(cfg.min_scale, 1e-3)))

    def __len__(self) -> int:
        return len(self.refs)

    def load_item(self, index: int) -> Image.Image:
        """The image that item ``index``'s two views are cut from (a subclass may cut it differently)."""
        return self._load(self.refs[index])

    def _load(self, ref: SampleRef) -> Image.Image:
        if isinstance(ref, FrameRef):
            frames = load_video_frames(self.source, ref.key, [ref.frame], self.source_size)
            if ref.frame not in frames:
                raise OSError(f"cannot decode frame {ref.frame} of {ref.key}")
            return Image.fromarray(frames[ref.frame])
        src = self.source
        im = open_rgb(src.path(ref.key) if isinstance(src, LocalSource) else src.read_bytes(ref.key), self.source_size)
        im.load()
        return im

    def _view(self, im: Image.Image, rng: np.random.Generator) -> np.ndarray:
        c, s = self.cfg, self.cfg.input_size
        box = _random_resized_crop(rng, im.width, im.height, c.min_scale)
        arr = np.asarray(im.resize((s, s), Image.Resampling.BILINEAR, box=box))
        if rng.random() < c.hf_prob:
            arr = arr[:, ::-1]
        if rng.random() < c.vf_prob:
            arr = arr[::-1]
        if rng.random() < c.rr_prob:
            if c.rr_degrees is None:
                arr = np.rot90(arr, k=int(rng.integers(1, 4)))
            else:
                angle = float(rng.uniform(*c.rr_degrees))
                arr = np.asarray(Image.fromarray(np.ascontiguousarray(arr)).rotate(angle, Image.Resampling.BILINEAR))
        return np.ascontiguousarray(arr)

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng([self.cfg.seed, self.epoch, index])
        s = self.cfg.input_size
        try:
            im = self.load_item(index)
            views = np.stack([self._view(im, rng), self._view(im, rng)])
        except self.fatal:
            raise
        except Exception as exc:  # a bad file must not stop training: grey views (logged)
            LOG.warning("training: cannot load %s: %s", self.refs[index].name, exc)
            views = np.full((2, s, s, 3), 127, dtype=np.uint8)
        return torch.from_numpy(views).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------------------------
# device side: photometric augmentations, batched


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)


def _shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift`` (fraction of a turn, per image) via RGB -> HSV -> RGB."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, ((g - b) / safe) % 6, torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(delta > 0, h / 6, torch.zeros_like(h))
    h = (h + shift.view(-1, 1, 1)) % 1.0
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    v = maxc

    def k(n: int) -> torch.Tensor:
        return (n + h * 6) % 6

    def f(n: int) -> torch.Tensor:
        return v - v * sat * torch.clamp(torch.minimum(k(n), 4 - k(n)), 0, 1)

    return torch.stack([f(5), f(3), f(1)], dim=1)


def _blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Per-image Gaussian blur with a separable kernel (grouped conv, reflect padding)."""
    b, c, h, w = x.shape
    radius = max(1, min(math.ceil(3 * max_sigma), (min(h, w) - 1) // 2))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t.view(1, -1) ** 2) / (2 * sigma.view(-1, 1).to(x.dtype) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (b*c) x K
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, h, w)


def photometric(x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Colour jitter (brightness, contrast, saturation, hue; prob cj_prob), grayscale, Gaussian blur; x in [0,1]."""
    b = x.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return (torch.rand(b, generator=gen) * (hi - lo) + lo).to(x.device).view(-1, 1, 1, 1)

    def coin(p: float) -> torch.Tensor:
        return (torch.rand(b, generator=gen) < p).to(x.device).view(-1, 1, 1, 1)

    jit = coin(cfg.cj_prob)
    y = x * u(max(0.0, 1 - cfg.cj_bright), 1 + cfg.cj_bright)
    y = y.clamp(0, 1)
    mean = _gray(y).mean(dim=(1, 2, 3), keepdim=True)
    y = ((y - mean) * u(max(0.0, 1 - cfg.cj_contrast), 1 + cfg.cj_contrast) + mean).clamp(0, 1)
    g = _gray(y)
    y = ((y - g) * u(max(0.0, 1 - cfg.cj_sat), 1 + cfg.cj_sat) + g).clamp(0, 1)
    if cfg.cj_hue > 0:
        y = _shift_hue(y, u(-cfg.cj_hue, cfg.cj_hue).view(-1))
    x = torch.where(jit, y, x)
    x = torch.where(coin(cfg.random_gray_scale), _gray(x), x)
    if cfg.gaussian_blur > 0:
        lo, hi = cfg.sigmas
        x = torch.where(coin(cfg.gaussian_blur), _blur(x, u(lo, hi).view(-1), hi), x)
    return x.clamp(0, 1)


def nt_xent(z0: torch.Tensor, z1: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (SimCLR) loss over 2B views: each view's positive is its pair, the other 2B-2 are negatives."""
    b = z0.shape[0]
    z = F.normalize(torch.cat([z0, z1]).float(), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = (torch.arange(2 * b, device=z.device) + b) % (2 * b)
    return F.cross_entropy(logits, targets)


# ---------------------------------------------------------------------------------------------------------------


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def train_simclr(
    input_root: Path | InputSource,
    names: list[str],
    cfg: TrainConfig,
    device: str = "auto",
    checkpoint_path: Path | None = None,
    *,
    init: SimCLRBackbone | None = None,
    progress: Progress | None = None,
    log: logging.Logger = LOG,
) -> nn.Module:
    """Train SimCLR on the samples (whole images and video frames); returns the embedding model (backbone
    -> num_ftrs), in eval mode. See :func:`train_two_views`."""
    _check_training(cfg, names)
    source = as_source(input_root)
    dataset = TwoViewDataset([resolve_sample(source, n) for n in names], cfg, source)
    return train_two_views(dataset, cfg, device, checkpoint_path, init=init, progress=progress, log=log)


def train_two_views(
    dataset: TwoViewDataset,
    cfg: TrainConfig,
    device: str = "auto",
    checkpoint_path: Path | None = None,
    *,
    init: SimCLRBackbone | None = None,
    progress: Progress | None = None,
    log: logging.Logger = LOG,
    what: str = "samples",
) -> nn.Module:
    """Train SimCLR on the items of ``dataset`` (``what`` they are, for the log: samples, crops of a task);
    returns the embedding model (backbone -> num_ftrs), in eval mode.
    SGD (momentum 0.9) with cosine annealing over max_epochs, NT-Xent at cfg.temperature. The checkpoint
    (``checkpoints.py``: Lightly's ``model.backbone.*`` layout) is written after every epoch when
    ``checkpoint_path`` is given (load_simclr_checkpoint reads it); ``init``, a loaded one, is trained on.
    """
    _check_training(cfg, dataset.refs)
    dev = resolve_device(device)
    amp = autocast_dtype(dev, cfg.precision)
    torch.manual_seed(cfg.seed)
    loader, batch = _two_view_loader(dataset, cfg, dev)
    backbone = init if init is not None else SimCLRBackbone(cfg.model_name, cfg.width, cfg.num_ftrs)
    model = SimCLRModel(backbone, cfg.out_dim).to(dev)
    if dev.type == "cuda":
        model = channels_last(model)
    steps = _Steps.create(model, cfg, dev, amp)
    old_threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(cfg.torch_threads if cfg.torch_threads > 0 else cpu_count())
    total = len(loader) * cfg.max_epochs
    log.info(
        "SimCLR: %s (width %s, %d-d), %d %s, %d epochs x %d steps, batch %d, input %d px, on %s "
        "(%d loader workers, %d threads)",
        *(cfg.model_name, cfg.width, cfg.num_ftrs, len(dataset), what, cfg.max_epochs, len(loader), batch),
        *(cfg.input_size, dev, loader.num_workers, torch.get_num_threads()),
    )
    step = 0
    try:
        for epoch in range(cfg.max_epochs):
            model.train()
            dataset.epoch = epoch
            t0 = time.perf_counter()
            losses: list[float] = []
            for views in loader:
                losses.append(steps.step(views, epoch))
                step += 1
                report(progress, step, total)
            steps.sched.step()
            mean_loss, seconds = float(np.mean(losses)) if losses else float("nan"), time.perf_counter() - t0
            log.info("SimCLR epoch %d/%d: loss %.4f (%.1f s)", epoch + 1, cfg.max_epochs, mean_loss, seconds)
            if checkpoint_path is not None:
                save_simclr_checkpoint(Path(checkpoint_path), backbone, cfg, epoch + 1)
    finally:
        torch.set_num_threads(old_threads)
    return backbone.eval()


def _check_training(cfg: TrainConfig, names: list[Any]) -> None:
    if cfg.model_name not in RESNETS:
        raise ValueError(f"unknown model {cfg.model_name!r}; supported: {', '.join(RESNETS)}")
    if len(names) < 2:
        raise ValueError("SimCLR training needs at least 2 samples")


def _two_view_loader(dataset: TwoViewDataset, cfg: TrainConfig, dev: torch.device) -> tuple[DataLoader[Any], int]:
    """The seeded DataLoader of two-view batches, and its batch size."""
    n = len(dataset.refs)
    workers = min(resolve_workers(cfg.num_workers), n)
    batch = min(cfg.batch_size, n)
    loader_gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=cfg.shuffle,
        drop_last=cfg.drop_last and n >= batch,
        num_workers=workers,
        pin_memory=dev.type == "cuda",
        worker_init_fn=_worker_init if workers > 0 else None,
        generator=loader_gen,
    )
    return loader, batch


@dataclass(frozen=True)
class _Steps:
    """What one optimisation step of SimCLR needs: model, optimiser and its schedule, loss scaler, the
    augmentations' generator, the config, the device and the autocast dtype (None: fp32)."""

    model: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    aug_gen: torch.Generator
    cfg: TrainConfig
    dev: torch.device
    amp: torch.dtype | None

    @classmethod
    def create(cls, model: nn.Module, cfg: TrainConfig, dev: torch.device, amp: torch.dtype | None) -> _Steps:
        """SGD with momentum, cosine annealing over ``cfg.max_epochs``, a loss scaler for fp16."""
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.max_epochs))
        scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
        aug_gen = torch.Generator().manual_seed(cfg.seed + 1)
        return cls(model, opt, sched, scaler, aug_gen, cfg, dev, amp)

    def step(self, views: torch.Tensor, epoch: int) -> float:
        """One step on a batch of B x 2 x 3 x S x S uint8 views; returns its loss."""
        cfg, dev, amp = self.cfg, self.dev, self.amp
        x = views.to(dev, non_blocking=True).float().div_(255.0)  # B x 2 x 3 x S x S
        b = x.shape[0]
        x = photometric(x.flatten(0, 1), cfg, self.aug_gen).view(b, 2, *x.shape[2:])
        ctx = torch.autocast(dev.type, dtype=amp) if amp is not None else contextlib.nullcontext()
        with ctx:
            z = self.model(torch.cat([x[:, 0], x[:, 1]]))
        loss = nt_xent(z[:b], z[b:], cfg.temperature)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"SimCLR loss is {loss.item()} at epoch {epoch}; lower the learning rate")
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is unannotated
        self.scaler.step(self.opt)
        self.scaler.update()
        return float(loss.item())
