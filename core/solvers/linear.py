"""Linear schemes: every solver here (RK on a grid, DDIM, DPM-Solver++(2M), EDM, Bespoke, BNS)
in ONE form (docs/MATH.md §4.3).

A linear scheme with m evaluations holds times t_0 <= ... <= t_{m-1} at which u is evaluated,
a final time t_m, and the reduced coefficients of each state in the basis (x0, u_0, ..., u_{m-1}):
    x_k = A_k x0 + sum_{j<k} B_kj u_j,    u_j = u(t_j, x_j),    k = 0..m,
x_m being the sample. A solver whose steps are x_{k+1} = alpha_k x_k + sum_{j<=k} beta_kj u_j
(or any linear combination of earlier states and velocities) is built by running its step rule
on coefficient vectors (`Lin`); then A_{k+1} = alpha_k A_k, B_{k+1} = alpha_k B_k + beta_k.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .base import SolveResult, StepCallback, StepInfo, check_finite, check_grid, get_tableau
from .tableau import ButcherTableau


@dataclass(frozen=True)
class LinearScheme:
    """t: (m+1,) evaluation times t_0..t_{m-1} (non-decreasing) and the final time t_m;
    A: (m+1,) and B: (m+1, m) strictly lower-triangular, x_k = A_k x0 + sum_j B_kj u_j.
    NFE = m. `name` says which solver it came from."""

    name: str
    t: Tensor
    A: Tensor
    B: Tensor

    def __post_init__(self):
        m = self.t.numel() - 1
        if m < 1:
            raise ValueError(f"a linear scheme needs at least one evaluation, got times {self.t.tolist()}")
        if self.A.shape != (m + 1,) or self.B.shape != (m + 1, m):
            raise ValueError(f"{self.name}: A must be ({m + 1},) and B ({m + 1}, {m}), "
                             f"got {tuple(self.A.shape)} and {tuple(self.B.shape)}")
        if torch.triu(self.B.detach()).abs().max() != 0:
            raise ValueError(f"{self.name}: B must be strictly lower-triangular (x_k uses u_j, j < k only)")
        if not bool((self.t[1:] >= self.t[:-1]).all()):
            raise ValueError(f"{self.name}: times must be non-decreasing, got {self.t.tolist()}")

    @property
    def nfe(self) -> int:
        return self.t.numel() - 1

    @property
    def strictly_increasing(self) -> bool:
        """One evaluation per distinct time (what the BNS time grid can represent)."""
        return bool((self.t[1:] > self.t[:-1]).all())

    def to(self, device=None, dtype=None) -> "LinearScheme":
        return LinearScheme(self.name, self.t.to(device, dtype), self.A.to(device, dtype), self.B.to(device, dtype))


class Lin:
    """Coefficient bookkeeping for building schemes: a state (or velocity) as a vector over the
    basis (x0, u_0, ..., u_{m-1}). Supports +, -, scalar * and /, like the tensors it stands for."""

    __slots__ = ("c",)

    def __init__(self, c: Tensor):
        self.c = c

    @classmethod
    def x0(cls, m: int) -> "Lin":
        c = torch.zeros(m + 1, dtype=torch.float64)
        c[0] = 1.0
        return cls(c)

    @classmethod
    def u(cls, j: int, m: int) -> "Lin":
        c = torch.zeros(m + 1, dtype=torch.float64)
        c[1 + j] = 1.0
        return cls(c)

    def __add__(self, o: "Lin") -> "Lin":
        return Lin(self.c + o.c)

    def __sub__(self, o: "Lin") -> "Lin":
        return Lin(self.c - o.c)

    def __mul__(self, a) -> "Lin":
        return Lin(self.c * a)

    __rmul__ = __mul__

    def __truediv__(self, a) -> "Lin":
        return Lin(self.c / a)


class SchemeBuilder:
    """Records evaluations in order: `state = b.x0`, `u = b.eval(t, state)`, ..., `b.finish(t, x)`."""

    def __init__(self, m: int):
        self.m = m
        self.times: list[float] = []
        self.states: list[Lin] = []
        self.x0 = Lin.x0(m)

    def eval(self, t: float, x: Lin) -> Lin:
        j = len(self.times)
        if j >= self.m:
            raise RuntimeError(f"scheme declared {self.m} evaluations but asks for more")
        if x.c[1 + j:].abs().max() != 0:
            raise RuntimeError("a state may only depend on earlier velocities")
        self.times.append(float(t))
        self.states.append(x)
        return Lin.u(j, self.m)

    def finish(self, name: str, t: float, x: Lin) -> LinearScheme:
        if len(self.times) != self.m:
            raise RuntimeError(f"scheme declared {self.m} evaluations, used {len(self.times)}")
        rows = torch.stack([s.c for s in self.states + [x]])  # (m+1, m+1)
        t_all = torch.tensor(self.times + [float(t)], dtype=torch.float64)
        return LinearScheme(name, t_all, rows[:, 0].clone(), rows[:, 1:].clone())


def rk_scheme(time_grid: Tensor, method: str | ButcherTableau = "euler") -> LinearScheme:
    """An explicit RK method on `time_grid` as a linear scheme (NFE = steps * stages).

    Every stage state x_i + h sum_l a_jl k_l is an evaluation; x_{i+1} = x_i + h sum_j b_j k_j
    is the next step's first stage (c_0 = 0 for explicit methods)."""
    tab = get_tableau(method)
    ts = check_grid(time_grid).tolist()
    m = (len(ts) - 1) * tab.stages
    sb = SchemeBuilder(m)
    x = sb.x0
    for t_cur, t_next in zip(ts[:-1], ts[1:]):  # 0, ..., N-1
        h = t_next - t_cur
        k: list[Lin] = []
        for a_row, c_j in zip(tab.a, tab.c):
            x_stage = x
            for a_jl, k_l in zip(a_row, k):
                x_stage = x_stage + k_l * (h * a_jl)
            k.append(sb.eval(t_cur + c_j * h, x_stage))
        for b_j, k_j in zip(tab.b, k):
            x = x + k_j * (h * b_j)
    return sb.finish(tab.name, ts[-1], x)


def run_scheme(scheme: LinearScheme, u, x0: Tensor, callback: Optional[StepCallback] = None) -> SolveResult:
    """Run a linear scheme: x_k = A_k x0 + sum_{j<k} B_kj u(t_j, x_j); returns x_m, NFE = m.

    Differentiable in the scheme's coefficients (gradients are never disabled here). The
    callback gets one StepInfo per evaluation (state k -> k+1)."""
    check_finite("x0", x0)
    A = scheme.A.to(device=x0.device, dtype=x0.dtype)
    B = scheme.B.to(device=x0.device, dtype=x0.dtype)
    t = scheme.t.to(device=x0.device, dtype=x0.dtype)
    m = scheme.nfe
    us: list[Tensor] = []
    fast = not torch.is_grad_enabled()  # inference: one buffer, one GEMV per step
    if fast:
        U = x0.new_empty((m, x0.numel()))  # velocities as rows, (m, B * prod(D))
    x = A[0] * x0
    for k in range(m):
        u_k = u(t[k], x)
        # x_{k+1} = A_{k+1} x0 + sum_{j<=k} B_{k+1,j} u_j.
        if fast:
            U[k] = u_k.reshape(-1)
            x_next = (A[k + 1] * x0).reshape(-1).addmv_(U[: k + 1].T, B[k + 1, : k + 1]).reshape(x0.shape)
        else:  # differentiable: accumulate (a torch.stack of all u_j per step costs a copy each time)
            us.append(u_k)
            x_next = A[k + 1] * x0
            for j, u_j in enumerate(us):
                x_next = x_next + B[k + 1, j] * u_j
        if callback is not None:
            callback(StepInfo(k, float(t[k]), float(t[k + 1]), x, u_k, x_next))
        x = x_next
    return SolveResult(x, nfe=m, times=scheme.t.detach().cpu().double())
