"""A velocity field u(t, x) that carries what it is: its path, data shape and range, provenance."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from .paths import GaussianPath


@dataclass
class VelocityField:
    """u(t, x) -> dx/dt for x of shape (B, *D) and t a scalar or (B,) tensor.

    path: the Gaussian path the model was trained on (None for a VF with no such path; the
      dedicated solvers DDIM / DPM-Solver++ / EDM need one).
    data_shape: D, the shape of one sample. data_range: R in PSNR (2 for data in [-1, 1]).
    model_id: a content hash identifying the model (solver checkpoints record it).
    guidance_scale: the classifier-free guidance scale bound into u (None if unguided).
    meta: anything else worth showing (architecture, data set, seed, ...).
    """

    fn: Callable[[Tensor, Tensor], Tensor]
    data_shape: tuple[int, ...]
    path: Optional[GaussianPath] = None
    data_range: float = 2.0
    model_id: str = "analytic"
    guidance_scale: Optional[float] = None
    meta: dict = field(default_factory=dict)
    module: Optional[torch.nn.Module] = None  # the network behind fn, if any (moved by .to())

    def __call__(self, t, x: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        return self.fn(t, x)

    def to(self, device) -> "VelocityField":
        """Move the network behind fn (if any) to `device`; analytic fields follow x anyway."""
        if self.module is not None:
            self.module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        if self.module is not None:
            for p in self.module.parameters():
                return p.device
        return torch.device("cpu")

    @property
    def dim(self) -> int:
        n = 1
        for d in self.data_shape:
            n *= d
        return n

    def noise(self, n: int, generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> Tensor:
        """Source samples x0 ~ N(0, I) of shape (n, *data_shape)."""
        return torch.randn((n, *self.data_shape), generator=generator, dtype=dtype).to(device or "cpu")


def label_period(field) -> int:
    """Conditional models bind class labels by row: row i of a batch gets labels[i % L]. Code
    that re-batches samples must keep every batch a multiple of L and keep each sample at its
    residue (see `aligned_batch`), or a path would switch classes between steps. 1 if unconditional."""
    labels = getattr(field, "labels", None)
    return int(labels.numel()) if labels is not None and labels.numel() > 1 else 1


def aligned_batch(n_total: int, batch: int, period: int, generator: torch.Generator | None = None) -> Tensor:
    """Random indices into n_total samples (n_total a multiple of period): whole groups of
    `period` consecutive samples, so the sample at batch position j has index = j (mod period)."""
    if period == 1:
        return torch.randperm(n_total, generator=generator)[:batch]
    groups = max(1, batch // period)
    g = torch.randperm(n_total // period, generator=generator)[:groups]
    return (g[:, None] * period + torch.arange(period)).flatten()


def round_to_period(n: int, period: int) -> int:
    """The largest multiple of period <= n (at least period)."""
    return max(period, (n // period) * period)
