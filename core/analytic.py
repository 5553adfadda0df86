"""Velocity fields with closed-form marginal flows, for exact ground truth in tests and demos.

docs/MATH.md §1.3: Gaussian data gives a linear VF with an exact trajectory; a Gaussian
mixture gives a non-linear VF in closed form (softmax-weighted).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .field import VelocityField
from .paths import GaussianPath, _bcast


def gaussian_data_field(path: GaussianPath, mean: Tensor, c: float) -> VelocityField:
    """Marginal VF for data x1 ~ N(mean, c^2 I) on `path`; mean has the data shape.

    u_t(x) = alpha' m + (alpha alpha' c^2 + sigma sigma') / (alpha^2 c^2 + sigma^2) (x - alpha m).
    """
    mean = torch.as_tensor(mean)

    def u(t: Tensor, x: Tensor) -> Tensor:
        p = path(t.to(x.dtype))
        m = mean.to(x)
        a, da, s, ds = (_bcast(v, x) for v in (p.alpha, p.d_alpha, p.sigma, p.d_sigma))
        k = (a * da * c**2 + s * ds) / (a * a * c**2 + s * s)
        return da * m + k * (x - a * m)

    return VelocityField(u, tuple(mean.shape), path=path, data_range=2.0, model_id=f"gaussian-{path.name}")


def gaussian_data_solution(path: GaussianPath, mean: Tensor, c: float, x0: Tensor, t) -> Tensor:
    """Exact trajectory of `gaussian_data_field` from x0 (B, *D) at time t:
    x_t = alpha_t m + sqrt(alpha_t^2 c^2 + sigma_t^2) x0."""
    p = path(torch.as_tensor(t, dtype=x0.dtype))
    return p.alpha * mean.to(x0) + torch.sqrt(p.alpha**2 * c**2 + p.sigma**2) * x0


def mixture_field(path: GaussianPath, means: Tensor, c: float, weights: Tensor | None = None) -> VelocityField:
    """Marginal VF of data = sum_k w_k N(means[k], c^2 I) on `path` (non-linear, closed form).

    Given x_t, each component k is a Gaussian with var = alpha^2 c^2 + sigma^2 and
    E[x1 | x_t, k] = m_k + (alpha c^2 / var)(x - alpha m_k), E[x0 | x_t, k] = (sigma / var)(x - alpha m_k);
    the posterior over k is a softmax of the component log-likelihoods of x_t. Then
    u_t(x) = alpha' E[x1 | x] + sigma' E[x0 | x].
    means: (K, *D).
    """
    means = torch.as_tensor(means)
    K = means.shape[0]
    w = torch.full((K,), 1.0 / K) if weights is None else torch.as_tensor(weights)

    def u(t: Tensor, x: Tensor) -> Tensor:
        p = path(t.to(x.dtype))
        B = x.shape[0]
        xf = x.reshape(B, -1)  # (B, D)
        mu = means.to(x).reshape(K, -1)  # (K, D)
        a, da, s, ds = (v.reshape(-1, 1, 1) if v.dim() else v for v in (p.alpha, p.d_alpha, p.sigma, p.d_sigma))
        var = a * a * c**2 + s * s  # variance of x_t given k
        diff = xf[:, None, :] - a * mu[None]  # (B, K, D)
        logits = -0.5 * (diff**2).sum(-1, keepdim=True) / var + torch.log(w.to(x)).reshape(1, K, 1)
        post = torch.softmax(logits, dim=1)  # (B, K, 1)
        ex1 = (post * (mu[None] + (a * c**2 / var) * diff)).sum(1)  # E[x1 | x_t], (B, D)
        ex0 = (post * ((s / var) * diff)).sum(1)  # E[x0 | x_t], no division by sigma
        da1, ds1 = (v.reshape(-1, 1) if v.dim() else v for v in (p.d_alpha, p.d_sigma))
        out = da1 * ex1 + ds1 * ex0  # u = alpha' E[x1 | x] + sigma' E[x0 | x]
        return out.reshape(x.shape)

    return VelocityField(u, tuple(means.shape[1:]), path=path, data_range=2.0, model_id=f"mixture-{path.name}")
