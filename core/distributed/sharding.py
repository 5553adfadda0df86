"""Who computes what: the rows of a batch per rank (training) and the shards per rank (GT).

Both splits depend only on (rank, world) and the sizes, never on timing, so every rank knows
every other rank's share without talking to it.
"""
from __future__ import annotations

import torch
from torch import Tensor


def local_rows(idx: Tensor, rank: int, world: int, period: int = 1) -> Tensor:
    """This rank's contiguous part of a batch of indices idx (B,), cut in whole groups of
    `period` rows (conditional models bind labels by row, core.field.label_period), so that
    the sample at local position j still has label residue j (mod period).

    The parts of ranks 0..world-1, concatenated, are idx itself."""
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in 0..{world - 1}, got {rank}")
    if idx.numel() % period:
        raise ValueError(f"a batch of {idx.numel()} rows is not a whole number of {period}-row label groups")
    groups = idx.numel() // period
    if groups < world:
        raise ValueError(f"a batch of {idx.numel()} rows ({groups} groups of {period}) cannot be split over "
                         f"{world} processes; use a batch of at least {world * period}")
    bounds = [groups * r // world for r in range(world + 1)]  # near-equal contiguous chunks
    return idx[bounds[rank] * period: bounds[rank + 1] * period]


def owned_shards(n_shards: int, rank: int, world: int) -> list[int]:
    """Shards k = rank, rank + world, ... (round robin: equal-cost shards stay balanced)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in 0..{world - 1}, got {rank}")
    return list(range(rank, n_shards, world))
