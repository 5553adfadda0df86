"""Time features for t in [0, 1]: t itself plus low-frequency sines and cosines.

The highest frequency is kept low (pi 2^(n_freq - 1), about 100 rad per unit time for n_freq = 6)
so the learned velocity field stays smooth in t: fast samplers and the adaptive GT solver then
see the field's own dynamics, not oscillations of the embedding.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def time_features(t: Tensor, n_freq: int) -> Tensor:
    """(B,) -> (B, 1 + 2 n_freq): [t, sin(pi 2^k t), cos(pi 2^k t) for k < n_freq]."""
    freqs = math.pi * 2.0 ** torch.arange(n_freq, device=t.device, dtype=t.dtype)  # (F,)
    arg = t[:, None] * freqs[None]  # (B, F)
    return torch.cat([t[:, None], torch.sin(arg), torch.cos(arg)], dim=1)


def batch_times(t: Tensor, x: Tensor) -> Tensor:
    """A scalar or (B,) time as a (B,) tensor on x's device and dtype."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        return t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must be a scalar or of shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t
