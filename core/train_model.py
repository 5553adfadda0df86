"""Training the flow / diffusion models themselves (the "pre-trained" models the solvers serve).

For data x1, noise x0 ~ N(0, I), t ~ U[0, 1] and x_t = alpha_t x1 + sigma_t x0 on the chosen
Gaussian path, the network f(t, x_t) regresses, per sample (mean over data dims):
    velocity  (FM-OT, FM/v-CS): target u = alpha'_t x1 + sigma'_t x0   (conditional FM loss)
    eps       (eps-VP):        target x0                             (DDPM's simple loss)
    x1:                        target x1
Labelled data (digits) trains a class-conditional network; each label is replaced by the null
class with probability p_uncond, which makes classifier-free guidance possible at sampling.
Adam with linear warm-up and cosine decay; the saved weights are an exponential moving average.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .data import get_spec, sample_labeled
from .models import build_network
from .paths import PREDICTIONS, get_path


@dataclass(frozen=True)
class ModelTrainConfig:
    """What to train and how. "auto" fields follow the data set and the path."""

    data: str = "checkerboard"  # a name in core.data.DATASETS
    path: str = "fm-ot"  # Gaussian path: "fm-ot", "fm-cs" or "eps-vp"
    prediction: str = "auto"  # "velocity", "eps" or "x1"; auto: eps for eps-vp, velocity otherwise
    arch: str = "auto"  # auto: "time-mlp" for 2-D data, "cond-resmlp" for images
    hidden: int = 256  # network width
    layers: int = 3  # hidden layers (time-mlp) or residual blocks (cond-resmlp)
    x_freq: int = 0  # Fourier features of x (time-mlp only): sin/cos(pi 2^k x), k < x_freq
    steps: int = 20_000  # optimiser steps
    batch_size: int = 1024  # samples per step
    lr: float = 1e-3  # peak Adam learning rate
    warmup: int = 200  # linear warm-up steps (at most steps / 5), then cosine decay to lr_final * lr
    lr_final: float = 0.02  # final learning rate as a fraction of lr
    ema: float = 0.999  # decay of the weight average that is saved (0 = save the raw weights)
    p_uncond: float = 0.1  # probability of the null label (labelled data only)
    guidance_scale: float = 2.0  # default CFG scale recorded in the checkpoint (labelled data only)
    seed: int = 0  # fixes initial weights, data, noise and times
    device: str = "auto"  # "cpu", "cuda", "cuda:1", ...; auto: cuda when available

    def resolved(self) -> "ModelTrainConfig":
        """The config with every "auto" replaced and every value checked."""
        spec = get_spec(self.data)
        get_path(self.path)
        prediction = self.prediction if self.prediction != "auto" else ("eps" if self.path == "eps-vp" else "velocity")
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction type {prediction!r}; known: {PREDICTIONS}")
        arch = self.arch if self.arch != "auto" else ("time-mlp" if len(spec.shape) == 1 else "cond-resmlp")
        for name in ("hidden", "layers", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not (self.lr > 0 and 0 <= self.ema < 1 and 0 <= self.p_uncond <= 1):
            raise ValueError(f"need lr > 0, 0 <= ema < 1, 0 <= p_uncond <= 1; got lr={self.lr}, "
                             f"ema={self.ema}, p_uncond={self.p_uncond}")
        return ModelTrainConfig(**{**asdict(self), "prediction": prediction, "arch": arch,
                                   "device": str(resolve_device(self.device))})


def resolve_device(device: str | torch.device | None) -> torch.device:
    """"auto"/None -> cuda if available else cpu; anything else as given (checked)."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r} ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here")
    return dev


def arch_args(cfg: ModelTrainConfig) -> dict:
    """The JSON arguments of the network for a resolved config."""
    spec = get_spec(cfg.data)
    if cfg.arch == "time-mlp":
        if len(spec.shape) != 1:
            raise ValueError(f"time-mlp needs flat data, {cfg.data!r} has shape {spec.shape}")
        return {"dim": spec.shape[0], "hidden": cfg.hidden, "layers": cfg.layers, "n_freq": 6,
                "x_freq": cfg.x_freq}
    if cfg.arch == "cond-resmlp":
        if len(spec.shape) != 3 or spec.shape[1] != spec.shape[2]:
            raise ValueError(f"cond-resmlp needs square images (C, S, S), {cfg.data!r} has shape {spec.shape}")
        return {"channels": spec.shape[0], "size": spec.shape[1], "hidden": cfg.hidden, "blocks": cfg.layers,
                "num_classes": spec.num_classes, "n_freq": 6}
    raise ValueError(f"unknown architecture {cfg.arch!r}; known: ['cond-resmlp', 'time-mlp']")


def training_target(path, prediction: str, t: Tensor, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
    """(x_t, regression target) for a batch: x_t = alpha x1 + sigma x0 and the target of
    `prediction` (velocity alpha' x1 + sigma' x0, eps x0, or x1). t: (B,), x0, x1: (B, *D)."""
    c = path(t)
    shape = (-1,) + (1,) * (x1.dim() - 1)
    a, s, da, ds = (v.reshape(shape) for v in (c.alpha, c.sigma, c.d_alpha, c.d_sigma))
    x_t = a * x1 + s * x0
    target = {"velocity": lambda: da * x1 + ds * x0, "eps": lambda: x0, "x1": lambda: x1}[prediction]()
    return x_t, target


@dataclass
class TrainedModel:
    """The (EMA) network in eval mode, the checkpoint header describing it, the loss history
    as (step, mean loss over the last logging window) and the wall time."""

    net: nn.Module
    header: dict
    history: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0


def _lr_factor(step: int, cfg: ModelTrainConfig) -> float:
    warmup = min(cfg.warmup, cfg.steps // 5)  # short runs warm up for a fifth of their steps
    if step < warmup:
        return (step + 1) / warmup
    p = (step - warmup) / max(1, cfg.steps - warmup)
    return cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * min(p, 1.0)))


def train_model(cfg: ModelTrainConfig = ModelTrainConfig(), progress: bool = True,
                callback: Optional[Callable[[int, float], None]] = None, log_every: int = 100) -> TrainedModel:
    """Train a network for `cfg`; deterministic given cfg.seed on a given device.

    progress: show a tqdm bar. callback(step, loss) every `log_every` steps.
    """
    cfg = cfg.resolved()
    spec = get_spec(cfg.data)
    path = get_path(cfg.path)
    device = torch.device(cfg.device)
    args = arch_args(cfg)
    torch.manual_seed(cfg.seed)  # initial weights
    net = build_network(cfg.arch, **args).to(device)
    ema = build_network(cfg.arch, **args).to(device)
    ema.load_state_dict(net.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    g = torch.Generator().manual_seed(cfg.seed + 1)  # data, noise, times, label dropout (on CPU)
    conditional = spec.num_classes > 0

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.steps, desc=f"train {cfg.data}/{cfg.path}", unit="step", dynamic_ncols=True)
    history: list[tuple[int, float]] = []
    window: list[float] = []
    start = time.perf_counter()
    net.train()
    for step in range(cfg.steps):
        x1, y = sample_labeled(cfg.data, cfg.batch_size, g)
        x0 = torch.randn(x1.shape, generator=g)
        t = torch.rand(cfg.batch_size, generator=g)
        if conditional:
            drop = torch.rand(cfg.batch_size, generator=g) < cfg.p_uncond
            y = torch.where(drop, torch.full_like(y, spec.num_classes), y).to(device)
        x1, x0, t = x1.to(device), x0.to(device), t.to(device)
        x_t, target = training_target(path, cfg.prediction, t, x0, x1)
        out = net(t, x_t, y if conditional else None)
        loss = ((out - target) ** 2).reshape(cfg.batch_size, -1).mean(1)  # (B,) per-sample loss
        loss = loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            decay = min(cfg.ema, (1 + step) / (10 + step))
            for p_ema, p in zip(ema.parameters(), net.parameters()):
                p_ema.lerp_(p, 1 - decay)
        window.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == cfg.steps:
            mean = sum(window) / len(window)
            window.clear()
            history.append((step + 1, mean))
            if not math.isfinite(mean):
                raise FloatingPointError(f"training loss became {mean} at step {step + 1}; lower the learning rate")
            if bar is not None:
                bar.set_postfix(loss=f"{mean:.4f}")
            if callback is not None:
                callback(step + 1, mean)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    final = ema if cfg.ema > 0 else net
    final.eval().requires_grad_(False)
    header = {
        "arch": cfg.arch,
        "arch_args": args,
        "path": path.to_dict(),
        "prediction": cfg.prediction,
        "data": {"name": cfg.data, "shape": list(spec.shape), "range": spec.data_range},
        "conditioning": ({"num_classes": spec.num_classes, "null_class": spec.num_classes,
                          "p_uncond": cfg.p_uncond, "guidance_scale": cfg.guidance_scale}
                         if conditional else None),
        "seed": cfg.seed,
        "training": {**asdict(cfg), "seconds": round(seconds, 1), "final_loss": history[-1][1],
                     "torch": torch.__version__},
    }
    return TrainedModel(final, header, history, seconds)
