"""Bespoke Non-Stationary (BNS) solvers (Shaul et al. 2024, arXiv 2403.01329), docs/MATH.md section 4.

An NS solver with n steps (n NFE) has a time grid 0 = r_0 < ... < r_n = 1 and, per step, its own
linear update on the start point and ALL previous velocities (the reduced form)
    x_bar_{i+1} = a_i x_bar_0 + sum_{j<=i} b_ij u_bar_j,    u_bar_j = u_bar(r_j, x_bar_j),
n - 1 + n + n(n+1)/2 = n(n+5)/2 - 1 free numbers (8 -> 51, 16 -> 167). It contains RK, multistep,
exponential and ST-RK (Bespoke) solvers: `init_from_scheme` sets it EXACTLY to any solver written
as a LinearScheme (core/solvers/linear.py) with one evaluation per distinct time.

Preconditioning [a reconstruction: the paper runs the NS solver on an ST-transformed VF; the exact
scheduler is not in our sources]: u_bar is the model's VF moved to the path alpha_bar_r = r,
sigma_bar_r = sigma0 (1 - r) (core.paths.ScaledOTPath) by the ST map of docs/MATH.md §2.3,
x_bar(r) = s_r x(t_r), computed with core.paths.path_st_map. So x_bar_0 = s_0 x0 (= sigma0 x0 on
FM-OT), s = 1 at r = 1 (the same sample), and u_bar_j = s'_j x_j + t'_j s_j u(t_j, x_j) in the
model's own variables, so the solver is still an NS solver there (decode gives both forms, and
`solve` runs the model-space form). sigma0 = 1 on an FM-OT model is the identity. Where the
model's alpha_0 > 0 (eps-VP) the r-grid starts at r_start = rho_bar^{-1}(rho(0)) > 0 instead of
0 (still t_0 = 0). A field with no Gaussian path is solved as it is (sigma0 must be 1).

Training (BNS paper): maximise the PSNR of the full unrolled solve against a fixed set of GT pairs
(x0, x1) made once with dopri5, with a held-out validation split (`BNSObjective`). `build_bns` is
the builder core.train uses for the "bns" family: core.train imports this module, never the other
way round. A solver is trained for one model, one NFE and one guidance scale.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ..distributed.sharding import local_rows
from ..field import aligned_batch, label_period, round_to_period
from .. import metrics
from ..losses import psnr_from_mse, validation_summary
from ..paths import GaussianPath, ScaledOTPath, get_path, path_st_map
from ..seeds import stream_noise
from .base import SolveResult, StepCallback, check_finite
from .bespoke import BespokeSolver
from .dedicated import build_scheme
from .gt import gt_solve
from .learned import LearnedSolver, register_solver
from .linear import Lin, LinearScheme, SchemeBuilder, run_scheme

BNS_INITS = ("euler", "midpoint", "ddim", "dpm++2m")
"""Base solvers BNS can start from by name (plus "identity" = euler, and a saved Bespoke solver
file). Solvers that evaluate twice at one time (heun, rk4, edm) do not fit one time grid."""


class Preconditioner:
    """The ST map (t_r, s_r, t'_r, s'_r) from the model's path to ScaledOTPath(sigma0).

    With path=None (a field with no Gaussian path) it is the identity and sigma0 must be 1."""

    def __init__(self, path: Optional[GaussianPath], sigma0: float = 1.0):
        if not (isinstance(sigma0, (int, float)) and math.isfinite(sigma0) and sigma0 > 0):
            raise ValueError(f"sigma0 must be a positive finite number, got {sigma0!r}")
        if path is None and sigma0 != 1.0:
            raise ValueError(f"preconditioning with sigma0={sigma0!r} needs a model with a Gaussian path; this "
                             f"field has none (use sigma0=1)")
        self.path, self.sigma0 = path, float(sigma0)
        self.target = ScaledOTPath(self.sigma0)
        if path is None:
            self.r_start = 0.0
        else:
            rho0 = path.snr(torch.tensor(0.0, dtype=torch.float64))
            self.r_start = float(self.target.snr_inverse(rho0)) if rho0 > 0 else 0.0

    @property
    def identity(self) -> bool:
        return self.path is None

    def r_of_t(self, t: Tensor) -> Tensor:
        """r with t_r = t: rho_bar^{-1}(rho(t)); exact endpoints r(0) = r_start, r(1) = 1."""
        t = t.to(torch.float64)
        if self.identity:
            return t.clone()
        r = self.target.snr_inverse(self.path.snr(t.clamp(1e-300, 1 - 1e-16)))
        r = torch.where(t <= 0, torch.full_like(t, self.r_start), r)
        return torch.where(t >= 1, torch.ones_like(t), r)

    def at(self, r: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """t, s, t', s' at the nodes r (K+1,) = r_0..r_K, r_K = 1: t and s at all K+1, t' and
        s' at r_0..r_{K-1} (the evaluation nodes). t_0 = 0, t_K = 1, s_K = 1 exactly."""
        if self.identity:
            one = torch.ones_like(r)
            return r, one, one[:-1], torch.zeros_like(r[:-1])
        m = path_st_map(self.path, self.target, r[:-1])
        c1 = self.path(torch.ones((), dtype=r.dtype, device=r.device))
        s_end = (self.target(torch.ones((), dtype=r.dtype, device=r.device)).alpha / c1.alpha).reshape(1)
        t = torch.cat([torch.zeros_like(r[:1]), m.t[1:], torch.ones_like(r[:1])])
        s = torch.cat([m.s, s_end.to(r)])
        return t, s, m.dt, m.ds


def _tril_size(n: int) -> int:
    return n * (n + 1) // 2


@register_solver
class BNSSolver(LearnedSolver):
    """A BNS solver with n steps = n NFE on the preconditioned VF (see the module docstring).

    Raw parameters: `raw_r` (n-1,) logits of the r-grid increments (softmax with the last logit
    fixed at 0: strictly increasing, exact endpoints), `a` (n,), `b` (n(n+1)/2,) the lower
    triangle of b_ij, j <= i, row by row. At construction it is uniform Euler in r (Euler on the
    preconditioned VF); `init_from(name, field)` / `init_from_scheme` set it to a base solver.
    path: the model's Gaussian path (or its to_dict()); guidance_scale: the scale it is trained
    for (solve refuses a field at another one); init_name: a label recorded in the config.
    """

    family = "bns"

    def __init__(self, n: int, sigma0: float = 1.0, path: Optional[dict | GaussianPath] = None,
                 guidance_scale: Optional[float] = None, init_name: str = "euler"):
        super().__init__(nfe=n)
        n = self.nfe
        self.path = None if path is None else get_path(path)
        self.pre = Preconditioner(self.path, sigma0)
        self.sigma0, self.init_name = float(sigma0), str(init_name)  # a label only: see init_from
        self.guidance_scale = None if guidance_scale is None else float(guidance_scale)
        f64 = dict(dtype=torch.float64)
        self.raw_r = nn.Parameter(torch.zeros(n - 1, **f64))
        self.a = nn.Parameter(torch.ones(n, **f64))
        rows, cols = torch.tril_indices(n, n)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)
        self.b = nn.Parameter(torch.full((_tril_size(n),), 1.0 / n, **f64))

    @property
    def n(self) -> int:
        return self.nfe

    @property
    def num_free_parameters(self) -> int:
        return self.n * (self.n + 5) // 2 - 1

    # ---------------------------------------------------------------------------------
    def r_grid(self) -> Tensor:
        """(n+1,) r_0 = r_start < ... < r_n = 1."""
        logits = torch.cat([self.raw_r, self.raw_r.new_zeros(1)])
        inc = torch.softmax(logits, 0)
        frac = torch.cat([inc.new_zeros(1), torch.cumsum(inc, 0)[:-1], inc.new_ones(1)])
        return self.pre.r_start + (1 - self.pre.r_start) * frac

    def b_matrix(self) -> Tensor:
        """(n, n) lower-triangular b_ij (row i: the update to x_bar_{i+1})."""
        B = self.b.new_zeros(self.n, self.n)
        return B.index_put((self._rows, self._cols), self.b)

    def decode(self) -> dict[str, Tensor]:
        """Readable values. r, t, s: (n+1,) at the nodes; dt, ds: (n,) at the evaluation nodes;
        a (n,), b (n, n): the NS coefficients on the preconditioned VF; A (n+1,), B (n+1, n): the
        same solver in the model's variables, x_k = A_k x0 + sum_j B_kj u(t_j, x_j);
        time_grid = t, eval_times = t[:-1]."""
        r = self.r_grid()
        t, s, dt, ds = self.pre.at(r)
        a, b = self.a, self.b_matrix()
        A, B = _to_model_space(a, b, s, dt, ds)
        return {"r": r, "t": t, "s": s, "dt": dt, "ds": ds, "a": a, "b": b, "A": A, "B": B,
                "time_grid": t, "eval_times": t[:-1]}

    def scheme(self, p: Optional[dict[str, Tensor]] = None) -> LinearScheme:
        """The solver as a LinearScheme in the model's variables (differentiable)."""
        p = self.decode() if p is None else p
        return LinearScheme(f"bns@{self.n}", p["t"], p["A"], p["B"])

    # ---------------------------------------------------------------------------------
    def init_from_scheme(self, scheme: LinearScheme) -> "BNSSolver":
        """Set the parameters so that this solver IS `scheme` (an n-evaluation linear scheme with
        strictly increasing times from t_0 = 0 to t_n = 1 and A_0 = 1), up to rounding."""
        if scheme.nfe != self.n:
            raise ValueError(f"cannot initialise a {self.n}-NFE BNS solver from {scheme.name} with NFE {scheme.nfe}")
        t = scheme.t.to(torch.float64).cpu()
        if not scheme.strictly_increasing:
            raise ValueError(f"{scheme.name} evaluates more than once at one time ({t.tolist()}); a BNS time grid "
                             f"holds one evaluation per time")
        if abs(float(t[0])) > 1e-12 or abs(float(t[-1]) - 1) > 1e-12 or abs(float(scheme.A[0]) - 1) > 1e-12:
            raise ValueError(f"{scheme.name} must start at t = 0 from x0 and end at t = 1 (times {t.tolist()}, "
                             f"A_0 = {float(scheme.A[0])})")
        r = self.pre.r_of_t(t)
        inc = torch.diff(r)
        if not (inc > 0).all():
            raise ValueError(f"{scheme.name}'s times map to a non-increasing r-grid {r.tolist()}")
        dev = self.a.device
        with torch.no_grad():
            logits = torch.log(inc) - torch.log(inc[-1])
            self.raw_r.copy_(logits[:-1].to(dev))
            p = self.decode()
            s, dt, ds = (p[k].detach().cpu() for k in ("s", "dt", "ds"))
            a, b = _from_model_space(scheme.A.to(torch.float64).cpu(), scheme.B.to(torch.float64).cpu(), s, dt, ds)
            self.a.copy_(a.to(dev))
            self.b.copy_(b[self._rows.cpu(), self._cols.cpu()].to(dev))
        self.init_name = scheme.name
        return self

    def init_from(self, init: str, field=None) -> "BNSSolver":
        """Initialise from a base solver by name (BNS_INITS, "identity" = euler) or from a saved
        Bespoke solver file (checked against `field`)."""
        self.init_from_scheme(base_scheme(init, self.n, field))
        self.init_name = init if init in BNS_INITS or init == "identity" else os.path.basename(str(init))
        return self

    # ---------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"n": self.n, "sigma0": self.sigma0, "path": None if self.path is None else self.path.to_dict(),
                "guidance_scale": self.guidance_scale, "init": self.init_name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "BNSSolver":
        return cls(int(config["n"]), float(config.get("sigma0", 1.0)), config.get("path"),
                   config.get("guidance_scale"), str(config.get("init", "euler")))

    def check_field(self, field) -> None:
        """Refuse a field on another Gaussian path or at another guidance scale."""
        fp = getattr(field, "path", None)
        want, got = (None if self.path is None else self.path.to_dict()), (None if fp is None else fp.to_dict())
        if want != got:
            raise ValueError(f"this BNS solver was built for a model on path {want}, not {got}")
        g = getattr(field, "guidance_scale", None)
        if (g is None) != (self.guidance_scale is None) or (g is not None and abs(float(g) - self.guidance_scale) > 1e-9):
            raise ValueError(f"this BNS solver was trained at guidance scale {self.guidance_scale!r}; it cannot be "
                             f"used at guidance scale {g!r} (train one for that scale)")

    def solve(self, field, x0: Tensor, nfe: Optional[int] = None,
              callback: Optional[StepCallback] = None) -> SolveResult:
        """Sample: n evaluations from x0 (B, *D) at t = 0 to t = 1. Differentiable in the
        parameters (through the coefficients and the evaluation times)."""
        self.check_nfe(nfe)
        self.check_field(field)
        check_finite("x0", x0)
        return run_scheme(self.scheme(), field, x0, callback)


def _to_model_space(a: Tensor, b: Tensor, s: Tensor, dt: Tensor, ds: Tensor) -> tuple[Tensor, Tensor]:
    """(A, B) of x_k = A_k x0 + sum_j B_kj u_j from the preconditioned NS coefficients:
    x_k = (a_{k-1} s_0 x0 + sum_j b_{k-1,j} u_bar_j) / s_k, u_bar_j = s'_j x_j + t'_j s_j u_j."""
    n = a.numel()
    X = [torch.cat([a.new_ones(1), a.new_zeros(n)])]  # x_0 = x0; rows over (x0, u_0..u_{n-1})
    Ubar = []
    eye = torch.eye(n + 1, dtype=a.dtype, device=a.device)
    for k in range(1, n + 1):
        j = k - 1
        Ubar.append(ds[j] * X[j] + dt[j] * s[j] * eye[1 + j])
        row = a[k - 1] * s[0] * eye[0] + (b[k - 1, :k, None] * torch.stack(Ubar)).sum(0)
        X.append(row / s[k])
    X = torch.stack(X)  # (n+1, n+1)
    return X[:, 0], X[:, 1:]


def _from_model_space(A: Tensor, B: Tensor, s: Tensor, dt: Tensor, ds: Tensor) -> tuple[Tensor, Tensor]:
    """The inverse of _to_model_space: (a (n,), b (n, n)) for a scheme (A, B), by elimination."""
    n = A.numel() - 1
    X = torch.cat([A[:, None], B], 1)  # (n+1, n+1)
    eye = torch.eye(n + 1, dtype=A.dtype)
    Ubar = [ds[j] * X[j] + dt[j] * s[j] * eye[1 + j] for j in range(n)]
    a, b = torch.zeros(n, dtype=A.dtype), torch.zeros(n, n, dtype=A.dtype)
    for k in range(1, n + 1):
        T = s[k] * X[k]
        for j in range(k - 1, -1, -1):
            b[k - 1, j] = T[1 + j] / (dt[j] * s[j])
            T = T - b[k - 1, j] * Ubar[j]
        a[k - 1] = T[0] / s[0]
    return a, b


# -------------------------------------------------------------------------------------------
# Base solvers as schemes
# -------------------------------------------------------------------------------------------

def bespoke_scheme(solver: BespokeSolver) -> LinearScheme:
    """A Bespoke RK1 / RK2 solver as a linear scheme. RK1 (eq. 17): x_{i+1} = a x_i + b u(t_i, x_i);
    RK2 (eqs. 19-20): z = c1 x_i + c2 u(t_i, x_i), y = z / s_{i+1/2} evaluated at t_{i+1/2},
    x_{i+1} = a x_i + b1 z + b2 u(t_{i+1/2}, y). Evaluation states: x_i and y_i."""
    with torch.no_grad():
        p = solver.decode()
        c = {k: v.detach().cpu().tolist() for k, v in solver.step_coefficients(p).items()}
        t_end = float(p["t"][-1])
    sb = SchemeBuilder(solver.nfe)
    x = sb.x0
    for i in range(solver.n):
        u0 = sb.eval(c["t"][i], x)
        if solver.order == 1:
            x = x * c["a"][i] + u0 * c["b"][i]
        else:
            z = x * c["c1"][i] + u0 * c["c2"][i]
            u1 = sb.eval(c["t_half"][i], z * c["inv_s_half"][i])
            x = x * c["a"][i] + z * c["b1"][i] + u1 * c["b2"][i]
    return sb.finish(solver.name, t_end, x)


def base_scheme(init: str, n: int, field=None) -> LinearScheme:
    """The n-NFE linear scheme of a base solver to start BNS from: "identity"/"euler",
    "midpoint" (even n), "ddim", "dpm++2m" (need the model's Gaussian path), or the path of a
    saved Bespoke solver file trained for n NFE (and for `field`'s model)."""
    if not isinstance(init, str):
        raise ValueError(f"BNS init must be a solver name or a file, got {init!r}")
    key = init.strip().lower()
    if key == "identity":
        key = "euler"
    path = getattr(field, "path", None)
    if key in BNS_INITS:
        if key == "midpoint" and n % 2:
            raise ValueError(f"midpoint uses 2 evaluations per step: a BNS init from it needs an even NFE, got {n}")
        if key in ("ddim", "dpm++2m") and path is None:
            raise ValueError(f"BNS init {key!r} needs a model with a Gaussian path; this field has none")
        return build_scheme(key, n, path)
    if key in ("heun", "rk4", "edm"):
        raise ValueError(f"cannot initialise BNS from {key!r}: it evaluates twice at one time, which one BNS time "
                         f"grid cannot hold; use one of {BNS_INITS} or a Bespoke solver file")
    if os.path.exists(init):
        from .learned import load_solver
        solver, _ = load_solver(init, field=field)
        if not isinstance(solver, BespokeSolver):
            raise ValueError(f"BNS can start from a Bespoke solver file; {init!r} holds a {solver.family} solver")
        if solver.nfe != n:
            raise ValueError(f"the Bespoke solver in {init!r} has NFE {solver.nfe}, the BNS solver {n}")
        return bespoke_scheme(solver)
    raise ValueError(f"unknown BNS init {init!r}: use one of {('identity',) + BNS_INITS} or a Bespoke solver file")


# -------------------------------------------------------------------------------------------
# Training objective and the trainer's builder
# -------------------------------------------------------------------------------------------

class BNSObjective:
    """Negative PSNR of the full unrolled solve against fixed GT pairs (BNS paper), per sample:
    loss = -PSNR(x_n(x0), x1_GT) = 10 log10 MSE - 20 log10 R. Validation on a held-out split."""

    metric, mode = "psnr", "max"
    rows: Optional[tuple[int, int]] = None  # (rank, world): compute only this rank's rows (core.distributed)

    def __init__(self, field, x0: Tensor, x1: Tensor, x0_val: Tensor, x1_val: Tensor, batch_size: int = 256,
                 val_batch: int = 4096):
        if x0.shape != x1.shape or x0_val.shape != x1_val.shape:
            raise ValueError(f"GT pairs must match: x0 {tuple(x0.shape)} vs x1 {tuple(x1.shape)}, "
                             f"validation {tuple(x0_val.shape)} vs {tuple(x1_val.shape)}")
        self.field, self.x0, self.x1, self.x0_val, self.x1_val = field, x0, x1, x0_val, x1_val
        self.batch_size, self.val_batch = int(batch_size), int(val_batch)
        self.period = label_period(field)

    def loss(self, solver, generator: Optional[torch.Generator] = None) -> Tensor:
        B = min(round_to_period(self.batch_size, self.period), self.x0.shape[0])
        idx = aligned_batch(self.x0.shape[0], B, self.period, generator).to(self.x0.device)
        if self.rows is not None:
            idx = local_rows(idx, *self.rows, self.period)
        x = solver.solve(self.field, self.x0[idx]).x
        return -psnr_from_mse(metrics.mse(x, self.x1[idx]), self.field.data_range)

    @torch.no_grad()
    def validate(self, solver) -> dict[str, float]:
        chunk = round_to_period(self.val_batch, self.period)
        mse = torch.cat([metrics.mse(solver.solve(self.field, x0).x, x1)
                         for x0, x1 in zip(torch.split(self.x0_val, chunk), torch.split(self.x1_val, chunk))])
        return validation_summary(mse, self.field.data_range)


def make_gt_pairs(field, x0: Tensor, atol: float = 1e-5, rtol: float = 1e-5,
                  batch: int = 4096) -> tuple[Tensor, float, int]:
    """The GT samples x1 (dopri5) of the noise x0, solved once. Returns (x1, seconds, NFE).
    Conditional models: chunks are whole label periods, so labels stay aligned."""
    chunk = round_to_period(batch, label_period(field))
    start, xs, nfe = time.perf_counter(), [], 0
    for part in torch.split(x0, chunk):
        res = gt_solve(field, part, atol=atol, rtol=rtol)
        xs.append(res.x)
        nfe += res.nfe
    return torch.cat(xs), time.perf_counter() - start, nfe


def build_bns(field, spec, cfg, device, gt=None):
    """core.train builder: a BNS solver initialised from spec.init with spec.sigma0, and its
    objective on cfg.n_train + cfg.n_val GT pairs (noise from the "train" and "val" streams of
    cfg.seed, core.seeds), or on the pairs of `gt`, a GT data set."""
    if spec.loss not in ("rmse-bound", "psnr"):  # "rmse-bound" is SolverSpec's default; BNS always uses PSNR
        raise ValueError(f"BNS is trained on the PSNR of the full solve; loss {spec.loss!r} does not apply")
    solver = BNSSolver(spec.nfe, sigma0=spec.sigma0, path=field.path, guidance_scale=field.guidance_scale)
    solver.init_from(spec.init, field)
    solver.to(device)
    if gt is not None:
        gt.check_field(field)
        t0 = time.perf_counter()
        x0, x1, x0_val, x1_val = gt.pairs(device)
        seconds, nfe = time.perf_counter() - t0, gt.nfe
        obj = BNSObjective(field, x0, x1, x0_val, x1_val, cfg.batch_size)
        obj.gt_seconds, obj.gt_nfe = seconds, nfe
        return solver, obj
    period = label_period(field)
    n_train, n_val = round_to_period(cfg.n_train, period), round_to_period(cfg.n_val, period)
    x0 = torch.cat([stream_noise(field, n_train, cfg.seed, "train"), stream_noise(field, n_val, cfg.seed, "val")])
    x0 = x0.to(device)
    x1, seconds, nfe = make_gt_pairs(field, x0, cfg.gt_atol, cfg.gt_rtol)
    obj = BNSObjective(field, x0[:n_train], x1[:n_train], x0[n_train:], x1[n_train:], cfg.batch_size)
    obj.gt_seconds, obj.gt_nfe = seconds, nfe
    return solver, obj
