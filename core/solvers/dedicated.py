"""Dedicated Gaussian-path solvers, the baselines of the Bespoke / BNS papers, for ANY Gaussian
path model given as a velocity field with a `.path`:

- DDIM (Song et al. 2021, deterministic eta = 0), on a grid uniform in t. Order 1.
- DPM-Solver++(2M) (Lu et al. 2022, multistep, data prediction, in lambda = log(alpha/sigma)),
  on a grid uniform in lambda. Order 2.
- EDM's Heun sampler (Karras et al. 2022, Algorithm 1 deterministic) in the VE view
  x_ve = x / alpha, sigma_ve = sigma / alpha, on its rho = 7 sigma grid. Order 2. NFE = 2N - 1.

A velocity u is turned into the data and noise predictions with x1_from_velocity /
eps_from_velocity (docs/MATH.md §1.2). Both are linear in (x, u), so every step here is linear in
earlier states and velocities: each solver also has a `*_scheme` builder giving the same solver
as a LinearScheme (core/solvers/linear.py), which is how BNS is initialised from it.

Start at t = 0 (what we do, [choice]):
- DDIM and DPM-Solver++ start exactly at t = 0 from x0. There x1_hat = (sigma u - sigma' x) /
  (alpha' sigma - alpha sigma') is well defined for a velocity model even when alpha_0 = 0 (on
  FM-OT it is x + (1 - t) u); the first DPM-Solver++ step is then a DDIM step (lambda_0 = -inf
  makes the second-order correction of step 1 vanish as well), and the last step, to lambda =
  +inf at t = 1, is first order (as DPM-Solver++'s "lower order final").
- EDM starts at sigma_max (default 80, lowered to sigma_ve(0) when the path's own is smaller),
  i.e. at t_s = t(sigma_max), from EDM's own prior approximation x_ve = sigma_max x0, that is
  x(t_s) = (sigma_{t_s} / sigma_0) x0: it ignores the alpha_{t_s} x1 part (about 1/80 of the
  data on FM-OT), a fixed error floor. sigma_max=None starts exactly at t = 0 (x_ve = x0 /
  alpha_0), possible only where alpha_0 > 0 (eps-VP). The last step, sigma_min -> 0, is Euler
  and returns x1_hat at sigma_min (an O(sigma_min^2) floor).
- DPM-Solver++'s grid is a lattice of N + 1 points uniform in lambda, one of two (DPM_GRIDS):
  "lu", Lu et al.'s published grid, on [lambda(0), lambda(1 - 1e-3)], whose last state x(1 - 1e-3)
  is the sample (their eps = 1e-3), the default where alpha_0 > 0 (eps-VP); "sigma", on
  [lambda(0), -log sigma_min] (EDM's sigma_min = 0.002), lambda(0) replaced by -log sigma_max
  (80) where alpha_0 = 0, its first and last points moved to t = 0 and t = 1 exactly, the
  default where alpha_0 = 0 (Lu et al.'s grid has no start there). On "sigma", where
  alpha_0 = 0 (FM-OT, cosine) the first step, 0 -> t(lambda_1), tends to a fixed size as N grows
  and the last step returns x1_hat at sigma_ve ~ 0.002: floors far below the errors at the NFE of
  interest (the tests measure them).
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import torch
from torch import Tensor

from ..field import VelocityField
from ..paths import GaussianPath, eps_from_velocity, x1_from_velocity
from .base import SolveResult, StepCallback, StepInfo, check_finite, check_grid, get_tableau, uniform_grid
from .linear import Lin, LinearScheme, SchemeBuilder, rk_scheme
from .tableau import TABLEAUS

DEDICATED = ("ddim", "dpm++2m", "edm")
"""Names of the dedicated solvers (they need a Gaussian path)."""

SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0
"""EDM's defaults (Karras et al. 2022, Table 1)."""

DPM_GRIDS = ("lu", "sigma")
"""Time grids of DPM-Solver++(2M): "lu" (Lu et al. 2022's: uniform in lambda from t = 0 to
t = 1 - DPM_T_EPS, the sample is the state there) and "sigma" (uniform in lambda over EDM's
sigma range, ends at t = 1); `logsnr_grid`."""
DPM_GRID = "auto"
"""The default: "lu" on paths with alpha_0 > 0 (eps-VP: Lu et al.'s setting, where their grid
is defined), "sigma" where alpha_0 = 0 (FM-OT, cosine: lambda(0) = -inf). Each is the better of
the two on the shipped models of its kind (python bench/bench_dpm_grid.py)."""
DPM_T_EPS = 1e-3
"""Lu et al.'s end of sampling, diffusion time eps = 1e-3, i.e. t = 1 - 1e-3 here."""


# --------------------------------------------------------------------------------------
# Time grids
# --------------------------------------------------------------------------------------

def _coef(path: GaussianPath, t: float) -> tuple[float, float, float, float]:
    """alpha, sigma, alpha', sigma' at t as Python floats (float64)."""
    c = path(torch.tensor(float(t), dtype=torch.float64))
    return float(c.alpha), float(c.sigma), float(c.d_alpha), float(c.d_sigma)


def _sigma_ve(path: GaussianPath, t: float) -> float:
    """sigma_ve = sigma / alpha (inf where alpha = 0)."""
    a, s, _, _ = _coef(path, t)
    return math.inf if a <= 0 else s / a


def _t_of_sigma_ve(path: GaussianPath, sigma_ve: float) -> float:
    """The t at which sigma_t / alpha_t = sigma_ve (SNR = 1 / sigma_ve)."""
    rho = torch.tensor(1.0 / sigma_ve, dtype=torch.float64)
    return float(path.snr_inverse(rho).clamp(0.0, 1.0))


def logsnr_grid(path: GaussianPath, n_steps: int, sigma_min: float = SIGMA_MIN,
                sigma_max: float = SIGMA_MAX, kind: str = "sigma", t_eps: float = DPM_T_EPS) -> Tensor:
    """(n_steps + 1,) times uniform in lambda = log(alpha / sigma), from lambda(0) (or -log
    sigma_max where lambda(0) = -inf, alpha_0 = 0; the first time is then moved to t = 0) to:
    kind "sigma": -log sigma_min, the last time moved to t = 1;
    kind "lu": lambda(1 - t_eps) (Lu et al. 2022: eps = 1e-3), the last time stays 1 - t_eps;
    kind "auto": "lu" where alpha_0 > 0, else "sigma" (DPM_GRID)."""
    n = _check_steps(n_steps)
    if kind not in DPM_GRIDS + ("auto",):
        raise ValueError(f"unknown DPM-Solver++ grid {kind!r}; known: {DPM_GRIDS + ('auto',)}")
    s0 = _sigma_ve(path, 0.0)
    if kind == "auto":
        kind = "lu" if s0 < math.inf else "sigma"
    lam_lo = -math.log(s0) if s0 < math.inf else -math.log(sigma_max)
    if kind == "lu":
        if not 0 < t_eps < 1:
            raise ValueError(f"t_eps must be in (0, 1), got {t_eps!r}")
        lam_hi = _lam(path, 1.0 - t_eps)
    else:
        lam_hi = -math.log(sigma_min)
    if not lam_lo < lam_hi:
        raise ValueError(f"empty log-SNR range: sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
    lam = torch.linspace(lam_lo, lam_hi, n + 1, dtype=torch.float64)
    t = path.snr_inverse(torch.exp(lam)).clamp(0.0, 1.0)
    t[0] = 0.0
    t[-1] = 1.0 if kind == "sigma" else 1.0 - t_eps
    return check_grid(t)


def edm_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO) -> Tensor:
    """EDM's discretisation (Karras et al. 2022, eq. 5): n sigmas from sigma_max to sigma_min,
    sigma_i = (sigma_max^(1/rho) + i / (n - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
    then sigma_n = 0. Returns (n + 1,) float64."""
    n = _check_steps(n)
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
    i = torch.arange(n, dtype=torch.float64)
    frac = i / (n - 1) if n > 1 else i
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return torch.cat([(a + frac * (b - a)) ** rho, torch.zeros(1, dtype=torch.float64)])


def _edm_setup(path: GaussianPath, n: int, sigma_min: float, sigma_max: Optional[float], rho: float):
    """(sigmas (n+1,), times (n+1,), start scale c with x(t_0) = c x0) for EDM on `path`."""
    s0 = _sigma_ve(path, 0.0)
    if sigma_max is None:
        if s0 == math.inf:
            raise ValueError(f"sigma_max=None (start exactly at t = 0) needs alpha_0 > 0; path {path.name!r} has alpha_0 = 0")
        sigma_max = s0
    sigma_max = min(float(sigma_max), s0)
    sig = edm_sigmas(n, sigma_min, sigma_max, rho)
    t = torch.tensor([_t_of_sigma_ve(path, float(s)) if s > 0 else 1.0 for s in sig], dtype=torch.float64)
    if sigma_max >= s0:  # starts at t = 0 exactly
        t[0], start = 0.0, 1.0
    else:  # EDM's prior: x_ve(sigma_max) = sigma_max x0, i.e. x(t_s) = sigma_{t_s} x0 / sigma_0
        start = _coef(path, float(t[0]))[1] / _coef(path, 0.0)[1]
    return sig, t, start


def edm_grid(path: GaussianPath, n: int, sigma_min: float = SIGMA_MIN, sigma_max: Optional[float] = SIGMA_MAX,
             rho: float = RHO) -> Tensor:
    """EDM's sigma grid mapped to t via path.snr_inverse(1 / sigma): (n + 1,), last = 1."""
    return _edm_setup(path, n, sigma_min, sigma_max, rho)[1]


def _check_steps(n) -> int:
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"number of steps must be a positive integer, got {n!r}")
    return int(n)


# --------------------------------------------------------------------------------------
# Natural implementations
# --------------------------------------------------------------------------------------

def _need_path(field) -> GaussianPath:
    path = getattr(field, "path", None)
    if path is None:
        raise ValueError("dedicated solvers (ddim, dpm++2m, edm) need a model with a Gaussian path; "
                         f"this field ({getattr(field, 'model_id', type(field).__name__)!r}) has none")
    return path


def ddim_sample(field: VelocityField, x0: Tensor, time_grid: Tensor,
                callback: Optional[StepCallback] = None) -> SolveResult:
    """DDIM, eta = 0: x_{t'} = alpha_{t'} x1_hat + sigma_{t'} eps_hat. NFE = len(grid) - 1."""
    path = _need_path(field)
    grid = check_grid(time_grid)
    check_finite("x0", x0)
    ts, x = grid.tolist(), x0
    for i, (t_cur, t_next) in enumerate(zip(ts[:-1], ts[1:])):  # 0, ..., N-1
        u = field(t_cur, x)
        x1_hat, eps_hat = x1_from_velocity(path, t_cur, x, u), eps_from_velocity(path, t_cur, x, u)
        a_n, s_n, _, _ = _coef(path, t_next)
        x_next = a_n * x1_hat + s_n * eps_hat
        if callback is not None:
            callback(StepInfo(i, t_cur, t_next, x, u, x_next))
        x = x_next
    return SolveResult(x, nfe=len(ts) - 1, times=grid)


def _lam(path: GaussianPath, t: float) -> float:
    a, s, _, _ = _coef(path, t)
    return -math.inf if a <= 0 else (math.inf if s <= 0 else math.log(a / s))


def _dpm_weights(path: GaussianPath, ts: list[float], i: int) -> tuple[float, float, float]:
    """Step i of DPM-Solver++(2M): x_{i+1} = ratio x_i + coef ((1 + w) D_i - w D_{i-1}).

    ratio = sigma_{i+1} / sigma_i, coef = alpha_{i+1} (1 - e^{-h}) = alpha_{i+1} - alpha_i ratio,
    w = h_i / (2 h_{i-1}) (0 on the first step, where h_{i-1} is infinite, and on the last:
    DPM-Solver++'s "lower order final")."""
    a, s, _, _ = _coef(path, ts[i])
    a_n, s_n, _, _ = _coef(path, ts[i + 1])
    ratio = s_n / s
    coef = a_n - a * ratio
    last = i == len(ts) - 2
    w = 0.0
    if i > 0 and not last:
        h = _lam(path, ts[i + 1]) - _lam(path, ts[i])
        h_prev = _lam(path, ts[i]) - _lam(path, ts[i - 1])
        w = 0.0 if math.isinf(h_prev) else h / (2 * h_prev)
    return ratio, coef, w


def dpmpp2m_sample(field: VelocityField, x0: Tensor, time_grid: Tensor,
                   callback: Optional[StepCallback] = None) -> SolveResult:
    """DPM-Solver++(2M) with data prediction D = x1_hat; NFE = len(grid) - 1. A grid that ends
    before t = 1 ("lu") returns the state at its last time as the sample (as Lu et al. do)."""
    path = _need_path(field)
    grid = check_grid(time_grid)
    check_finite("x0", x0)
    ts, x, D_prev = grid.tolist(), x0, None
    for i, (t_cur, t_next) in enumerate(zip(ts[:-1], ts[1:])):  # 0, ..., N-1
        u = field(t_cur, x)
        D = x1_from_velocity(path, t_cur, x, u)
        ratio, coef, w = _dpm_weights(path, ts, i)
        # First-order (DDIM) step, plus the multistep correction where w != 0.
        D_eff = D if w == 0.0 else (1 + w) * D - w * D_prev
        x_next = ratio * x + coef * D_eff
        if callback is not None:
            callback(StepInfo(i, t_cur, t_next, x, u, x_next))
        x, D_prev = x_next, D
    return SolveResult(x, nfe=len(ts) - 1, times=grid)


def edm_sample(field: VelocityField, x0: Tensor, n: int, sigma_min: float = SIGMA_MIN,
               sigma_max: Optional[float] = SIGMA_MAX, rho: float = RHO,
               callback: Optional[StepCallback] = None) -> SolveResult:
    """EDM Algorithm 1 (deterministic Heun, last step Euler) with n sigmas: NFE = 2n - 1.

    Works on x_ve = x / alpha with d = (x_ve - D) / sigma_ve; see the module docstring for the start."""
    path = _need_path(field)
    check_finite("x0", x0)
    sig, t, start = _edm_setup(path, _check_steps(n), sigma_min, sigma_max, rho)
    sig, ts = sig.tolist(), t.tolist()
    x = start * x0 if start != 1.0 else x0
    for i, (t_cur, t_next) in enumerate(zip(ts[:-1], ts[1:])):  # 0, ..., N-1
        s_cur, s_next = sig[i], sig[i + 1]
        a_cur, a_next = _coef(path, t_cur)[0], _coef(path, t_next)[0]
        # Euler step.
        u = field(t_cur, x)
        x_ve = x / a_cur
        d = (x_ve - x1_from_velocity(path, t_cur, x, u)) / s_cur
        x_ve_next = x_ve + (s_next - s_cur) * d
        # 2nd order correction.
        if s_next > 0:
            x_pred = a_next * x_ve_next
            u_pred = field(t_next, x_pred)
            d_pred = (x_ve_next - x1_from_velocity(path, t_next, x_pred, u_pred)) / s_next
            x_ve_next = x_ve + (s_next - s_cur) * (0.5 * d + 0.5 * d_pred)
        x_next = a_next * x_ve_next
        if callback is not None:
            callback(StepInfo(i, t_cur, t_next, x, u, x_next))
        x = x_next
    return SolveResult(x, nfe=2 * len(sig[:-1]) - 1, times=t)


# --------------------------------------------------------------------------------------
# The same solvers as linear schemes
# --------------------------------------------------------------------------------------

def _x1_hat(path: GaussianPath, t: float, x: Lin, u: Lin) -> Lin:
    a, s, da, ds = _coef(path, t)
    den = da * s - a * ds
    return u * (s / den) - x * (ds / den)


def _eps_hat(path: GaussianPath, t: float, x: Lin, u: Lin) -> Lin:
    a, s, da, ds = _coef(path, t)
    den = da * s - a * ds
    return x * (da / den) - u * (a / den)


def ddim_scheme(path: GaussianPath, time_grid: Tensor) -> LinearScheme:
    ts = check_grid(time_grid).tolist()
    sb = SchemeBuilder(len(ts) - 1)
    x = sb.x0
    for t_cur, t_next in zip(ts[:-1], ts[1:]):
        u = sb.eval(t_cur, x)
        a_n, s_n, _, _ = _coef(path, t_next)
        x = _x1_hat(path, t_cur, x, u) * a_n + _eps_hat(path, t_cur, x, u) * s_n
    return sb.finish("ddim", ts[-1], x)


def dpmpp2m_scheme(path: GaussianPath, time_grid: Tensor) -> LinearScheme:
    ts = check_grid(time_grid).tolist()
    sb = SchemeBuilder(len(ts) - 1)
    x, D_prev = sb.x0, None
    for i, t_cur in enumerate(ts[:-1]):
        u = sb.eval(t_cur, x)
        D = _x1_hat(path, t_cur, x, u)
        ratio, coef, w = _dpm_weights(path, ts, i)
        D_eff = D if w == 0.0 else D * (1 + w) - D_prev * w
        x, D_prev = x * ratio + D_eff * coef, D
    return sb.finish("dpm++2m", 1.0, x)  # the sample (the state at the grid's end, 1 - eps on "lu")


def edm_scheme(path: GaussianPath, n: int, sigma_min: float = SIGMA_MIN, sigma_max: Optional[float] = SIGMA_MAX,
               rho: float = RHO) -> LinearScheme:
    sig, t, start = _edm_setup(path, _check_steps(n), sigma_min, sigma_max, rho)
    sig, ts = sig.tolist(), t.tolist()
    sb = SchemeBuilder(2 * n - 1)
    x = sb.x0 * start
    for i, (t_cur, t_next) in enumerate(zip(ts[:-1], ts[1:])):
        s_cur, s_next = sig[i], sig[i + 1]
        a_cur, a_next = _coef(path, t_cur)[0], _coef(path, t_next)[0]
        u = sb.eval(t_cur, x)
        x_ve = x / a_cur
        d = (x_ve - _x1_hat(path, t_cur, x, u)) / s_cur
        x_ve_next = x_ve + d * (s_next - s_cur)
        if s_next > 0:
            x_pred = x_ve_next * a_next
            u_pred = sb.eval(t_next, x_pred)
            d_pred = (x_ve_next - _x1_hat(path, t_next, x_pred, u_pred)) / s_next
            x_ve_next = x_ve + (d * 0.5 + d_pred * 0.5) * (s_next - s_cur)
        x = x_ve_next * a_next
    return sb.finish("edm", ts[-1], x)


# --------------------------------------------------------------------------------------
# Uniform entry points (the registry exposes these names)
# --------------------------------------------------------------------------------------

def check_nfe(name: str, nfe) -> int:
    """Validate the NFE for solver `name` (dedicated or RK tableau); returns it as an int.

    ddim, dpm++2m: any NFE >= 1. edm: odd NFE >= 1 (NFE = 2N - 1 for N sigmas).
    RK tableaus: a multiple of the number of stages."""
    if isinstance(nfe, bool) or not isinstance(nfe, numbers.Real) or int(nfe) != nfe or nfe < 1:
        raise ValueError(f"NFE must be a positive integer, got {nfe!r}")
    nfe = int(nfe)
    if name == "edm":
        if nfe % 2 == 0:
            raise ValueError(f"edm needs an odd NFE (2N - 1 for N sigmas, e.g. {nfe - 1} or {nfe + 1}), got {nfe}")
    elif name in TABLEAUS:
        st = TABLEAUS[name].stages
        if nfe % st:
            raise ValueError(f"{name} uses {st} evaluations per step: NFE must be a multiple of {st}, got {nfe}")
    elif name not in DEDICATED:
        raise ValueError(f"unknown solver {name!r}; known: {list(DEDICATED) + sorted(TABLEAUS)}")
    return nfe


def default_grid(name: str, path: Optional[GaussianPath], nfe: int) -> Tensor:
    """The time grid each solver uses by default: uniform in t (RK, DDIM), uniform in log-SNR
    (DPM-Solver++), EDM's rho grid mapped to t (EDM; n = (nfe + 1) / 2 sigmas)."""
    nfe = check_nfe(name, nfe)
    if name in TABLEAUS:
        return uniform_grid(nfe // TABLEAUS[name].stages)
    if path is None:
        raise ValueError(f"solver {name!r} needs a Gaussian path")
    if name == "ddim":
        return uniform_grid(nfe)
    if name == "dpm++2m":
        return logsnr_grid(path, nfe, kind=DPM_GRID)
    return edm_grid(path, (nfe + 1) // 2)


def sample_dedicated(name: str, field: VelocityField, x0: Tensor, nfe: int,
                     callback: Optional[StepCallback] = None) -> SolveResult:
    """Sample with dedicated solver `name` in {"ddim", "dpm++2m", "edm"} at `nfe` evaluations,
    on its default grid. The callback gets one StepInfo per solver step."""
    if name not in DEDICATED:
        raise ValueError(f"unknown dedicated solver {name!r}; known: {list(DEDICATED)}")
    nfe = check_nfe(name, nfe)
    path = _need_path(field)
    if name == "ddim":
        return ddim_sample(field, x0, uniform_grid(nfe), callback)
    if name == "dpm++2m":
        return dpmpp2m_sample(field, x0, logsnr_grid(path, nfe, kind=DPM_GRID), callback)
    return edm_sample(field, x0, (nfe + 1) // 2, callback=callback)


def build_scheme(name: str, nfe: int, path: Optional[GaussianPath] = None,
                 time_grid: Optional[Tensor] = None) -> LinearScheme:
    """Solver `name` (an RK tableau name or a dedicated solver) at `nfe` evaluations as a
    LinearScheme, on its default grid or on `time_grid` (not for edm, whose grid is its sigmas)."""
    nfe = check_nfe(name, nfe)
    if name in TABLEAUS:
        grid = uniform_grid(nfe // TABLEAUS[name].stages) if time_grid is None else time_grid
        if check_grid(grid).numel() - 1 != nfe // TABLEAUS[name].stages:
            raise ValueError(f"time grid has {grid.numel() - 1} steps, NFE {nfe} needs {nfe // TABLEAUS[name].stages}")
        return rk_scheme(grid, get_tableau(name))
    if path is None:
        raise ValueError(f"solver {name!r} needs a model with a Gaussian path")
    if name == "edm":
        if time_grid is not None:
            raise ValueError("edm's grid is its sigma schedule; time_grid must be None")
        return edm_scheme(path, (nfe + 1) // 2)
    grid = default_grid(name, path, nfe) if time_grid is None else check_grid(time_grid)
    if grid.numel() - 1 != nfe:
        raise ValueError(f"time grid has {grid.numel() - 1} steps, NFE {nfe} needs {nfe}")
    return ddim_scheme(path, grid) if name == "ddim" else dpmpp2m_scheme(path, grid)
