"""A class-conditional residual MLP for small images (the 8x8 digits), with a null class for
classifier-free guidance."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .embedding import batch_times, time_features


class _Block(nn.Module):
    """h + W2 SiLU(W1 SiLU(LN h) + c): a pre-norm residual block; c carries time and class."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.lin1 = nn.Linear(hidden, hidden)
        self.lin2 = nn.Linear(hidden, hidden)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        return h + self.lin2(nn.functional.silu(self.lin1(nn.functional.silu(self.norm(h))) + c))


class CondResMLP(nn.Module):
    """f(t, x, y) for x of shape (B, *data_shape) and labels y (B,) in 0..num_classes, where
    y = num_classes is the null class (unconditional, for classifier-free guidance); y = None
    means the null class for every sample."""

    def __init__(self, channels: int = 1, size: int = 8, hidden: int = 256, blocks: int = 3,
                 num_classes: int = 10, n_freq: int = 6):
        super().__init__()
        self.data_shape = (channels, size, size)
        self.num_classes, self.n_freq = num_classes, n_freq
        dim = channels * size * size
        self.inp = nn.Linear(dim, hidden)
        self.t_emb = nn.Sequential(nn.Linear(1 + 2 * n_freq, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.y_emb = nn.Embedding(num_classes + 1, hidden)  # last row: the null class
        self.blocks = nn.ModuleList(_Block(hidden) for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, t: Tensor, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        B = x.shape[0]
        t = batch_times(t, x)
        if y is None:
            y = torch.full((B,), self.null_class, dtype=torch.long, device=x.device)
        c = self.t_emb(time_features(t, self.n_freq)) + self.y_emb(y)  # (B, H)
        h = self.inp(x.reshape(B, -1)) + c  # (B, H)
        for block in self.blocks:
            h = block(h, c)
        return self.out(h).reshape(x.shape)  # (B, *data_shape)
