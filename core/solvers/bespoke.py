"""Bespoke RK1 / RK2 solvers (Shaul et al. 2023, arXiv 2310.19075), docs/MATH.md section 3.

A base RK solver is run on the scale-time transformed path x_bar(r) = s_r x(t_r) with uniform
steps h = 1/n in r. The learned numbers are t, t' (dt), s, s' (ds) at the step nodes (RK1) or the
half-step nodes (RK2). Parametrisation [choice]: t = normalised cumsum of softplus(raw) (exact
endpoints, strictly increasing), dt = softplus(raw) > 0, s = exp(raw) with s_0 = 1, ds free.
At identity initialisation (t_r = r, dt = 1, s = 1, ds = 0) the solver IS uniform RK1 / RK2.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from ..paths import STMap
from .base import SolveResult, StepCallback, StepInfo, check_finite
from .learned import LearnedSolver, register_solver


def softplus_inv(y: Tensor) -> Tensor:
    """x with softplus(x) = y, stable for small and large y."""
    return torch.where(y > 20, y, torch.log(torch.expm1(y)))


@register_solver
class BespokeSolver(LearnedSolver):
    """RK1- or RK2-Bespoke with n steps: NFE = n (RK1) or 2n (RK2); 4n-1 or 8n-1 free numbers.

    Nodes: the fine grid r_k = k / M, k = 0..M, with M = n (RK1) or 2n (RK2: the half steps).
    """

    family = "bespoke"

    def __init__(self, order: int, n_steps: int):
        if order not in (1, 2):
            raise ValueError(f"Bespoke base order must be 1 (RK1) or 2 (RK2), got {order!r}")
        if int(n_steps) != n_steps or n_steps < 1:
            raise ValueError(f"number of steps n must be a positive integer, got {n_steps!r}")
        super().__init__(nfe=order * int(n_steps))
        self.order, self.n = order, int(n_steps)
        M = self.M
        f64 = dict(dtype=torch.float64)
        # Identity initialisation: equal increments, dt = 1, s = 1, ds = 0.
        self.raw_t = nn.Parameter(softplus_inv(torch.full((M,), 1.0 / M, **f64)))  # M increments
        self.raw_dt = nn.Parameter(softplus_inv(torch.ones(M, **f64)))  # dt at nodes 0..M-1
        self.raw_s = nn.Parameter(torch.zeros(M, **f64))  # log s at nodes 1..M (s_0 = 1)
        self.ds = nn.Parameter(torch.zeros(M, **f64))  # ds at nodes 0..M-1

    @property
    def family_name(self) -> str:
        return f"rk{self.order}-bespoke"

    @property
    def name(self) -> str:
        return f"{self.family_name}@{self.nfe}"

    @property
    def M(self) -> int:
        return self.n * self.order

    @property
    def h(self) -> float:
        return 1.0 / self.n

    @property
    def num_free_parameters(self) -> int:
        return 4 * self.M - 1  # one of the M time increments is redundant (normalisation)

    # ---------------------------------------------------------------------------------
    def decode(self) -> dict[str, Tensor]:
        """Readable values on the fine grid. r, t, s: (M+1,); dt, ds: (M,) at nodes 0..M-1.
        Also `time_grid`: t at the n+1 step nodes, and `eval_times`: the NFE times u is called at."""
        inc = F.softplus(self.raw_t)
        t = torch.cat([inc.new_zeros(1), torch.cumsum(inc, 0) / inc.sum()])
        t = torch.cat([t[:-1], t.new_ones(1)])  # exact endpoint
        s = torch.cat([self.raw_s.new_ones(1), torch.exp(self.raw_s)])
        dt = F.softplus(self.raw_dt)
        r = torch.linspace(0, 1, self.M + 1, dtype=t.dtype, device=t.device)
        return {"r": r, "t": t, "dt": dt, "s": s, "ds": self.ds, "time_grid": t[:: self.order],
                "eval_times": t[:-1]}

    def init_from_st(self, st: Callable[[Tensor], STMap]) -> "BespokeSolver":
        """Set the parameters to a given ST map evaluated at the nodes (e.g. another Gaussian
        path's map, core.paths.path_st_map(model_path, target, r, normalize=True)).

        The map is first normalised to an exact member of the consistent family (t from 0 to 1,
        s_0 = 1) by an affine change of t and a scale of s, with the derivatives changed alike:
            t~_r = (t_r - t_0) / (t_1 - t_0),  t~'_r = t'_r / (t_1 - t_0),
            s~_r = s_r / s_0,                  s~'_r = s'_r / s_0.
        A target path whose map does not span [0, 1] (eps-VP's starts at t_0 > 0) would
        otherwise start the solver inconsistent: its error would stall as n grows."""
        r = torch.linspace(0, 1, self.M + 1, dtype=torch.float64)
        m = st(r)
        t, dt = m.t.to(torch.float64), m.dt.to(torch.float64)
        span = t[-1] - t[0]
        if not (torch.isfinite(span) and span > 0):
            raise ValueError(f"the ST map's times must increase from r = 0 to r = 1; got t_0 = {float(t[0])}, "
                             f"t_1 = {float(t[-1])}")
        t, dt = (t - t[0]) / span, dt / span
        t = torch.cat([t[:1].new_zeros(1), t[1:-1], t[:1].new_ones(1)])  # exact endpoints after rounding
        inc = torch.diff(t)
        if not (inc > 0).all():
            raise ValueError("the ST map's times are not strictly increasing at the nodes")
        s0 = m.s[0].to(torch.float64)
        s, ds = m.s.to(torch.float64) / s0, m.ds.to(torch.float64) / s0
        for name, v in (("s", s), ("dt", dt), ("ds", ds)):
            if not torch.isfinite(v).all():
                raise ValueError(f"the ST map gives non-finite {name} at the nodes: {v.tolist()}")
        if not (s > 0).all() or not (dt[:-1] > 0).all():
            raise ValueError("the ST map must have s > 0 and dt > 0 at the nodes")
        self._set_nodes(t, dt[:-1], s, ds[:-1])
        return self

    def _set_nodes(self, t: Tensor, dt: Tensor, s: Tensor, ds: Tensor) -> None:
        """Parameters from node values: t, s (M+1,) with t_0 = 0, t_M = 1, s_0 = 1; dt, ds (M,)."""
        with torch.no_grad():
            inc = torch.diff(t)
            self.raw_t.copy_(softplus_inv(inc / inc.sum()))
            self.raw_dt.copy_(softplus_inv(dt))
            self.raw_s.copy_(torch.log(s[1:]))
            self.ds.copy_(ds)

    def init_from_coarse(self, coarse: "BespokeSolver") -> "BespokeSolver":
        """Coarse-to-fine start: take a trained solver of the same order with half the steps.

        Its fine grid (M_c + 1 nodes) holds every second node of this one: there t, t', s, s' are
        copied exactly. At the new midpoints t, t', log s and s' are the means of their two
        neighbours (t' and s' of the last midpoint: those of the node before it, as none is
        stored at r = 1). Linear, so t stays strictly increasing and t' > 0; the trained t', s'
        are free numbers, not derivatives of t, s, so they are not used to curve t or s."""
        if not isinstance(coarse, BespokeSolver) or coarse.order != self.order or 2 * coarse.M != self.M:
            got = getattr(coarse, "name", type(coarse).__name__)
            raise ValueError(f"a coarse-to-fine start for {self.name} needs an rk{self.order}-bespoke solver with "
                             f"half its NFE ({self.nfe // 2}); got {got}")
        with torch.no_grad():
            p = {k: v.detach().to("cpu", torch.float64) for k, v in coarse.decode().items()}

        def fill(nodes: Tensor, n_out: int) -> Tensor:  # nodes at even positions, means between
            out = torch.empty(n_out, dtype=torch.float64)
            out[::2] = nodes
            nxt = torch.cat([nodes[1:], nodes[-1:]]) if n_out % 2 == 0 else nodes[1:]
            out[1::2] = 0.5 * (nodes[: out[1::2].numel()] + nxt[: out[1::2].numel()])
            return out

        M = self.M
        t, logs = fill(p["t"], M + 1), fill(torch.log(p["s"]), M + 1)
        self._set_nodes(t, fill(p["dt"], M), torch.exp(logs), fill(p["ds"], M))
        return self

    def config(self) -> dict[str, Any]:
        return {"order": self.order, "n_steps": self.n}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "BespokeSolver":
        return cls(int(config["order"]), int(config["n_steps"]))

    # ---------------------------------------------------------------------------------
    def step_coefficients(self, p: Optional[dict[str, Tensor]] = None) -> dict[str, Tensor]:
        """Per-step coefficients (each (n,)) of the update, linear in x and the velocities.

        RK1 (eq. 17):  x_{i+1} = a x_i + b u(t_i, x_i),
                       a = (s_i + h s'_i) / s_{i+1},  b = h t'_i s_i / s_{i+1}.
        RK2 (eqs. 19-20), with z_i = c1 x_i + c2 u(t_i, x_i) and y_i = z_i / s_{i+1/2}:
                       x_{i+1} = a x_i + b1 z_i + b2 u(t_{i+1/2}, y_i),
                       c1 = s_i + (h/2) s'_i, c2 = (h/2) s_i t'_i, a = s_i / s_{i+1},
                       b1 = h s'_{i+1/2} / (s_{i+1/2} s_{i+1}), b2 = h t'_{i+1/2} s_{i+1/2} / s_{i+1}.
        """
        p = self.decode() if p is None else p
        t, dt, s, ds, h, o = p["t"], p["dt"], p["s"], p["ds"], self.h, self.order
        i, j = slice(0, self.M, o), slice(o, self.M + 1, o)  # step start and end nodes
        if o == 1:
            return {"t": t[i], "a": (s[i] + h * ds[i]) / s[j], "b": h * dt[i] * s[i] / s[j]}
        m = slice(1, self.M, 2)  # half nodes
        return {
            "t": t[i], "t_half": t[m],
            "c1": s[i] + 0.5 * h * ds[i], "c2": 0.5 * h * s[i] * dt[i],
            "inv_s_half": 1.0 / s[m],
            "a": s[i] / s[j], "b1": h * ds[m] / (s[m] * s[j]), "b2": h * dt[m] * s[m] / s[j],
        }

    def lipschitz(self, lipschitz_u: float, p: Optional[dict[str, Tensor]] = None) -> Tensor:
        """Per-step Lipschitz bounds L_i of x -> step(t_i, x), (n,), for Lip(u) <= lipschitz_u.

        L_ubar(r) = |s'_r| / s_r + t'_r L_tau;
        RK1: L_i = (s_i / s_{i+1}) (1 + h L_ubar(r_i));
        RK2: L_i = (s_i / s_{i+1}) (1 + h L_ubar(r_{i+1/2}) (1 + (h/2) L_ubar(r_i))).
        """
        p = self.decode() if p is None else p
        s, ds, dt, h, o = p["s"], p["ds"], p["dt"], self.h, self.order
        L_bar = ds.abs() / s[:-1] + dt * lipschitz_u  # at nodes 0..M-1
        i, j = slice(0, self.M, o), slice(o, self.M + 1, o)
        ratio = s[i] / s[j]
        if o == 1:
            return ratio * (1 + h * L_bar[i])
        return ratio * (1 + h * L_bar[1::2] * (1 + 0.5 * h * L_bar[i]))

    def steps(self, u, x: Tensor, c: dict[str, Tensor]) -> Tensor:
        """Apply step k to x[k] for all k at once: x (K, B, *D) with c's entries (K,).
        One model call per RK stage (the K steps are batched). Returns (K, B, *D)."""
        K, B = x.shape[:2]
        def col(v: Tensor) -> Tensor:  # (K,) -> (K, 1, ..., 1) for broadcasting against x
            return v.to(x.dtype).reshape(K, *([1] * (x.dim() - 1)))

        def call(t: Tensor, y: Tensor) -> Tensor:
            y_flat = rearrange(y, "k b ... -> (k b) ...")
            t_flat = repeat(t.to(x.dtype), "k -> (k b)", b=B)
            return rearrange(u(t_flat, y_flat), "(k b) ... -> k b ...", k=K)

        u0 = call(c["t"], x)
        if self.order == 1:
            return col(c["a"]) * x + col(c["b"]) * u0
        z = col(c["c1"]) * x + col(c["c2"]) * u0
        u1 = call(c["t_half"], z * col(c["inv_s_half"]))
        return col(c["a"]) * x + col(c["b1"]) * z + col(c["b2"]) * u1

    def solve(self, field, x0: Tensor, nfe: Optional[int] = None,
              callback: Optional[StepCallback] = None) -> SolveResult:
        """Sample: n steps from x0 (B, *D) at t = 0 to t = 1. Differentiable unless called
        under torch.no_grad(), where the coefficients become plain floats (fast path)."""
        self.check_nfe(nfe)
        check_finite("x0", x0)
        p = self.decode()
        c = self.step_coefficients(p)
        if not torch.is_grad_enabled():
            c = {k: v.tolist() for k, v in c.items()}
            grid = p["time_grid"].tolist()
        else:
            c = {k: v.to(x0.dtype) for k, v in c.items()}
            grid = p["time_grid"].detach().tolist()
        x = x0
        for i in range(self.n):  # 0, ..., n-1
            t_i = torch.as_tensor(c["t"][i], dtype=x.dtype, device=x.device)
            u0 = field(t_i, x)
            if self.order == 1:
                x_next = c["a"][i] * x + c["b"][i] * u0
            else:
                z = c["c1"][i] * x + c["c2"][i] * u0
                t_h = torch.as_tensor(c["t_half"][i], dtype=x.dtype, device=x.device)
                x_next = c["a"][i] * x + c["b1"][i] * z + c["b2"][i] * field(t_h, z * c["inv_s_half"][i])
            if callback is not None:
                callback(StepInfo(i, grid[i], grid[i + 1], x, u0, x_next))
            x = x_next
        return SolveResult(x, nfe=self.nfe, times=p["time_grid"].detach().cpu())


def bespoke_from_family(family: str, nfe: int) -> BespokeSolver:
    """'rk1-bespoke' / 'rk2-bespoke' at a total NFE (RK2 needs an even NFE)."""
    if family not in ("rk1-bespoke", "rk2-bespoke"):
        raise ValueError(f"unknown Bespoke family {family!r}; use 'rk1-bespoke' or 'rk2-bespoke'")
    order = 1 if family == "rk1-bespoke" else 2
    if int(nfe) != nfe or nfe < order:
        raise ValueError(f"{family} needs NFE >= {order}, got {nfe!r}")
    if nfe % order:
        raise ValueError(f"{family} uses 2 evaluations per step, so its NFE must be even; got {nfe}")
    return BespokeSolver(order, nfe // order)
