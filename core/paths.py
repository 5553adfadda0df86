"""Gaussian probability paths, prediction-type conversion and scale-time (ST) maps.

Convention (docs/MATH.md section 0): t = 0 is noise, t = 1 is data, and
    x_t = alpha_t x1 + sigma_t x0,   alpha_0 = 0, sigma_0 = 1, alpha_1 = 1, sigma_1 = 0.

A path returns a small `PathCoefficients` record (alpha, sigma and their time derivatives),
mirroring facebookresearch/flow_matching's schedulers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

VelocityFn = Callable[[Tensor, Tensor], Tensor]

PREDICTIONS = ("velocity", "eps", "x1")
CONVERTIBLE_PREDICTIONS = PREDICTIONS + ("v",)
"""What `velocity_from_prediction` converts: PREDICTIONS plus "v" = alpha eps - sigma x1 (the
v-prediction of Salimans & Ho, diffusers' "v_prediction"), met in imported models."""


@dataclass(frozen=True)
class PathCoefficients:
    """alpha_t, sigma_t and d/dt of each, all tensors shaped like t."""

    alpha: Tensor
    sigma: Tensor
    d_alpha: Tensor
    d_sigma: Tensor


def _as_tensor(t, like: Tensor | None = None) -> Tensor:
    if isinstance(t, Tensor):
        return t
    dtype = like.dtype if like is not None else torch.get_default_dtype()
    device = like.device if like is not None else None
    return torch.as_tensor(t, dtype=dtype, device=device)


class GaussianPath:
    """x_t = alpha_t x1 + sigma_t x0 with a strictly increasing SNR alpha_t / sigma_t."""

    name: str = "path"

    def __call__(self, t) -> PathCoefficients:
        raise NotImplementedError

    def snr(self, t) -> Tensor:
        c = self(t)
        return c.alpha / c.sigma

    def snr_inverse(self, rho: Tensor) -> Tensor:
        """The time t at which alpha_t / sigma_t = rho."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"name": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()})"


class CondOTPath(GaussianPath):
    """FM-OT (conditional optimal transport): alpha_t = t, sigma_t = 1 - t."""

    name = "fm-ot"

    def __call__(self, t) -> PathCoefficients:
        t = _as_tensor(t)
        return PathCoefficients(t, 1 - t, torch.ones_like(t), -torch.ones_like(t))

    def snr_inverse(self, rho: Tensor) -> Tensor:
        return rho / (1 + rho)


class CosinePath(GaussianPath):
    """FM/v-CS: alpha_t = sin(pi t / 2), sigma_t = cos(pi t / 2)."""

    name = "fm-cs"

    def __call__(self, t) -> PathCoefficients:
        t = _as_tensor(t)
        a = 0.5 * math.pi
        return PathCoefficients(torch.sin(a * t), torch.cos(a * t), a * torch.cos(a * t), -a * torch.sin(a * t))

    def snr_inverse(self, rho: Tensor) -> Tensor:
        return torch.atan(rho) / (0.5 * math.pi)


class VPPath(GaussianPath):
    """eps-VP (Song et al. 2020 VP SDE) in the t = 0 noise direction.

    alpha_t = xi(1 - t), sigma_t = sqrt(1 - xi(1 - t)^2),
    xi(s) = exp(-s^2 (beta_max - beta_min) / 4 - s beta_min / 2).
    Note alpha_0 = xi(1) ~ 0.0067 (not exactly 0): the source is almost, not exactly, pure noise.
    """

    name = "eps-vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    def __call__(self, t) -> PathCoefficients:
        t = _as_tensor(t)
        s = 1 - t
        db = self.beta_max - self.beta_min
        xi = torch.exp(-(s**2) * db / 4 - s * self.beta_min / 2)
        d_xi_ds = xi * (-s * db / 2 - self.beta_min / 2)
        alpha = xi
        d_alpha = -d_xi_ds  # ds/dt = -1
        sigma = torch.sqrt(torch.clamp(1 - xi**2, min=1e-20))
        d_sigma = -alpha * d_alpha / sigma
        return PathCoefficients(alpha, sigma, d_alpha, d_sigma)

    def snr_inverse(self, rho: Tensor) -> Tensor:
        # xi = rho / sqrt(1 + rho^2); solve a s^2 + b s + log(xi) = 0 for s = 1 - t >= 0.
        xi = rho / torch.sqrt(1 + rho**2)
        a = (self.beta_max - self.beta_min) / 4
        b = self.beta_min / 2
        c = torch.log(xi)
        s = (-b + torch.sqrt(b * b - 4 * a * c)) / (2 * a)
        return 1 - s

    def to_dict(self) -> dict:
        return {"name": self.name, "beta_min": self.beta_min, "beta_max": self.beta_max}


class ScaledOTPath(GaussianPath):
    """alpha_r = r, sigma_r = sigma0 (1 - r): the BNS preconditioning target (docs/MATH.md §4.5).

    sigma0 = 1 is FM-OT itself.
    """

    name = "scaled-ot"

    def __init__(self, sigma0: float = 1.0):
        if not (sigma0 > 0 and math.isfinite(sigma0)):
            raise ValueError(f"sigma0 must be a positive finite number, got {sigma0!r}")
        self.sigma0 = float(sigma0)

    def __call__(self, t) -> PathCoefficients:
        t = _as_tensor(t)
        return PathCoefficients(t, self.sigma0 * (1 - t), torch.ones_like(t), -self.sigma0 * torch.ones_like(t))

    def snr_inverse(self, rho: Tensor) -> Tensor:
        return self.sigma0 * rho / (1 + self.sigma0 * rho)

    def to_dict(self) -> dict:
        return {"name": self.name, "sigma0": self.sigma0}


class EDMPath(GaussianPath):
    """The variance-exploding path that EDM's sampler walks (alpha = 1, sigma = sigma_EDM(r)).

    sigma_EDM(r) = (sigma_max^(1/rho) + r (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho
    (Karras et al. 2022, eq. 5 with r = i / (N - 1)). It does not reach sigma = 0 or infinity,
    so as an ST map it covers t in [t(sigma_max), t(sigma_min)] rather than exactly [0, 1].
    """

    name = "edm"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0):
        self.sigma_min, self.sigma_max, self.rho = float(sigma_min), float(sigma_max), float(rho)

    def __call__(self, t) -> PathCoefficients:
        t = _as_tensor(t)
        a, b = self.sigma_max ** (1 / self.rho), self.sigma_min ** (1 / self.rho)
        base = a + t * (b - a)
        sigma = base**self.rho
        d_sigma = self.rho * (b - a) * base ** (self.rho - 1)
        return PathCoefficients(torch.ones_like(t), sigma, torch.zeros_like(t), d_sigma)

    def snr_inverse(self, rho: Tensor) -> Tensor:
        a, b = self.sigma_max ** (1 / self.rho), self.sigma_min ** (1 / self.rho)
        return ((1 / rho) ** (1 / self.rho) - a) / (b - a)

    def to_dict(self) -> dict:
        return {"name": self.name, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "rho": self.rho}


class DiscreteVPPath(GaussianPath):
    """A discrete-time VP diffusion schedule (DDPM / DDIM / DPM-Solver configs) in continuous time.

    From num_train_timesteps N betas (computed in float32 exactly as diffusers does: "linear",
    "scaled_linear", "squaredcos_cap_v2", or trained_betas), alphas_cumprod = cumprod(1 - beta)
    and the VE noise levels sigma_ve[n] = sqrt((1 - acp[n]) / acp[n]), n = 0..N-1. Our time t maps
    to the discrete timestep tau = (N - 1) - N t, so t = 0 is tau = N - 1 (the noisiest step,
    alpha_0 = sqrt(acp[N-1]) > 0 as on eps-VP) and a grid uniform in t is diffusers' "trailing"
    spacing. Between integer steps log sigma_ve is interpolated (k-diffusion's DiscreteSchedule
    interpolates it linearly; we use a C1 monotone cubic through the same values, so every
    integer step is exact and the path has a continuous derivative); on tau in [-1, 0] sigma_ve
    falls to 0 along a quadratic, so t = 1 (tau = -1) is the data, alpha = 1 and sigma = 0
    (diffusers' "final alpha_cumprod = 1").
    alpha_t = 1 / sqrt(1 + sigma_ve^2), sigma_t = sigma_ve alpha_t; the derivatives are exact on
    each piece (one-sided at integer tau). All of it is computed in float64 from the table.
    """

    name = "vp-discrete"
    BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas: list | None = None):
        n = num_train_timesteps
        if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= 100_000:
            raise ValueError(f"num_train_timesteps must be an integer in [2, 100000], got {n!r}")
        self.num_train_timesteps = n
        self.beta_start, self.beta_end, self.beta_schedule = float(beta_start), float(beta_end), str(beta_schedule)
        self.trained_betas = None if trained_betas is None else [float(b) for b in trained_betas]
        if self.trained_betas is not None:
            if len(self.trained_betas) != n:
                raise ValueError(f"trained_betas has {len(self.trained_betas)} values, num_train_timesteps is {n}")
            betas = torch.tensor(self.trained_betas, dtype=torch.float32)
        elif self.beta_schedule == "linear":
            betas = torch.linspace(self.beta_start, self.beta_end, n, dtype=torch.float32)
        elif self.beta_schedule == "scaled_linear":
            betas = torch.linspace(self.beta_start**0.5, self.beta_end**0.5, n, dtype=torch.float32) ** 2
        elif self.beta_schedule == "squaredcos_cap_v2":
            def abar(s: float) -> float:
                return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
            betas = torch.tensor([min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)],
                                 dtype=torch.float32)
        else:
            raise ValueError(f"unknown beta_schedule {self.beta_schedule!r}; known: {list(self.BETA_SCHEDULES)}")
        if not (torch.isfinite(betas).all() and (betas > 0).all() and (betas < 1).all()):
            raise ValueError("betas must lie in (0, 1)")
        acp = torch.cumprod(1.0 - betas, dim=0).to(torch.float64)  # float32 cumprod, as diffusers
        if not bool((acp > 0).all()):
            raise ValueError("alphas_cumprod reaches 0 (a zero-terminal-SNR schedule): not supported")
        self.alphas_cumprod = acp
        ls = 0.5 * torch.log((1 - acp) / acp)  # increasing in tau
        if not bool((ls[1:] > ls[:-1]).all()):
            raise ValueError("the noise level must increase with the timestep (betas > 0)")
        self.log_sigmas = ls
        # Slopes of a C1 monotone cubic (Fritsch-Carlson): central differences, limited so that
        # no piece overshoots. C1 matters: dopri5 crawls across 1000 kinks of a piecewise-linear
        # interpolant (measured on Gaussian data at atol = rtol = 1e-8: 15x the NFE, and an error that
        # stayed at 3e-4 where the C1 path reaches 3e-6).
        d = ls[1:] - ls[:-1]
        m = torch.cat([d[:1], 0.5 * (d[1:] + d[:-1]), d[-1:]])
        m = torch.minimum(m, 3 * torch.cat([d, d[-1:]]))
        self.slopes = torch.minimum(m, 3 * torch.cat([d[:1], d]))
        sv0, k = math.exp(float(ls[0])), float(self.slopes[0])  # tail: q(1) = sv0, q'(1) = sv0 k, q' > 0
        k = min(k, 2.0)
        self._tail = (sv0 * (k - 1), sv0 * (2 - k))

    def timestep(self, t) -> Tensor:
        """The (continuous) discrete-time index tau = (N - 1) - N t; t = 1 is tau = -1."""
        t = _as_tensor(t)
        return (self.num_train_timesteps - 1) - self.num_train_timesteps * t.to(torch.float64)

    def t_of_timestep(self, tau) -> Tensor:
        return ((self.num_train_timesteps - 1) - _as_tensor(tau).to(torch.float64)) / self.num_train_timesteps

    def _pieces(self, tau: Tensor):
        """Piece index i, local coordinate w in [0, 1] and the cubic's data on [i, i + 1]."""
        n, ls, m = self.num_train_timesteps, self.log_sigmas.to(tau.device), self.slopes.to(tau.device)
        i = tau.floor().clamp(0, n - 2).long()
        return i, tau - i, ls[i], ls[i + 1], m[i], m[i + 1]

    def _sigma_ve(self, tau: Tensor) -> tuple[Tensor, Tensor]:
        """sigma_ve(tau) and d sigma_ve / d tau, float64."""
        n = self.num_train_timesteps
        tau = tau.clamp(-1.0, n - 1.0)
        i, w, y0, y1, m0, m1 = self._pieces(tau)
        w2, w3 = w * w, w * w * w
        h00, h10, h01, h11 = 2 * w3 - 3 * w2 + 1, w3 - 2 * w2 + w, -2 * w3 + 3 * w2, w3 - w2
        ls = h00 * y0 + h10 * m0 + h01 * y1 + h11 * m1
        dls = (6 * w2 - 6 * w) * (y0 - y1) + (3 * w2 - 4 * w + 1) * m0 + (3 * w2 - 2 * w) * m1
        sv = torch.exp(ls)
        dsv = sv * dls
        # tau in [-1, 0]: the quadratic q(v) = a v^2 + b v, v = tau + 1, with q(1) = sigma_ve[0] and q'(1)
        # matching the cubic's slope at tau = 0 (C1 there too).
        a, b = self._tail
        v = tau + 1
        low = tau < 0
        sv = torch.where(low, a * v * v + b * v, sv)
        dsv = torch.where(low, 2 * a * v + b, dsv)
        return sv, dsv

    def __call__(self, t) -> PathCoefficients:
        t = _as_tensor(t)
        sv, dsv_dtau = self._sigma_ve(self.timestep(t))
        dsv = -self.num_train_timesteps * dsv_dtau
        q = 1 + sv * sv
        alpha = q.rsqrt()
        sigma = sv * alpha
        d_alpha = -sv * dsv * alpha / q
        d_sigma = dsv * alpha / q
        return PathCoefficients(*(v.to(t.dtype) for v in (alpha, sigma, d_alpha, d_sigma)))

    def snr_inverse(self, rho: Tensor) -> Tensor:
        """Differentiable in rho: Newton without gradients, then one step with them (the implicit
        derivative d tau / d log sigma_ve = 1 / (d log sigma_ve / d tau))."""
        rho = _as_tensor(rho)
        logsv = -torch.log(rho.to(torch.float64).clamp(1e-300, 1e300))
        n, ls = self.num_train_timesteps, self.log_sigmas.to(logsv.device)
        with torch.no_grad():
            target = logsv.detach()
            i = (torch.searchsorted(ls, target.reshape(-1).contiguous()).reshape(target.shape) - 1).clamp(0, n - 2)
            tau = (i + (target - ls[i]) / (ls[i + 1] - ls[i])).clamp(0.0, n - 1.0)  # the linear guess
            lo, hi = i.to(tau.dtype), (i + 1).to(tau.dtype)
            for _ in range(30):  # Newton on the monotone cubic piece
                val, dval = self._sigma_ve(tau)
                step = (torch.log(val) - target) / (dval / val)
                tau = torch.minimum(torch.maximum(tau - step, lo), hi)
                if float(step.abs().max()) < 1e-13:
                    break
            val, dval = self._sigma_ve(tau)
        tau = tau + (logsv - torch.log(val)) * (val / dval)
        a, b = self._tail  # tau in [-1, 0]: a v^2 + b v = sigma_ve, v = tau + 1
        sv = torch.exp(torch.minimum(logsv, ls[0]))
        v = 2 * sv / (b + torch.sqrt(b * b + 4 * a * sv))
        tau = torch.where(logsv <= ls[0], v - 1, tau).clamp(-1.0, n - 1.0)
        return self.t_of_timestep(tau).to(rho.dtype if rho.is_floating_point() else torch.float64)

    def to_dict(self) -> dict:
        d = {"name": self.name, "num_train_timesteps": self.num_train_timesteps}
        if self.trained_betas is not None:
            d["trained_betas"] = self.trained_betas
        else:
            d.update(beta_start=self.beta_start, beta_end=self.beta_end, beta_schedule=self.beta_schedule)
        return d


_PATHS = {"fm-ot": CondOTPath, "fm-cs": CosinePath, "eps-vp": VPPath, "scaled-ot": ScaledOTPath, "edm": EDMPath,
          "vp-discrete": DiscreteVPPath}


def get_path(spec: str | dict | GaussianPath) -> GaussianPath:
    """A path from its name ("fm-ot", "fm-cs", "eps-vp", ...) or its `to_dict()` form."""
    if isinstance(spec, GaussianPath):
        return spec
    name = spec if isinstance(spec, str) else spec.get("name") if isinstance(spec, dict) else spec
    if name not in _PATHS:
        raise ValueError(f"unknown Gaussian path {name!r}; known: {sorted(_PATHS)}")
    if isinstance(spec, str):
        spec = {"name": spec}
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    try:
        return _PATHS[spec["name"]](**kwargs)
    except TypeError as e:
        raise ValueError(f"bad arguments for path {spec['name']!r}: {kwargs!r} ({e})") from None


# --------------------------------------------------------------------------------------
# Prediction type -> velocity (docs/MATH.md §1.2)
# --------------------------------------------------------------------------------------

def prediction_coefficients(path: GaussianPath, prediction: str, t: Tensor) -> tuple[Tensor, Tensor]:
    """(beta_t, gamma_t) such that u_t(x) = beta_t x + gamma_t f_t(x)."""
    c = path(t)
    if prediction == "velocity":
        return torch.zeros_like(c.alpha), torch.ones_like(c.alpha)
    if prediction == "eps":
        alpha = torch.clamp(c.alpha, min=1e-6)
        return c.d_alpha / alpha, (c.d_sigma * c.alpha - c.sigma * c.d_alpha) / alpha
    if prediction == "x1":
        sigma = torch.clamp(c.sigma, min=1e-6)
        return c.d_sigma / sigma, (c.d_alpha * c.sigma - c.alpha * c.d_sigma) / sigma
    if prediction == "v":  # x1 = (alpha x - sigma v) / n, eps = (sigma x + alpha v) / n, n = alpha^2 + sigma^2
        n = c.alpha**2 + c.sigma**2
        return (c.d_alpha * c.alpha + c.d_sigma * c.sigma) / n, (c.d_sigma * c.alpha - c.d_alpha * c.sigma) / n
    raise ValueError(f"unknown prediction type {prediction!r}; known: {CONVERTIBLE_PREDICTIONS}")


def _bcast(coef: Tensor, x: Tensor) -> Tensor:
    """Broadcast a scalar or (B,) coefficient against x of shape (B, *D)."""
    coef = coef.to(dtype=x.dtype, device=x.device)
    if coef.dim() == 0:
        return coef
    return coef.reshape(coef.shape[0], *([1] * (x.dim() - 1)))


def velocity_from_prediction(f: VelocityFn, path: GaussianPath, prediction: str) -> VelocityFn:
    """Turn a network f(t, x) predicting velocity, eps, x1 or v into a velocity field u(t, x)."""
    if prediction not in CONVERTIBLE_PREDICTIONS:
        raise ValueError(f"unknown prediction type {prediction!r}; known: {CONVERTIBLE_PREDICTIONS}")
    if prediction == "velocity":
        return f

    def u(t: Tensor, x: Tensor) -> Tensor:
        t = _as_tensor(t, x)
        beta, gamma = prediction_coefficients(path, prediction, t)
        return _bcast(beta, x) * x + _bcast(gamma, x) * f(t, x)

    return u


def x1_from_velocity(path: GaussianPath, t: Tensor, x: Tensor, u: Tensor) -> Tensor:
    """Data prediction x1_hat = (sigma u - sigma' x) / (alpha' sigma - alpha sigma')."""
    c = path(_as_tensor(t, x))
    den = c.d_alpha * c.sigma - c.alpha * c.d_sigma
    return (_bcast(c.sigma / den, x) * u) - _bcast(c.d_sigma / den, x) * x


def eps_from_velocity(path: GaussianPath, t: Tensor, x: Tensor, u: Tensor) -> Tensor:
    """Noise prediction eps_hat = (alpha' x - alpha u) / (alpha' sigma - alpha sigma')."""
    c = path(_as_tensor(t, x))
    den = c.d_alpha * c.sigma - c.alpha * c.d_sigma
    return _bcast(c.d_alpha / den, x) * x - _bcast(c.alpha / den, x) * u


# --------------------------------------------------------------------------------------
# Scale-time transformations (docs/MATH.md section 2)
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class STMap:
    """A scale-time map evaluated at r: t_r, s_r and their r-derivatives dt_r, ds_r."""

    t: Tensor
    s: Tensor
    dt: Tensor
    ds: Tensor


def st_transform(u: VelocityFn, st: Callable[[Tensor], STMap]) -> VelocityFn:
    """u_bar_r(x) = (s'_r / s_r) x + t'_r s_r u_{t_r}(x / s_r)   (Bespoke eq. 16)."""

    def u_bar(r: Tensor, x: Tensor) -> Tensor:
        m = st(_as_tensor(r, x))
        s, ds, dt = _bcast(m.s, x), _bcast(m.ds, x), _bcast(m.dt, x)
        return (ds / s) * x + dt * s * u(m.t.to(x.dtype), x / s)

    return u_bar


def path_st_map(path: GaussianPath, target: GaussianPath, r, normalize: bool = False) -> STMap:
    """The ST map taking `path` to `target` (Bespoke Theorem 2.3, docs/MATH.md §2.3).

    t_r = rho^{-1}(rho_bar(r)), s_r = sigma_bar_r / sigma_{t_r} (= alpha_bar_r / alpha_{t_r});
    the alpha ratio is used where sigma is small (near t = 1) for stability. With
    normalize=True s is divided by s_0 so that s_0 = 1 (needed when target's sigma_bar_0 != 1).
    """
    r = _as_tensor(r)
    cb = target(r)
    at_end = cb.sigma <= 0  # rho_bar = inf: the data end, t = 1
    rho_bar = cb.alpha / torch.where(at_end, torch.ones_like(cb.sigma), cb.sigma)
    t = torch.where(at_end, torch.ones_like(r), path.snr_inverse(rho_bar)).clamp(0.0, 1.0)
    c = path(t)
    use_alpha = c.sigma < c.alpha  # ratio of alphas near t = 1, of sigmas near t = 0
    one = torch.ones_like(c.sigma)
    s = torch.where(use_alpha, cb.alpha / torch.where(use_alpha, c.alpha, one),
                    cb.sigma / torch.where(use_alpha, one, c.sigma))
    # t'_r = rho_bar'(r) / rho'(t_r) with rho' = (alpha' sigma - alpha sigma') / sigma^2, written
    # with sigma^2 / sigma_bar^2 = 1 / s^2 so that it stays finite at the data end.
    dt = (cb.d_alpha * cb.sigma - cb.alpha * cb.d_sigma) / (c.d_alpha * c.sigma - c.alpha * c.d_sigma) / s**2
    # s'_r: differentiate whichever ratio is used.
    ds_sig = (cb.d_sigma * c.sigma - cb.sigma * c.d_sigma * dt) / torch.where(use_alpha, one, c.sigma**2)
    ds_alp = (cb.d_alpha * c.alpha - cb.alpha * c.d_alpha * dt) / torch.where(use_alpha, c.alpha**2, one)
    ds = torch.where(use_alpha, ds_alp, ds_sig)
    if normalize:
        s0 = path_st_map(path, target, torch.zeros((), dtype=r.dtype), normalize=False).s
        s, ds = s / s0, ds / s0
    return STMap(t, s, dt, ds)


def change_of_path(u: VelocityFn, path: GaussianPath, target: GaussianPath) -> VelocityFn:
    """The VF of the same model on `target`'s path: x_bar(r) = s_r x(t_r) (Theorem 2.3)."""
    return st_transform(u, lambda r: path_st_map(path, target, r))
