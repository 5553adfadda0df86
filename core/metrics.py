"""Sample-quality metrics: per-sample error to GT and distances between sample sets.

Error to the GT sample (docs/MATH.md section 8), one value per sample:
    RMSE(x, y) = sqrt(mean_j (x_j - y_j)^2)  (mean over the D data dims)
    PSNR(x, y) = 10 log10(R^2 / MSE(x, y)),  R = the data range (2 for data in [-1, 1])
Distances between two sets of samples (lower is better, ~0 for the same distribution):
    frechet_distance   closed-form Frechet (2-Wasserstein) distance between the Gaussians fitted
                       to two sets of features (the FID formula; which features is up to the caller)
    sliced_wasserstein mean over random directions of the 1-D Wasserstein distance of projections
    energy_distance    2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely & Rizzo)
A solver's distance is best read next to the GT solver's distance to the same reference (the
floor set by the model and by the finite sample): `percent_of_gt` gives the papers' "% of GT".
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def _pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"expected a batch of shape (B, *D) with B >= 1, got {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)  # (B, D)


def mse(x: Tensor, y: Tensor) -> Tensor:
    """Per-sample mean squared error over the data dims: (B, *D), (B, *D) -> (B,)."""
    xf, yf = _pair(x, y)
    return ((xf - yf) ** 2).mean(dim=1)


def rmse(x: Tensor, y: Tensor) -> Tensor:
    """Per-sample RMSE, sqrt(mean over data dims of (x - y)^2): (B, *D), (B, *D) -> (B,)."""
    return mse(x, y).sqrt()


def psnr(x: Tensor, y: Tensor, data_range: float = 2.0) -> Tensor:
    """Per-sample PSNR in dB, 10 log10(R^2 / MSE): (B, *D), (B, *D) -> (B,).

    R = data_range (2 for data in [-1, 1]). A sample equal to its target gives +inf.
    """
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range!r}")
    return 10.0 * torch.log10(data_range**2 / mse(x, y))


def _features(name: str, a: Tensor) -> Tensor:
    a = torch.as_tensor(a)
    if a.dim() < 2:
        raise ValueError(f"{name} must be (N, F) or (N, *D), got shape {tuple(a.shape)}")
    a = a.reshape(a.shape[0], -1).to(torch.float64)
    if not torch.isfinite(a).all():
        raise ValueError(f"{name} has {int((~torch.isfinite(a)).sum())} non-finite value(s)")
    return a


def _sqrtm_psd(c: Tensor) -> Tensor:
    """Square root of a symmetric PSD matrix via its eigendecomposition (negative
    round-off eigenvalues clamped to 0)."""
    w, v = torch.linalg.eigh((c + c.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_from_moments(mu_a: Tensor, cov_a: Tensor, mu_b: Tensor, cov_b: Tensor) -> float:
    """Frechet distance between N(mu_a, cov_a) and N(mu_b, cov_b), in float64:
    |mu_a - mu_b|^2 + tr(cov_a) + tr(cov_b) - 2 tr((cov_a^1/2 cov_b cov_a^1/2)^1/2).

    The cross term is computed from symmetric matrices only (eigh twice), which is stable where
    scipy's sqrtm(cov_a @ cov_b) can return complex round-off.
    """
    mu_a, mu_b = (torch.as_tensor(m, dtype=torch.float64) for m in (mu_a, mu_b))
    cov_a, cov_b = (torch.as_tensor(c, dtype=torch.float64) for c in (cov_a, cov_b))
    root_a = _sqrtm_psd(cov_a)
    m = root_a @ cov_b @ root_a
    cross = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    d = ((mu_a - mu_b) ** 2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * cross
    return float(d.clamp(min=0))


def gaussian_moments(feats: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (F,) and unbiased covariance (F, F) of features (N, F), in float64."""
    f = _features("features", feats)
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 samples to fit a covariance, got {f.shape[0]}")
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (f.shape[0] - 1)


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N_a, F) and (N_b, F).

    This is the FID formula; it is FID only with Inception-v3 pool features on images. Biased
    upward for a finite sample (two samples of one distribution give a small positive value).
    """
    mu_a, cov_a = gaussian_moments(feats_a)
    mu_b, cov_b = gaussian_moments(feats_b)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature sets have different widths: {mu_a.numel()} and {mu_b.numel()}")
    return frechet_from_moments(mu_a, cov_a, mu_b, cov_b)


def random_directions(n_projections: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
    """n_projections unit vectors uniform on the sphere in R^dim: (P, dim), float64, on CPU."""
    if int(n_projections) != n_projections or n_projections < 1:
        raise ValueError(f"n_projections must be a positive integer, got {n_projections!r}")
    theta = torch.randn(int(n_projections), dim, generator=generator, dtype=torch.float64)
    return theta / theta.norm(dim=1, keepdim=True)


def _quantiles(proj: Tensor, n: int) -> Tensor:
    """Empirical quantile function of each column of proj (N, P) at n midpoints: (n, P)."""
    s = proj.sort(dim=0).values
    if s.shape[0] == n:
        return s
    q = (torch.arange(n, dtype=torch.float64, device=proj.device) + 0.5) / n
    return torch.quantile(s, q, dim=0, interpolation="linear")


def sliced_wasserstein(a: Tensor, b: Tensor, n_projections: int = 256, generator: torch.Generator | None = None,
                       p: int = 2) -> float:
    """Sliced p-Wasserstein distance between sample sets a (N_a, *D) and b (N_b, *D):
    (mean over random unit directions theta of W_p^p(theta.a, theta.b))^(1/p).

    With N_a == N_b the 1-D distances are exact (sorted samples); otherwise both are read at
    common quantile levels. Identical sets give exactly 0; b = a + m gives
    sqrt(mean_theta (theta.m)^2) -> |m| / sqrt(D) for many directions (p = 2).
    """
    a, b = _features("a", a), _features("b", b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b have different dimensions: {a.shape[1]} and {b.shape[1]}")
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p!r}")
    theta = random_directions(n_projections, a.shape[1], generator).to(a.device)  # (P, D)
    n = max(a.shape[0], b.shape[0])
    qa, qb = _quantiles(a @ theta.T, n), _quantiles(b @ theta.T, n)  # (n, P)
    w_pp = ((qa - qb).abs() ** p).mean(0)  # (P,) W_p^p per direction
    return float(w_pp.mean() ** (1.0 / p))


def _mean_pairwise_distance(a: Tensor, b: Tensor, chunk: int = 2048) -> Tensor:
    """mean over all pairs (i, j) of |a_i - b_j| without holding the whole (N_a, N_b) matrix."""
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for part in torch.split(a, chunk):
        total = total + torch.cdist(part, b).sum()
    return total / (a.shape[0] * b.shape[0])


def energy_distance(a: Tensor, b: Tensor) -> float:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| between the empirical distributions
    of a (N_a, *D) and b (N_b, *D) (V-statistic: >= 0, exactly 0 for identical sets).

    It is the squared distance of Szekely & Rizzo (not its square root); Euclidean norms over
    all D dims. For point masses at x and y it equals 2 |x - y|.
    """
    a, b = _features("a", a), _features("b", b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b have different dimensions: {a.shape[1]} and {b.shape[1]}")
    d = 2 * _mean_pairwise_distance(a, b) - _mean_pairwise_distance(a, a) - _mean_pairwise_distance(b, b)
    return float(d.clamp(min=0))


def percent_of_gt(value: float, gt_value: float) -> float:
    """A lower-is-better distance as a percentage of the GT solver's (the papers' "GT-FID / %"):
    100 = as good as the GT solver, 230 = 2.3x its distance."""
    if not gt_value > 0:
        return math.inf if value > 0 else 100.0
    return 100.0 * value / gt_value
