"""The generic fixed-grid sampler: one RK step run from a tableau, a loop over a time grid."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from .tableau import TABLEAUS, ButcherTableau


@dataclass
class StepInfo:
    """What a per-step callback receives: step index i, the step's start time t and end time
    t_next, the state x at t (shape (B, *D)), the velocity u at (t, x) when the method evaluates
    it (else None), and the state x_next at t_next."""

    i: int
    t: float
    t_next: float
    x: Tensor
    u: Optional[Tensor]
    x_next: Tensor


StepCallback = Callable[[StepInfo], None]


@dataclass
class SolveResult:
    """A sample x (B, *D), the NFE spent, and the times at which the states were produced."""

    x: Tensor
    nfe: int
    times: Tensor = field(default_factory=lambda: torch.empty(0))


def check_finite(name: str, x: Tensor) -> None:
    """Raise a clear error when a tensor that a user handed in is not finite."""
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).sum().item()
        raise ValueError(f"{name} has {bad} non-finite value(s) (NaN or inf)")


def get_tableau(method: str | ButcherTableau) -> ButcherTableau:
    if isinstance(method, ButcherTableau):
        return method
    if method not in TABLEAUS:
        raise ValueError(f"unknown Runge-Kutta method {method!r}; known: {sorted(TABLEAUS)}")
    return TABLEAUS[method]


def _t_like(t: float | Tensor, x: Tensor) -> Tensor:
    return torch.as_tensor(t, dtype=x.dtype, device=x.device)


def rk_step(u, t, h, x: Tensor, tableau: ButcherTableau) -> tuple[Tensor, Tensor]:
    """One explicit RK step of size h from (t, x). Returns (x_next, u at the first stage)."""
    k: list[Tensor] = []
    for a_row, c_j in zip(tableau.a, tableau.c):
        x_stage = x
        for a_jl, k_l in zip(a_row, k):
            if a_jl != 0.0:
                x_stage = x_stage + (h * a_jl) * k_l
        k.append(u(_t_like(t + c_j * h, x), x_stage))
    x_next = x
    for b_j, k_j in zip(tableau.b, k):
        if b_j != 0.0:
            x_next = x_next + (h * b_j) * k_j
    return x_next, k[0]


def uniform_grid(n_steps: int, t0: float = 0.0, t1: float = 1.0, dtype=torch.float64) -> Tensor:
    """n_steps + 1 equally spaced times from t0 to t1."""
    if int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"number of steps must be a positive integer, got {n_steps!r}")
    return torch.linspace(t0, t1, int(n_steps) + 1, dtype=dtype)


def check_grid(time_grid: Tensor) -> Tensor:
    time_grid = torch.as_tensor(time_grid, dtype=torch.float64).flatten()
    if time_grid.numel() < 2:
        raise ValueError(f"a time grid needs at least 2 points, got {time_grid.numel()}")
    check_finite("time grid", time_grid)
    if not (time_grid[1:] > time_grid[:-1]).all():
        raise ValueError(f"time grid must be strictly increasing, got {time_grid.tolist()}")
    return time_grid


def rk_sample(u, x0: Tensor, time_grid: Tensor, method: str | ButcherTableau = "midpoint",
              callback: Optional[StepCallback] = None) -> SolveResult:
    """Solve dx/dt = u(t, x) from x0 along `time_grid` with an explicit RK method.

    NFE = (len(time_grid) - 1) * stages.
    """
    tableau = get_tableau(method)
    grid = check_grid(time_grid)
    check_finite("x0", x0)
    x = x0
    ts = grid.tolist()
    for i, (t_cur, t_next) in enumerate(zip(ts[:-1], ts[1:])):  # 0, ..., N-1
        x_next, u_cur = rk_step(u, t_cur, t_next - t_cur, x, tableau)
        if callback is not None:
            callback(StepInfo(i, t_cur, t_next, x, u_cur, x_next))
        x = x_next
    return SolveResult(x, nfe=(len(ts) - 1) * tableau.stages, times=grid)
