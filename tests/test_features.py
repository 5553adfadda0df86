"""The shipped digits classifier and the digits Frechet distance."""
import importlib.util
from pathlib import Path

import pytest
import torch

from core import checkpoint
from core.data import digits
from core.features import CLASSIFIER_PATH, digits_fd, digits_features, load_classifier

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("train_digits_classifier", ROOT / "scripts" / "train_digits_classifier.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shipped_classifier_is_a_safe_checkpoint():
    _, header = checkpoint.load(CLASSIFIER_PATH, kind="features")
    assert "NOT Inception FID" in header["info"]["note"]
    with pytest.raises(checkpoint.CheckpointError, match="features"):
        checkpoint.load(CLASSIFIER_PATH, kind="model")


def test_classifies_held_out_digits():
    _, _, x_te, y_te = _script().split()
    net = load_classifier()
    with torch.no_grad():
        acc = (net(x_te).argmax(1) == y_te).float().mean().item()
    assert acc > 0.95


def test_features_shape_and_errors():
    x, _ = digits()
    f = digits_features(x[:10])
    assert f.shape == (10, 64) and f.dtype == torch.float64
    with pytest.raises(ValueError, match=r"\(10, 64\)"):
        digits_features(x[:10].reshape(10, 64))


def test_fd_real_vs_real_small_vs_corrupted():
    x, _ = digits()
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    a, b = x[perm[:800]], x[perm[800:1600]]
    g = torch.Generator().manual_seed(1)
    real = digits_fd(a, b)  # only the finite-sample bias (about 12 at 800 vs 800)
    noisy = digits_fd(a + 0.3 * torch.randn(a.shape, generator=g), b)
    blurred = digits_fd(torch.nn.functional.avg_pool2d(torch.nn.functional.pad(a, (1, 1, 1, 1), mode="replicate"), 3, 1), b)
    noise = digits_fd(torch.rand(b.shape, generator=g) * 2 - 1, b)
    assert real < 0.5 * noisy and 10 * real < blurred and 20 * real < noise
    assert digits_fd(a, a) == pytest.approx(0.0, abs=1e-6)
