"""A k-diffusion-style sampler that runs a learned solver, and its sigmas.

k-diffusion's convention (Karras et al. 2022): x = x1 + sigma * eps (variance exploding), the
model is a denoiser D(x, sigma) ~ E[x1 | x], a schedule is a decreasing tensor of sigmas ending
in 0, sampling starts from x = randn * sigmas[0], and every sampler is
`sample_x(model, x, sigmas, extra_args=None, callback=None, disable=None)`. ComfyUI runs the
same samplers on flow models (SD3, FLUX: its "CONST" sampling) with x = (1 - sigma) x1 + sigma
eps, sigma in [0, 1]: convention="flow" here. Both have dx/dsigma = (x - D(x, sigma)) / sigma.

Ours: x_t = alpha_t x1 + sigma_t x0 on a Gaussian path (t = 0 noise, t = 1 data). The two meet
at the boundary, nowhere else (a scale-time change, docs/MATH.md section 2.3), with
k_t = alpha_t ("ve") or alpha_t + sigma_t ("flow"):

    sigma(t) = sigma_t / k_t  (decreasing in t, 0 at t = 1),    x_t = k_t x_their,
    u_t(x) = (sigma'_t / sigma_t) x + ((alpha'_t sigma_t - alpha_t sigma'_t) / sigma_t) D(x / k_t, sigma(t))

(the data-prediction form of the velocity). On FM-OT, "flow" is the identity: sigma = 1 - t.
In "ve" on FM-OT and FM/v-CS alpha_0 = 0, so t = 0, where every learned solver starts, is
sigma = inf, which a denoiser cannot take: pass `sigma_max` (the largest sigma your denoiser
knows, e.g. 80 for EDM models, 14.6 for Stable Diffusion 1.x). Where sigma(t) > sigma_max the
denoiser is asked at sigma_max instead, with x rescaled to its noise level:
D(x * sigma_max / sigma_t, sigma_max). This is part of the field (`denoiser_field`): train the
solver on that field and the sampler runs the same one.

- `denoiser_field(model, path, data_shape, sigma_max, convention)`: the denoiser as a
  VelocityField, to train a Bespoke / BNS solver on (core.train.train_solver).
- `bespoke_sigmas(solver, path, sigma_max, convention)`: the learned evaluation times as sigmas
  (NFE + 1, ending in 0; one sigma per model evaluation, RK2-Bespoke's half steps included). A
  grid alone loses Bespoke's scales and BNS's coefficients: another sampler on it is not the
  learned solver.
- `sample_bespoke(model, x, sigmas, extra_args, callback, disable, solver=..., path=...,
  sigma_max=..., convention=...)` and `make_sampler(solver, ...)`, which binds the keywords and
  has exactly k-diffusion's signature. x = randn * sigmas[0] as for any k-diffusion sampler; the
  solver starts from x_0 = sigma_{t_0} x / sigmas[0] (= k_{t_0} x where sigmas[0] is not
  clamped), runs its linear scheme exactly as core does (core.solvers.linear.run_scheme), and
  returns x at sigma = 0.

Nothing here imports the k-diffusion package.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..field import VelocityField
from ..model_io import T_EDGE
from ..paths import GaussianPath, _bcast, get_path, velocity_from_prediction
from ..solvers.base import StepInfo
from ..solvers.bns import BNSSolver
from ..solvers.learned import load_solver
from ..solvers.linear import run_scheme
from .scheme import SchemeLike, check_nfe, learned_scheme


def _check_sigma_max(sigma_max) -> Optional[float]:
    if sigma_max is None:
        return None
    if isinstance(sigma_max, bool) or not isinstance(sigma_max, (int, float)) or not (
            math.isfinite(sigma_max) and sigma_max > 0):
        raise ValueError(f"sigma_max must be a positive finite number, got {sigma_max!r}")
    return float(sigma_max)


CONVENTIONS = ("ve", "flow")


def _check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown sigma convention {convention!r}: 've' (k-diffusion, x = x1 + sigma eps) or 'flow' "
                         f"(ComfyUI's flow models, x = (1 - sigma) x1 + sigma eps)")
    return convention


def path_sigmas(path: GaussianPath, t: Tensor, sigma_max: Optional[float] = None, convention: str = "ve") -> Tensor:
    """sigma(t) = sigma_t / alpha_t ("ve") or sigma_t / (alpha_t + sigma_t) ("flow"); inf where
    the denominator is 0, 0 at t = 1; clamped to sigma_max."""
    t = torch.as_tensor(t, dtype=torch.float64)
    c = path(t)
    k = c.alpha if _check_convention(convention) == "ve" else c.alpha + c.sigma
    sig = torch.where(k > 0, c.sigma / torch.where(k > 0, k, torch.ones_like(k)), torch.full_like(t, math.inf))
    sig = torch.where((c.sigma <= 0) | (t >= 1), torch.zeros_like(sig), sig)  # cos(pi / 2) is 6e-17, not 0
    return sig if sigma_max is None else sig.clamp(max=sigma_max)


def _resolve_path(solver: SchemeLike, path) -> GaussianPath:
    """The Gaussian path the solver's times refer to: a BNS solver records it; else `path`."""
    own = solver.path if isinstance(solver, BNSSolver) else None
    given = None if path is None else get_path(path)
    if own is not None and given is not None and own.to_dict() != given.to_dict():
        raise ValueError(f"this BNS solver was trained on path {own.to_dict()}, not {given.to_dict()}")
    got = own if own is not None else given
    if got is None:
        raise ValueError(f"{getattr(solver, 'name', 'this solver')} does not record the Gaussian path of the field it "
                         f"was trained on; pass path= (e.g. 'fm-ot', the path given to denoiser_field)")
    return got


def bespoke_sigmas(solver: SchemeLike, path=None, sigma_max: Optional[float] = None, convention: str = "ve") -> Tensor:
    """The solver's evaluation times t_0..t_{m-1} and final time t_m = 1 as k-diffusion sigmas
    (float64, NFE + 1 values, decreasing, ending in 0); the input `sample_bespoke` expects.
    path: the Gaussian path of the field the solver was trained on (a BNS solver records it).
    sigma_max: clamps the sigmas (needed in "ve" where the path has alpha_0 = 0, sigma(0) = inf).
    convention: "ve" (k-diffusion) or "flow" (ComfyUI's flow models), see the module docstring."""
    sigma_max = _check_sigma_max(sigma_max)
    path = _resolve_path(solver, path)
    scheme = learned_scheme(solver)
    sig = path_sigmas(path, scheme.t, sigma_max, convention)
    if not math.isfinite(float(sig[0])):
        raise ValueError(f"{getattr(solver, 'name', 'this solver')} starts at t = {float(scheme.t[0])}, where "
                         f"sigma = inf on path {path.name}; pass sigma_max (the largest sigma the denoiser knows, "
                         f"e.g. 80 for EDM models)")
    return sig


def denoiser_field(model: Callable, path, data_shape: Sequence[int], sigma_max: Optional[float] = None,
                   extra_args: Optional[dict[str, Any]] = None, convention: str = "ve", data_range: float = 2.0,
                   model_id: str = "k-diffusion", guidance_scale: Optional[float] = None,
                   on_denoised: Optional[Callable[[Tensor], None]] = None) -> VelocityField:
    """A k-diffusion denoiser D(x, sigma) (called as model(x, sigma * ones(B), **extra_args)) as a
    velocity field u(t, x) on `path`; where sigma(t) > sigma_max the denoiser is asked at sigma_max
    (see the module docstring). model_id / guidance_scale: recorded in solver checkpoints trained on
    it (guidance_scale is whatever guidance the denoiser has baked in). on_denoised gets every D
    output (the sampler uses it for its callback). Times are clamped to t <= 1 - 1e-5 (the
    conversion divides by sigma_t), as core.load_model does for eps / x1 networks."""
    path = get_path(path)
    sigma_max = _check_sigma_max(sigma_max)
    if not math.isfinite(float(path_sigmas(path, torch.zeros((), dtype=torch.float64), sigma_max, convention))):
        raise ValueError(f"path {path.name} has alpha_0 = 0: t = 0 is sigma = inf, which a denoiser cannot take; "
                         f"pass sigma_max (the largest sigma the denoiser knows, e.g. 80 for EDM models)")
    extra = dict(extra_args or {})
    shape = tuple(int(d) for d in data_shape)

    def x1_hat(t: Tensor, x: Tensor) -> Tensor:
        t = t.to(x.dtype)
        c = path(t)
        sig = path_sigmas(path, t, sigma_max, convention).to(x.dtype)
        # x_their = x * sigma(t) / sigma_t: x / k_t where not clamped, x * sigma_max / sigma_t where clamped.
        pos, one = c.sigma > 0, torch.ones_like(c.sigma)  # (safe denominators: no inf in either branch)
        scale = torch.where(pos, sig / torch.where(pos, c.sigma, one), 1 / torch.where(pos, one, c.alpha))
        sig_b = sig.expand(x.shape[0]) if sig.dim() == 0 else sig
        d = model(_bcast(scale, x) * x, sig_b, **extra)
        if on_denoised is not None:
            on_denoised(d)
        return d

    u_x1 = velocity_from_prediction(x1_hat, path, "x1")

    def u(t: Tensor, x: Tensor) -> Tensor:
        # The x1 -> velocity conversion divides by sigma_t, 0 at t = 1, where the ground truth's
        # dopri5 evaluates: held over the last 1e-5 of time, as core.load_model does.
        return u_x1(t.clamp(max=1 - T_EDGE), x)

    meta = {"source": "k-diffusion", "convention": convention, "sigma_max": sigma_max, "extra_args": sorted(extra),
            "t_clamp": [0.0, 1 - T_EDGE]}
    return VelocityField(u, shape, path=path, data_range=data_range, model_id=model_id,
                         guidance_scale=guidance_scale, meta=meta)


def _check_sigmas(sigmas, expected: Tensor, solver: SchemeLike) -> None:
    got = torch.as_tensor(sigmas).detach().to("cpu", torch.float64).flatten()
    name = getattr(solver, "name", "this solver")
    if got.numel() != expected.numel():
        raise ValueError(f"{name} was trained for NFE {expected.numel() - 1}: it needs its {expected.numel()} sigmas "
                         f"(bespoke_sigmas), got {got.numel()} sigmas ({got.numel() - 1} steps)")
    if not torch.allclose(got, expected, rtol=1e-4, atol=1e-6):
        raise ValueError(f"sigmas {[round(v, 6) for v in got.tolist()]} are not {name}'s learned grid "
                         f"{[round(v, 6) for v in expected.tolist()]}; make them with bespoke_sigmas(solver, ...) "
                         f"(same path and sigma_max)")


def sample_bespoke(model: Callable, x: Tensor, sigmas: Tensor, extra_args: Optional[dict[str, Any]] = None,
                   callback: Optional[Callable[[dict], None]] = None, disable: Optional[bool] = None, *,
                   solver: SchemeLike, path=None, sigma_max: Optional[float] = None, convention: str = "ve",
                   guidance_scale: Optional[float] = None) -> Tensor:
    """Sample with a learned solver as a k-diffusion sampler (see the module docstring).

    model: the denoiser D(x, sigma); x: randn * sigmas[0], (B, *D); sigmas: bespoke_sigmas(solver,
    path, sigma_max, convention), refused if it is another grid or another NFE; callback gets, per
    model evaluation i, {"x", "i", "sigma", "sigma_hat", "denoised"} with x in the sampler's own
    variable; disable: turns the progress bar off. Returns x at sigma = 0 (the sample)."""
    sigma_max = _check_sigma_max(sigma_max)
    path = _resolve_path(solver, path)
    check_nfe(solver, None)
    scheme = learned_scheme(solver)
    expected = bespoke_sigmas(solver, path, sigma_max, convention)
    _check_sigmas(sigmas, expected, solver)
    denoised: list[Tensor] = []
    field = denoiser_field(model, path, x.shape[1:], sigma_max, extra_args, convention,
                           guidance_scale=guidance_scale, on_denoised=denoised.append)
    if isinstance(solver, BNSSolver):
        solver.check_field(field)
    c = path(scheme.t)
    sig, sig_t = expected.tolist(), c.sigma.tolist()
    k_t = (c.alpha if convention == "ve" else c.alpha + c.sigma).tolist()

    def to_ours(k: int, x_their: Tensor) -> Tensor:
        return x_their * (sig_t[k] / sig[k]) if sig[k] > 0 else x_their * k_t[k]

    def to_theirs(k: int, x_t: Tensor) -> Tensor:
        return x_t * (sig[k] / sig_t[k]) if sig[k] > 0 else x_t / k_t[k]

    noise = to_ours(0, x) / float(scheme.A[0])
    bar = tqdm(total=scheme.nfe, disable=disable)
    given = torch.as_tensor(sigmas).flatten()

    def step(info: StepInfo) -> None:
        bar.update(1)
        if callback is not None:
            s = given[info.i]
            callback({"x": to_theirs(info.i, info.x), "i": info.i, "sigma": s, "sigma_hat": s,
                      "denoised": denoised[-1]})

    try:
        res = run_scheme(scheme, field, noise, step)
    finally:
        bar.close()
    return to_theirs(scheme.nfe, res.x)


def make_sampler(solver, path=None, sigma_max: Optional[float] = None, convention: str = "ve",
                 guidance_scale: Optional[float] = None, model_id: Optional[str] = None) -> Callable[..., Tensor]:
    """sample_bespoke with the solver bound: a function with k-diffusion's sampler signature
    `(model, x, sigmas, extra_args=None, callback=None, disable=None)`.

    solver: a Bespoke / BNS solver, a LinearScheme, or a saved solver file (path or bytes). A file
    is refused if it was trained for another model (model_id: the one given to denoiser_field when
    the solver was trained; its header's "model_id") or another guidance scale."""
    if isinstance(solver, (str, os.PathLike, bytes, bytearray)):
        solver, _ = load_solver(solver, field=VelocityField(lambda t, x: x, (1,), model_id=model_id,
                                                            guidance_scale=guidance_scale))
    bespoke_sigmas(solver, path, sigma_max, convention)  # refuse a solver without a path, or sigma = inf, now

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        return sample_bespoke(model, x, sigmas, extra_args, callback, disable, solver=solver, path=path,
                              sigma_max=sigma_max, convention=convention, guidance_scale=guidance_scale)

    sample.__name__ = sample.__qualname__ = f"sample_{getattr(solver, 'name', 'scheme').replace('@', '_')}"
    sample.solver = solver
    return sample
