import math

import pytest
import torch

from core.data import (DATASETS, GAUSSIANS_MEANS, GAUSSIANS_STD, digits, get_spec, sample_data,
                       sample_labeled)

TWO_D = [n for n, s in DATASETS.items() if s.shape == (2,)]


def g(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_shapes_dtype_and_seeding(name):
    spec = get_spec(name)
    x = sample_data(name, 500, g(0))
    assert x.shape == (500, *spec.shape) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert torch.equal(x, sample_data(name, 500, g(0)))
    assert not torch.equal(x, sample_data(name, 500, g(1)))


@pytest.mark.parametrize("name", TWO_D)
def test_2d_sets_live_in_their_data_range(name):
    x = sample_data(name, 20000, g())
    half = get_spec(name).data_range / 2
    assert (x.abs() <= half + 0.3).all()  # Gaussian noise may poke slightly out
    assert (x.abs() <= half).float().mean() > 0.99


def test_checkerboard_is_uniform_on_the_dark_cells():
    x = sample_data("checkerboard", 40000, g())
    assert (x.abs() <= 2).all()
    ix, iy = torch.floor(x[:, 0] + 2).long(), torch.floor(x[:, 1] + 2).long()
    assert ((ix + iy) % 2 == 0).all()  # never on a light cell
    counts = torch.bincount(ix * 4 + iy, minlength=16).reshape(4, 4)
    dark = counts[(torch.arange(4)[:, None] + torch.arange(4)[None]) % 2 == 0]
    assert dark.numel() == 8 and (dark - 5000).abs().max() < 300  # 8 cells, equal mass


def test_gaussians_match_the_analytic_mixture():
    x = sample_data("gaussians", 40000, g())
    k = torch.cdist(x, GAUSSIANS_MEANS).argmin(1)
    resid = x - GAUSSIANS_MEANS[k]
    assert torch.bincount(k, minlength=8).min() > 4500
    assert abs(resid.std().item() - GAUSSIANS_STD) < 0.005


def test_rings_radii():
    r = sample_data("rings", 30000, g()).norm(dim=1)
    inner = r < 1.2
    assert abs(inner.float().mean().item() - 1 / 3) < 0.02
    assert abs(r[inner].mean().item() - 0.8) < 0.01 and abs(r[~inner].mean().item() - 1.6) < 0.01


def test_digits_scaled_to_minus_one_one_with_labels():
    x, y = digits()
    assert x.shape == (1797, 1, 8, 8) and y.shape == (1797,)
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert set(y.tolist()) == set(range(10))
    xs, ys = sample_labeled("digits", 64, g())
    assert xs.shape == (64, 1, 8, 8) and ys.shape == (64,)
    # Each drawn image is a real digit with its own label.
    match = (xs.reshape(64, 1, -1) == x.reshape(1, 1797, -1)).all(-1)  # (64, 1797)
    assert match.any(1).all()
    assert all(ys[i] in y[match[i]] for i in range(64))
    assert sample_labeled("moons", 8, g())[1] is None


def test_unknown_names_and_bad_sizes():
    with pytest.raises(ValueError, match="unknown data set 'nope'"):
        sample_data("nope", 3)
    with pytest.raises(ValueError, match="non-negative integer"):
        sample_data("moons", -1)
    assert math.isclose(get_spec("digits").data_range, 2.0)
