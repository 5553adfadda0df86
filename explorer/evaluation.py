"""The evaluation set: one fixed set of noise per model on which every page measures solvers.

The Model page draws its GT samples, the Samples page every solver's samples and errors, the
Paths page its table (and its drawn paths are the first few of the set) and the Benchmark page
its curves at the default sample count: all from the same noise, so a solver shows one RMSE
everywhere. It is held out from training: the noise seed is core.report's evaluation seed, and
a training run draws its noise from its own seed (0 by default; the Train page refuses this one).
The Train page's curves are on the run's own validation noise, and say so.
No streamlit here (explorer/cached.py caches what uses it).
"""
from __future__ import annotations

from core.report import EVAL_SEED_OFFSET

EVAL_SEED = EVAL_SEED_OFFSET  # 7919, the seed of core.report's (the CLI's) evaluation noise
SIZES = {"2-D": 1000, "image": 100, "large image": 30, "other": 256}  # samples in the set, by kind of data
LARGE_IMAGE = 256  # images with more numbers than this (28x28 MNIST: 784) are "large": a U-Net's GT is costly


def kind(field) -> str:
    shape = tuple(field.data_shape)
    if shape == (2,):
        return "2-D"
    if len(shape) == 3:
        return "large image" if shape[0] * shape[1] * shape[2] > LARGE_IMAGE else "image"
    return "other"


def size(field) -> int:
    """How many noise samples the model's evaluation set holds (GT solves dominate its cost:
    ~1-2 s for 1000 2-D points or 100 digits on one core; for 30 MNIST images through a U-Net,
    ~30 s (about 260 NFE), once: explorer/gtcache.py keeps them on disk)."""
    return SIZES[kind(field)]


def describe(field, n: int | None = None) -> str:
    """One line naming the sample set, for captions: n, seed, held out."""
    n_all = size(field)
    n = n_all if n is None else n
    which = "the evaluation set" if n == n_all else f"the first {n} of the {n_all}-sample evaluation set"
    return (f"{which}: {n} noise samples of seed {EVAL_SEED}, held out from training (training runs use their "
            "own seed), the same on every page")
