"""Training objectives of learned solvers. Every loss returns per-sample values (B,).

Bespoke (docs/MATH.md §3.3): the RMSE-bound loss (eqs. 24-26)
    L_RMSE-B = E_x0 sum_{i=1}^{n} M_i d_i,  d_i = || x(t_i) - step(t_{i-1}, x(t_{i-1})) ||,
    M_i = prod_{j=i}^{n-1} L_j (a REVERSE cumulative product), M_n = 1,
with GT states read from a GT path pool and the stop-gradient trick of eq. 27 so that the
gradient reaches the learned times. Ablations: "local" (sum of d_i, no weights) and
"final-rmse" (RMSE of the full solve, back-propagated through all steps, eq. 6).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import metrics
from .distributed.sharding import local_rows
from .field import aligned_batch, label_period, round_to_period
from .solvers.gt import GTPool

BESPOKE_LOSSES = ("rmse-bound", "local", "final-rmse")


def rms(x: Tensor, batch_dims: int) -> Tensor:
    """sqrt(mean of x^2 over all but the first `batch_dims` dims).

    The mean is clamped at 1e-30 before the root: d sqrt(m)/dm is infinite at m = 0 (an exactly
    zero local error happens, e.g. on samples whose velocity is constant in float32), and
    0 * inf = NaN would poison the whole gradient. Below the clamp the gradient is 0."""
    return torch.sqrt(x.pow(2).flatten(batch_dims).mean(-1).clamp_min(1e-30))


def psnr_from_mse(mse: Tensor, data_range: float) -> Tensor:
    """Per-sample PSNR from per-sample MSE; MSE clamped at 1e-20 so a loss never sees +inf."""
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-20))


def validation_summary(mse: Tensor, data_range: float) -> dict[str, float]:
    """{"rmse", "psnr"}: means over samples of the per-sample values, from per-sample MSE (B,)."""
    return {"rmse": mse.sqrt().mean().item(), "psnr": psnr_from_mse(mse, data_range).mean().item()}


def reverse_cumprod_weights(L: Tensor) -> Tensor:
    """Weights of the local errors: w_k = prod_{j=k+1}^{n-1} L_j for steps k = 0..n-1 (0-based),
    i.e. M_i of eq. 26 with i = k + 1; w_{n-1} = 1."""
    ones = L.new_ones(1)
    # prod over j > k: reverse cumprod of L shifted by one.
    rev = torch.flip(torch.cumprod(torch.flip(L[1:], [0]), 0), [0])  # rev[k] = prod_{j>=k+1} L_j
    return torch.cat([rev, ones])


def gt_states_with_time_grad(pool: GTPool, t: Tensor, idx) -> Tensor:
    """x(t_i) on GT paths with d/dt_i = the GT velocity (eq. 27):
    x_aux(t) = x(sg[t]) + u(sg[t]) (t - sg[t]). t: (N,) -> (N, B, *D)."""
    t_sg = t.detach()
    x, dx = pool.at(t_sg, idx)
    dt = (t - t_sg).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    return x + dx * dt


class BespokeObjective:
    """Loss and validation of a Bespoke solver against GT paths from a pool."""

    metric, mode = "rmse", "min"
    rows: Optional[tuple[int, int]] = None  # (rank, world): compute only this rank's rows (core.distributed)

    def __init__(self, field, train: GTPool, val: GTPool, lipschitz: float = 1.0,
                 loss: str = "rmse-bound", batch_size: int = 256):
        if loss not in BESPOKE_LOSSES:
            raise ValueError(f"unknown Bespoke loss {loss!r}; known: {BESPOKE_LOSSES}")
        if not lipschitz >= 0:
            raise ValueError(f"the Lipschitz constant L_tau must be >= 0, got {lipschitz!r}")
        self.field, self.train, self.val = field, train, val
        self.lipschitz, self.loss_name, self.batch_size = float(lipschitz), loss, int(batch_size)

    def loss(self, solver, generator: Optional[torch.Generator] = None) -> Tensor:
        period = label_period(self.field)
        B = min(round_to_period(self.batch_size, period), self.train.size)
        idx = aligned_batch(self.train.size, B, period, generator).to(self.train.xs.device)
        if self.rows is not None:
            idx = local_rows(idx, *self.rows, period)
        if self.loss_name == "final-rmse":
            x0, x1 = self.train.xs[0, idx], self.train.xs[-1, idx]
            return rms(solver.solve(self.field, x0).x - x1, 1)
        p = solver.decode()
        x = gt_states_with_time_grad(self.train, p["time_grid"], idx)  # (n+1, B, *D)
        x_pred = solver.steps(self.field, x[:-1], solver.step_coefficients(p))  # (n, B, *D)
        d = rms(x_pred - x[1:], 2)  # (n, B) local errors, not squared
        if self.loss_name == "local":
            return d.sum(0)
        w = reverse_cumprod_weights(solver.lipschitz(self.lipschitz, p)).to(d.dtype)
        return (w[:, None] * d).sum(0)

    @torch.no_grad()
    def validate(self, solver) -> dict[str, float]:
        x = solver.solve(self.field, self.val.x0).x
        return validation_summary(metrics.mse(x, self.val.x1), self.field.data_range)
