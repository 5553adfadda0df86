"""Noise seed streams: training, validation and evaluation noise disjoint by construction.

One user seed S gives three streams, each a torch.Generator seed:

    "eval"   S itself: what `python -m core evaluate --seed S`, the app and the reports draw,
    "train"  stream_seed(S, "train"): the GT paths / pairs a learned solver is trained on,
    "val"    stream_seed(S, "val"):   its held-out validation noise,

where stream_seed(S, name) = the first 63 bits of numpy.random.SeedSequence(S, spawn_key=
(code,)).generate_state(2, uint64)[0] with code 1 ("train") or 2 ("val"). SeedSequence hashes
(entropy, spawn_key) so the derived seeds are unrelated to S and to each other; `stream_seed`
also makes sure a derived seed is never a small integer (< 2**32), so it cannot equal an
evaluation seed anyone types. Drawing N(0, I) noise from different generator seeds gives
different samples (tests/test_seeds.py checks that no row repeats across the three streams).
"""
from __future__ import annotations

import numpy as np
import torch

STREAMS = {"eval": 0, "train": 1, "val": 2}


def stream_seed(seed: int, stream: str) -> int:
    """The torch.Generator seed of `stream` for user seed `seed` (see the module docstring)."""
    if stream not in STREAMS:
        raise ValueError(f"unknown noise stream {stream!r}; known: {sorted(STREAMS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    code = STREAMS[stream]
    if code == 0:
        return int(seed)
    words = np.random.SeedSequence(int(seed), spawn_key=(code,)).generate_state(2, np.uint64)
    for w in words:  # the first word that is not a small integer (practically always the first)
        v = int(w) >> 1
        if v >= 2**32:
            return v
    return (int(words[0]) >> 1) | (1 << 62)


def stream_noise(field, n: int, seed: int, stream: str, device=None) -> torch.Tensor:
    """n noise samples (n, *D) of `field` from `stream` of `seed`, on `device`."""
    gen = torch.Generator().manual_seed(stream_seed(seed, stream))
    x0 = field.noise(n, generator=gen)
    return x0 if device is None else x0.to(device)
