"""Features of a small digits classifier, for a Frechet distance on the 8x8 digits.

This is the FID idea on data we have, NOT Inception FID: the features are the penultimate layer
(64 numbers) of a small CNN trained on scikit-learn's 8x8 digits by
scripts/train_digits_classifier.py and shipped as assets/digits_classifier.safetensors. Values
are comparable only with each other (same classifier, same sample counts), never with published
FID numbers. Call it "digits FD".
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from . import checkpoint
from .metrics import frechet_distance

CLASSIFIER_PATH = Path(__file__).resolve().parent.parent / "assets" / "digits_classifier.safetensors"
CHECKPOINT_KIND = "features"  # not "model": it is not a velocity field


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of the digits classifier."""

    channels: int = 32  # conv width (the second conv has 2x this)
    features: int = 64  # width of the penultimate layer = the feature dimension F
    num_classes: int = 10


class DigitsClassifier(nn.Module):
    """conv3x3 -> SiLU -> conv3x3 -> SiLU -> 2x2 avg-pool -> linear (F) -> SiLU -> linear (10).

    Input (B, 1, 8, 8) in [-1, 1]; `features(x)` returns the (B, F) penultimate activations.
    """

    def __init__(self, cfg: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.SiLU(),
            nn.AvgPool2d(2), nn.Flatten(),  # (B, 2c * 4 * 4)
            nn.Linear(2 * c * 16, cfg.features), nn.SiLU(),
        )
        self.head = nn.Linear(cfg.features, cfg.num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)  # (B, F)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, 10) logits


def save_classifier(net: DigitsClassifier, path: str | Path, info: dict) -> str:
    """Write the classifier as a safe checkpoint (kind "features"); returns the content hash."""
    tensors = {k: v.detach().cpu().float() for k, v in net.state_dict().items()}
    header = {"config": asdict(net.cfg), "info": info}
    return checkpoint.save(path, tensors, header, kind=CHECKPOINT_KIND)


_CACHE: dict[tuple[str, str], DigitsClassifier] = {}


def load_classifier(path: str | Path | None = None, device=None) -> DigitsClassifier:
    """Load (and cache) the shipped digits classifier in eval mode on `device`."""
    path = Path(path) if path is not None else CLASSIFIER_PATH
    key = (str(path), str(torch.device(device or "cpu")))
    if key not in _CACHE:
        if not path.exists():
            raise FileNotFoundError(f"digits classifier not found at {str(path)!r}; "
                                    "make it with `python scripts/train_digits_classifier.py`")
        tensors, header = checkpoint.load(path, kind=CHECKPOINT_KIND)
        net = DigitsClassifier(ClassifierConfig(**header["config"]))
        net.load_state_dict(tensors)
        net.info = header.get("info", {})
        _CACHE[key] = net.eval().to(key[1])
    return _CACHE[key]


@torch.no_grad()
def digits_features(x: Tensor, clamp: bool = True, batch_size: int = 2048, classifier: DigitsClassifier | None = None) -> Tensor:
    """Penultimate-layer features (B, F) of digit images x (B, 1, 8, 8) in [-1, 1], float64.

    clamp: clip x to [-1, 1] first, as images are clipped before display (FID clips too).
    Runs on x's device.
    """
    if tuple(x.shape[1:]) != (1, 8, 8):
        raise ValueError(f"digits features need images of shape (B, 1, 8, 8), got {tuple(x.shape)}")
    net = classifier or load_classifier(device=x.device)
    x = x.to(torch.float32)
    if clamp:
        x = x.clamp(-1.0, 1.0)
    return torch.cat([net.features(part) for part in torch.split(x, batch_size)]).to(torch.float64)


def digits_fd(samples: Tensor, reference: Tensor, clamp: bool = True) -> float:
    """Frechet distance between digits-classifier features of two image sets (B, 1, 8, 8).

    Not Inception FID (see the module docstring); a finite sample biases it upward, so compare
    values only at equal sample counts.
    """
    return frechet_distance(digits_features(samples, clamp), digits_features(reference, clamp))
