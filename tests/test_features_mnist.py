"""The shipped MNIST classifier, its held-out images, the FD (not Inception) and legibility."""
import pytest
import torch

from core import checkpoint
from core.data import get_spec, mnist, sample_labeled
from core.features_mnist import CLASSIFIER_PATH, legibility, mnist_fd, mnist_features, predict, row_labels


def test_shipped_classifier_and_images_are_safe_checkpoints():
    _, header = checkpoint.load(CLASSIFIER_PATH, kind="features")
    assert "NOT Inception FID" in header["info"]["note"]
    assert header["info"]["test_accuracy"] > 0.95
    with pytest.raises(checkpoint.CheckpointError, match="features"):
        checkpoint.load(CLASSIFIER_PATH, kind="model")
    x, y = mnist()
    assert x.shape == (1000, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert torch.bincount(y).tolist() == [100] * 10  # 100 held out per class
    assert get_spec("mnist").shape == (1, 28, 28)


def test_classifies_held_out_images():
    x, y = mnist()  # never seen by the classifier in training
    assert (predict(x) == y).double().mean() > 0.95
    assert legibility(x, y) > 0.95
    assert legibility(x, (y + 1) % 10) < 0.05  # the wrong labels: the score must fall


def test_features_shape_and_errors():
    x, y = mnist()
    f = mnist_features(x[:10])
    assert f.shape == (10, 64) and f.dtype == torch.float64
    with pytest.raises(ValueError, match=r"\(10, 784\)"):
        mnist_features(x[:10].reshape(10, 784))
    with pytest.raises(ValueError, match="one label per sample"):
        legibility(x[:10], y[:9])


def test_fd_real_vs_real_small_vs_corrupted():
    x, _ = mnist()
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    a, b = x[perm[:500]], x[perm[500:]]
    g = torch.Generator().manual_seed(1)
    real = mnist_fd(a, b)  # only the finite-sample bias
    noisy = mnist_fd(a + 0.5 * torch.randn(a.shape, generator=g), b)
    blurred = mnist_fd(torch.nn.functional.avg_pool2d(torch.nn.functional.pad(a, (2, 2, 2, 2), mode="replicate"), 5, 1), b)
    noise = mnist_fd(torch.rand(b.shape, generator=g) * 2 - 1, b)
    assert real < 0.5 * noisy and 3 * real < blurred and 20 * real < noise
    assert mnist_fd(a, a) == pytest.approx(0.0, abs=1e-6)


def test_sampling_and_row_labels():
    x, y = sample_labeled("mnist", 7, torch.Generator().manual_seed(0))
    assert x.shape == (7, 1, 28, 28) and y.shape == (7,)

    class Field:
        labels = torch.arange(10)
        num_classes = 10

    assert row_labels(Field(), 12).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    Field.num_classes = 0
    assert row_labels(Field(), 3) is None
