"""A time-conditioned MLP for 2-D (or any flat) data: the benchmark network of the toy models."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .embedding import batch_times, time_features


class TimeMLP(nn.Module):
    """f(t, x) for x of shape (B, dim): concat(x, Fourier features of x, time features) ->
    `layers` hidden layers of width `hidden` with SiLU -> dim outputs. Unconditional.

    x_freq > 0 adds sin(pi 2^k x_j), cos(pi 2^k x_j) for k < x_freq (periods 2, 1, 0.5, ...):
    plain MLPs on raw coordinates learn sharp edges (a checkerboard's) slowly (spectral bias).
    """

    num_classes = 0

    def __init__(self, dim: int = 2, hidden: int = 256, layers: int = 3, n_freq: int = 6, x_freq: int = 0):
        super().__init__()
        self.dim, self.n_freq, self.x_freq = dim, n_freq, x_freq
        self.data_shape = (dim,)
        widths = [dim * (1 + 2 * x_freq) + 1 + 2 * n_freq] + [hidden] * layers
        mods: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            mods += [nn.Linear(w_in, w_out), nn.SiLU()]
        mods.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*mods)

    def forward(self, t: Tensor, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        if y is not None:
            raise ValueError("TimeMLP is unconditional; got class labels")
        t = batch_times(t, x)
        feats = [x, time_features(t, self.n_freq)]
        if self.x_freq:
            freqs = math.pi * 2.0 ** torch.arange(self.x_freq, device=x.device, dtype=x.dtype)  # (F,)
            arg = (x[:, :, None] * freqs).flatten(1)  # (B, dim F)
            feats += [torch.sin(arg), torch.cos(arg)]
        return self.net(torch.cat(feats, dim=1))  # (B, dim)
