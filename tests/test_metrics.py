"""Metrics on cases with known answers."""
import math

import numpy as np
import pytest
import torch

from core import metrics
from core.analytic import gaussian_data_field, gaussian_data_solution
from core.paths import get_path
from core.solvers.base import rk_sample, uniform_grid


def test_rmse_psnr_per_sample_values():
    x = torch.zeros(3, 2, 2)
    y = torch.stack([torch.full((2, 2), 0.5), torch.full((2, 2), 1.0), torch.tensor([[2.0, 0.0], [0.0, 0.0]])])
    r = metrics.rmse(x, y)
    assert r.shape == (3,)
    torch.testing.assert_close(r, torch.tensor([0.5, 1.0, 1.0]))  # sqrt(mean): 4/4 = 1 for the last
    p = metrics.psnr(x, y, data_range=2.0)
    # 10 log10(4 / MSE): MSE = 0.25, 1, 1
    torch.testing.assert_close(p, torch.tensor([10 * math.log10(16.0), 10 * math.log10(4.0), 10 * math.log10(4.0)]))
    assert metrics.psnr(x, x).isinf().all()


def test_rmse_rejects_mismatched_shapes_and_bad_range():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        metrics.rmse(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="-1"):
        metrics.psnr(torch.zeros(2, 3), torch.ones(2, 3), data_range=-1)


def test_frechet_identical_sets_is_zero():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(500, 6, generator=g) @ torch.randn(6, 6, generator=g)
    assert metrics.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-8)


def test_frechet_from_moments_closed_form_diagonal():
    # Diagonal covariances commute: FD = |dm|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    mu_a, mu_b = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, -1.0])
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    expected = 1 + 0 + 9 + (1 - 3) ** 2 + (2 - 1) ** 2 + 0
    assert metrics.frechet_from_moments(mu_a, torch.diag(a), mu_b, torch.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_frechet_from_moments_non_commuting_matches_definition():
    # Against the definition tr(A + B - 2 (A^1/2 B A^1/2)^1/2) with a rotated B (non-commuting).
    g = torch.Generator().manual_seed(1)
    la, lb = torch.randn(4, 4, generator=g, dtype=torch.float64), torch.randn(4, 4, generator=g, dtype=torch.float64)
    A, B = la @ la.T + 0.1 * torch.eye(4, dtype=torch.float64), lb @ lb.T
    # 1-D reference: for scalars FD = (sqrt(a) - sqrt(b))^2; in general the cross term equals
    # tr((A B)^1/2) (the eigenvalues of A B are those of A^1/2 B A^1/2), computed here with scipy's
    # general matrix square root, independently of the code's symmetric route.
    import scipy.linalg
    cross = np.trace(scipy.linalg.sqrtm(A.numpy() @ B.numpy())).real
    expected = float(torch.trace(A) + torch.trace(B)) - 2 * cross
    zero = torch.zeros(4, dtype=torch.float64)
    assert metrics.frechet_from_moments(zero, A, zero, B) == pytest.approx(expected, rel=1e-10)


def _exact_moments(z):
    """Rescale samples (N, F) to have exactly zero mean and identity (unbiased) covariance."""
    z = z - z.mean(0)
    cov = z.T @ z / (z.shape[0] - 1)
    return z @ torch.linalg.inv(torch.linalg.cholesky(cov)).T


def test_frechet_shifted_gaussians_from_samples():
    # N(0, diag(a)) vs N(m, diag(b)) from samples: exact when the samples' moments are exact,
    # within sampling error when they are not.
    g = torch.Generator().manual_seed(2)
    n, m = 20000, torch.tensor([1.0, -0.5, 0.0], dtype=torch.float64)
    sa, sb = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64), torch.tensor([1.0, 1.0, 1.5], dtype=torch.float64)
    expected = float((m**2).sum() + ((sa - sb) ** 2).sum())  # 3.25
    za, zb = (torch.randn(n, 3, generator=g, dtype=torch.float64) for _ in range(2))
    assert metrics.frechet_distance(_exact_moments(za) * sa, m + _exact_moments(zb) * sb) == pytest.approx(expected, rel=1e-9)
    assert metrics.frechet_distance(za * sa, m + zb * sb) == pytest.approx(expected, abs=0.2)


def test_sliced_wasserstein_identical_and_shifted():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(400, 2, generator=g)
    assert metrics.sliced_wasserstein(a, a, generator=torch.Generator().manual_seed(0)) == 0.0
    # b = a + m: every 1-D projection is shifted by theta.m, so SW2 = sqrt(mean (theta.m)^2),
    # which tends to |m| / sqrt(D).
    shift = torch.tensor([3.0, 4.0])
    sw = metrics.sliced_wasserstein(a, a + shift, n_projections=4000, generator=torch.Generator().manual_seed(0))
    assert sw == pytest.approx(5.0 / math.sqrt(2), rel=0.03)


def test_sliced_wasserstein_exact_for_given_directions():
    # Same directions drawn twice: the value must equal the direct formula.
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(50, 3, generator=g), torch.randn(50, 3, generator=g) + 1
    theta = metrics.random_directions(16, 3, torch.Generator().manual_seed(7))
    pa, pb = (a.double() @ theta.T).sort(0).values, (b.double() @ theta.T).sort(0).values
    expected = float(((pa - pb) ** 2).mean().sqrt())
    got = metrics.sliced_wasserstein(a, b, n_projections=16, generator=torch.Generator().manual_seed(7))
    assert got == pytest.approx(expected, rel=1e-12)


def test_sliced_wasserstein_unequal_sizes():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(3000, 2, generator=g), torch.randn(1000, 2, generator=g)
    same = metrics.sliced_wasserstein(a, b, generator=torch.Generator().manual_seed(0))
    far = metrics.sliced_wasserstein(a, b + 2.0, generator=torch.Generator().manual_seed(0))
    assert same < 0.1 < 1.5 < far


def test_energy_distance_known_answers():
    a = torch.randn(300, 2, generator=torch.Generator().manual_seed(6))
    assert metrics.energy_distance(a, a) == pytest.approx(0.0, abs=1e-10)
    # Point masses: 2 |x - y|.
    assert metrics.energy_distance(torch.zeros(1, 2), torch.tensor([[3.0, 4.0]])) == pytest.approx(10.0)
    # 1-D N(0, 1) vs N(mu, 1): 2 E|X - Y| - 4 / sqrt(pi), X - Y ~ N(-mu, 2).
    mu, s = 1.0, math.sqrt(2.0)
    e_abs = s * math.sqrt(2 / math.pi) * math.exp(-mu**2 / (2 * s**2)) + mu * math.erf(mu / (s * math.sqrt(2)))
    expected = 2 * e_abs - 4 / math.sqrt(math.pi)
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(4000, 1, generator=g), torch.randn(4000, 1, generator=g) + mu
    assert metrics.energy_distance(x, y) == pytest.approx(expected, rel=0.08)


def test_distances_reject_bad_input():
    with pytest.raises(ValueError, match="different dimensions"):
        metrics.energy_distance(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="non-finite"):
        metrics.sliced_wasserstein(torch.full((3, 2), float("nan")), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="0"):
        metrics.sliced_wasserstein(torch.zeros(3, 2), torch.zeros(3, 2), n_projections=0)


def test_bad_input_messages_name_the_argument_and_value():
    z = torch.zeros(4, 2)
    nan = torch.zeros(4, 2)
    nan[1, 0] = float("nan")
    for fn in (metrics.sliced_wasserstein, metrics.energy_distance):
        with pytest.raises(ValueError, match=r"^a has 1 non-finite value\(s\)$"):
            fn(nan, z)
        with pytest.raises(ValueError, match=r"^b has 1 non-finite value\(s\)$"):
            fn(z, nan)
        with pytest.raises(ValueError, match=r"^a must be \(N, F\) or \(N, \*D\), got shape \(4,\)$"):
            fn(torch.zeros(4), z)
    with pytest.raises(ValueError, match=r"^p must be >= 1, got 0.5$"):
        metrics.sliced_wasserstein(z, z, p=0.5)
    with pytest.raises(ValueError, match=r"^need at least 2 samples to fit a covariance, got 1$"):
        metrics.gaussian_moments(torch.zeros(1, 5))
    with pytest.raises(ValueError, match=r"B >= 1, got \(0, 3\)"):
        metrics.mse(torch.zeros(0, 3), torch.zeros(0, 3))
    with pytest.raises(ValueError, match="data_range must be positive, got 0"):
        metrics.psnr(z, z + 1, data_range=0)


def test_percent_of_gt_values_and_a_zero_floor():
    assert metrics.percent_of_gt(3.0, 2.0) == 150.0
    assert metrics.percent_of_gt(0.5, 0.0) == math.inf  # any distance above a zero floor
    assert metrics.percent_of_gt(2.0, 0.0) == math.inf
    assert metrics.percent_of_gt(0.0, 0.0) == 100.0  # as good as the GT solver


def test_broken_sampler_scores_worse_than_gt():
    # Gaussian data N(m, c^2 I) on FM-OT: exact samples are the GT; a 1-step Euler sampler is
    # broken (it lands at x0 + u_0(x0), with the wrong spread); every distance must say so.
    path = get_path("fm-ot")
    mean, c = torch.tensor([1.0, -0.5], dtype=torch.float64), 0.3
    u = gaussian_data_field(path, mean, c)
    g = torch.Generator().manual_seed(8)
    x0 = torch.randn(2000, 2, generator=g, dtype=torch.float64)
    gt = gaussian_data_solution(path, mean, c, x0, 1.0)
    broken = rk_sample(u, x0, uniform_grid(1), "euler").x
    good = rk_sample(u, x0, uniform_grid(8), "midpoint").x
    ref = mean + c * torch.randn(2000, 2, generator=g, dtype=torch.float64)  # fresh true samples
    for dist in (lambda p, q: metrics.sliced_wasserstein(p, q, generator=torch.Generator().manual_seed(0)),
                 metrics.energy_distance, metrics.frechet_distance):
        d_gt, d_good, d_broken = dist(gt, ref), dist(good, ref), dist(broken, ref)
        assert d_gt < d_broken and d_good < d_broken
        assert metrics.percent_of_gt(d_broken, d_gt) > 100.0
    assert metrics.rmse(broken, gt).mean() > 10 * metrics.rmse(good, gt).mean()


def test_frechet_from_moments_computes_in_float64_from_float32_inputs():
    """float32 moments (what a float32 feature net gives) are promoted before any arithmetic:
    the mean term equals its float64 value to rounding, not to float32's 1e-7."""
    from core.metrics import frechet_from_moments
    mu_a = torch.randn(200, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    mu_b = torch.zeros(200, dtype=torch.float32)
    eye = torch.eye(200, dtype=torch.float32)
    want = float((mu_a.double() ** 2).sum())
    assert frechet_from_moments(mu_a, eye, mu_b, eye) == pytest.approx(want, rel=1e-12)
