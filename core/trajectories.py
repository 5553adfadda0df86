"""Sampling paths for inspection: the states a solver visits, the GT path at the same times, the
per-step error between them, and the Gaussian path a scale-time map is equivalent to.

Used by the app's Paths page and by anyone who wants to look inside a solve (k-diffusion's
callback idea: the solvers stay untouched, a per-step callback records what they do).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .metrics import rmse
from .paths import GaussianPath
from .solvers.base import StepInfo
from .solvers.gt import gt_solve


@dataclass
class Trajectory:
    """States of a batch along a solve: times (K,) float64 and xs (K, B, *D); nfe spent."""

    times: Tensor
    xs: Tensor
    nfe: int


@torch.no_grad()
def solver_trajectory(solver, field, x0: Tensor, nfe: int | None = None) -> Trajectory:
    """Run `solver.solve(field, x0, nfe, callback)` and record the state at every step point.

    The solver reports each step through its callback as StepInfo(i, t, t_next, x, u, x_next);
    the trajectory is x0 followed by every x_next, at times t_0 followed by every t_next.
    """
    steps: list[StepInfo] = []
    res = solver.solve(field, x0, nfe, callback=steps.append)
    if not steps:  # a solver that reports no steps: only its end points are known
        return Trajectory(torch.tensor([0.0, 1.0], dtype=torch.float64), torch.stack([x0, res.x]), res.nfe)
    times = torch.tensor([float(steps[0].t)] + [float(s.t_next) for s in steps], dtype=torch.float64)
    xs = torch.stack([steps[0].x.detach()] + [s.x_next.detach() for s in steps])  # (K, B, *D)
    return Trajectory(times, xs, res.nfe)


@torch.no_grad()
def gt_trajectory(field, x0: Tensor, times, atol: float = 1e-5, rtol: float = 1e-5) -> Trajectory:
    """The ground-truth path (adaptive dopri5) from x0 at t = 0, evaluated at `times` (any
    order, repeats allowed, all in [0, 1]). xs: (len(times), B, *D)."""
    times = torch.as_tensor(times, dtype=torch.float64).flatten()
    if times.numel() == 0 or times.min() < 0 or times.max() > 1:
        raise ValueError(f"GT times must lie in [0, 1], got {times.tolist()}")
    grid, inverse = torch.unique(torch.cat([times.new_zeros(1), times]), sorted=True, return_inverse=True)
    if grid.numel() == 1:  # only t = 0 asked for
        return Trajectory(times, x0[None].expand(times.numel(), *x0.shape).clone(), 0)
    res = gt_solve(field, x0, atol=atol, rtol=rtol, t_eval=grid.to(x0.dtype))
    return Trajectory(times, res.x[inverse[1:]], res.nfe)


def step_errors(traj: Trajectory, gt: Trajectory) -> Tensor:
    """Mean over the batch of the per-sample RMSE between the two paths at each time: (K,)."""
    if traj.xs.shape != gt.xs.shape:
        raise ValueError(f"paths have different shapes {tuple(traj.xs.shape)} and {tuple(gt.xs.shape)}")
    return torch.stack([rmse(a, b.to(a.dtype)).mean() for a, b in zip(traj.xs, gt.xs)])


def equivalent_path(path: GaussianPath, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """The Gaussian path (alpha_bar_r, sigma_bar_r) whose sampling paths are x_bar(r) = s_r x(t_r)
    for a model on `path` (Bespoke Theorem 2.3 read backwards):
    alpha_bar_r = s_r alpha_{t_r}, sigma_bar_r = s_r sigma_{t_r}. t, s: values of the ST map at
    some r (same shape); returns two tensors of that shape."""
    c = path(torch.as_tensor(t, dtype=torch.float64))
    s = torch.as_tensor(s, dtype=torch.float64)
    return s * c.alpha, s * c.sigma
