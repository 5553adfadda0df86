"""Ground truth: adaptive dopri5 through torchdiffeq, and a reusable pool of GT paths.

The pool (docs/MATH.md §7.2, [choice, measured]) solves many x0 once on a dense grid, stores
x and u there, and reads x(t) at any t by cubic Hermite interpolation, so learned-solver
training does not re-solve the ODE every iteration.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from ..field import label_period, round_to_period
from ..limits import MAX_GT_STEPS
from .base import SolveResult, check_finite


class GTSolveError(ValueError):
    """The adaptive GT solve failed (step size underflow, step budget spent, non-finite states):
    the field is not usable. One readable line."""


class _Counted:
    """Wrap u(t, x) for torchdiffeq and count its evaluations (torchdiffeq calls f(t, y))."""

    def __init__(self, u):
        self.u, self.nfe = u, 0

    def __call__(self, t: Tensor, x: Tensor) -> Tensor:
        self.nfe += 1
        return self.u(t.to(x.dtype), x)


@torch.no_grad()
def gt_solve(u, x0: Tensor, atol: float = 1e-5, rtol: float = 1e-5, t_eval: Tensor | None = None,
             method: str = "dopri5", dtype: torch.dtype | None = None) -> SolveResult:
    """Adaptive solve from t = 0 to t = 1. Returns the final sample (or, with t_eval, the
    states at t_eval stacked as (T, B, *D) in `x`) and the NFE actually spent.

    dtype=torch.float64 runs the solve in double precision (u must accept float64 input).
    """
    if not (atol > 0 and rtol > 0):
        raise ValueError(f"tolerances must be positive, got atol={atol!r}, rtol={rtol!r}")
    check_finite("x0", x0)
    x0 = x0.to(dtype) if dtype is not None else x0
    times = torch.tensor([0.0, 1.0]) if t_eval is None else torch.as_tensor(t_eval).flatten()
    times = times.to(device=x0.device, dtype=x0.dtype)
    f = _Counted(u)
    from torchdiffeq import odeint  # here, not at import: it pulls in scipy (~1 s off the app's cold start)

    options = {"max_num_steps": MAX_GT_STEPS} if method in ("dopri5", "dopri8", "bosh3", "adaptive_heun") else None
    try:
        xs = odeint(f, x0, times, atol=atol, rtol=rtol, method=method, options=options)  # (T, B, *D)
    except AssertionError as e:  # torchdiffeq's "underflow in dt", "max_num_steps exceeded"
        raise GTSolveError(f"the ground-truth solve ({method}) failed after {f.nfe} evaluations: {e}; the "
                           f"model's velocity is not finite or far too large along the path") from None
    if not torch.isfinite(xs).all():
        raise GTSolveError(f"the ground-truth solve ({method}) gave non-finite samples after {f.nfe} evaluations; "
                           f"the model's velocity is not finite along the path")
    return SolveResult(xs[-1] if t_eval is None else xs, nfe=f.nfe, times=times.cpu().double())


def hermite(t: Tensor, grid: Tensor, xs: Tensor, us: Tensor) -> tuple[Tensor, Tensor]:
    """Cubic Hermite interpolation of a path known at `grid` (K,) with states xs and
    derivatives us, both (K, B, *D). t: (N,) times in [grid[0], grid[-1]].
    Returns x(t) and dx/dt(t), each (N, B, *D)."""
    k = torch.searchsorted(grid, t.detach().to(grid.dtype).contiguous(), right=True) - 1
    k = k.clamp(0, grid.numel() - 2)
    t0, t1 = grid[k], grid[k + 1]
    dtk = (t1 - t0).to(xs.dtype)
    tau = ((t.to(xs.dtype) - t0.to(xs.dtype)) / dtk)
    shape = (-1,) + (1,) * (xs.dim() - 1)
    tau, dtk = tau.reshape(shape), dtk.reshape(shape)
    x0, x1, u0, u1 = xs[k], xs[k + 1], us[k], us[k + 1]
    tau2, tau3 = tau * tau, tau * tau * tau
    h00, h10 = 2 * tau3 - 3 * tau2 + 1, tau3 - 2 * tau2 + tau
    h01, h11 = -2 * tau3 + 3 * tau2, tau3 - tau2
    x = h00 * x0 + h10 * dtk * u0 + h01 * x1 + h11 * dtk * u1
    d00, d10 = (6 * tau2 - 6 * tau) / dtk, 3 * tau2 - 4 * tau + 1
    d01, d11 = (-6 * tau2 + 6 * tau) / dtk, 3 * tau2 - 2 * tau
    dx = d00 * x0 + d10 * u0 + d01 * x1 + d11 * u1
    return x, dx


@dataclass
class GTPool:
    """GT paths of many noise samples on a dense grid.

    grid: (K,), xs and us: (K, P, *D) (states and velocities), nfe: what building it cost.
    """

    grid: Tensor
    xs: Tensor
    us: Tensor
    nfe: int

    @classmethod
    @torch.no_grad()
    def build(cls, u, x0: Tensor, n_grid: int = 65, atol: float = 1e-5, rtol: float = 1e-5,
              batch_size: int = 4096, dtype: torch.dtype | None = None) -> "GTPool":
        """Solve every x0 (P, *D) once with dopri5, record x and u on `n_grid` times.

        The grid is uniform in t; the Hermite interpolant is O(dt^4) accurate between nodes.
        """
        if n_grid < 2:
            raise ValueError(f"n_grid must be >= 2, got {n_grid}")
        grid = torch.linspace(0.0, 1.0, n_grid, dtype=torch.float64)
        xs_all, us_all, nfe = [], [], 0
        period = label_period(u)  # keep conditional samples at their label residue
        if x0.shape[0] % period:
            raise ValueError(f"a conditional model cycles {period} labels over rows; the pool size {x0.shape[0]} "
                             f"must be a multiple of {period}")
        for chunk in torch.split(x0, round_to_period(batch_size, period)):
            res = gt_solve(u, chunk, atol=atol, rtol=rtol, t_eval=grid, dtype=dtype)
            xs = res.x  # (K, b, *D)
            # u at the grid, one time at a time: a batch of b rows, as in the solve (one call on all
            # K * b rows held a U-Net's activations for 65x the batch: 22 GB for 250 MNIST paths)
            tk = grid.to(xs.dtype).to(xs.device)
            with torch.no_grad():
                us = torch.stack([u(tk[k].expand(chunk.shape[0]), xs[k]) for k in range(xs.shape[0])])
            xs_all.append(xs)
            us_all.append(us)
            nfe += res.nfe + n_grid
        return cls(grid.to(x0.device), torch.cat(xs_all, 1), torch.cat(us_all, 1), nfe)

    @property
    def size(self) -> int:
        return self.xs.shape[1]

    @property
    def x0(self) -> Tensor:
        return self.xs[0]

    @property
    def x1(self) -> Tensor:
        return self.xs[-1]

    def subset(self, idx) -> "GTPool":
        return GTPool(self.grid, self.xs[:, idx], self.us[:, idx], self.nfe)

    def split(self, n_val: int) -> tuple["GTPool", "GTPool"]:
        """(train, validation) pools; the last n_val paths are held out."""
        if not 0 < n_val < self.size:
            raise ValueError(f"validation size must be in 1..{self.size - 1}, got {n_val}")
        return self.subset(slice(0, self.size - n_val)), self.subset(slice(self.size - n_val, None))

    def at(self, t: Tensor, idx: Tensor | slice | None = None) -> tuple[Tensor, Tensor]:
        """x(t) and dx/dt(t) for times t (N,) on the paths idx: each (N, B, *D)."""
        xs = self.xs if idx is None else self.xs[:, idx]
        us = self.us if idx is None else self.us[:, idx]
        return hermite(t.to(self.grid.device), self.grid, xs, us)

    def to(self, device=None, dtype=None) -> "GTPool":
        return GTPool(self.grid.to(device), self.xs.to(device, dtype), self.us.to(device, dtype), self.nfe)
