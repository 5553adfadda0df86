"""The k-diffusion-style sampler: the denoiser field against exact Gaussian-data velocities, the
sampler against core's own solve from the same noise, and (the sigma convention) DDIM / EDM run
through it against k-diffusion's sample_euler / sample_heun.

The k-diffusion package is not installed (k-diffusion 0.1.1.post1 from PyPI downgrades numpy to
1.26.4 and pulls torchvision, wandb, clip and more), so its two samplers are copied below from
k_diffusion/sampling.py of that release with their defaults (s_churn = 0: no noise added)."""
import inspect
import math

import pytest
import torch

from core.analytic import gaussian_data_field
from core.integrations.k_diffusion import (bespoke_sigmas, denoiser_field, make_sampler, path_sigmas,
                                           sample_bespoke)
from core.paths import CondOTPath, CosinePath, VPPath, get_path
from core.solvers.bespoke import bespoke_from_family
from core.solvers.bns import BNSSolver
from core.solvers.dedicated import build_scheme, ddim_scheme, edm_scheme
from core.solvers.base import uniform_grid
from tests.helpers import perturbed

F64 = torch.float64
MEAN = torch.tensor([0.7, -0.4], dtype=F64)
C = 0.3


def denoiser(x, sigma):
    """The exact k-diffusion denoiser of data N(MEAN, C^2 I): E[x1 | x1 + sigma eps = x]."""
    s = sigma.reshape(-1, *([1] * (x.dim() - 1)))
    return MEAN + (C**2 / (C**2 + s**2)) * (x - MEAN)


def flow_denoiser(x, sigma):
    """The exact denoiser of N(MEAN, C^2 I) in ComfyUI's flow convention: E[x1 | (1 - sigma) x1 + sigma eps = x]."""
    s = sigma.reshape(-1, *([1] * (x.dim() - 1)))
    var = (1 - s) ** 2 * C**2 + s**2
    return MEAN + ((1 - s) * C**2 / var) * (x - (1 - s) * MEAN)


# --- k-diffusion 0.1.1.post1, k_diffusion/sampling.py (s_churn = 0; trange -> range) -------------
def _to_d(x, sigma, denoised):
    return (x - denoised) / sigma


def kd_sample_euler(model, x, sigmas, extra_args=None, callback=None):
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma_hat = sigmas[i]
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = _to_d(x, sigma_hat, denoised)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigma_hat, 'denoised': denoised})
        dt = sigmas[i + 1] - sigma_hat
        x = x + d * dt
    return x


def kd_sample_heun(model, x, sigmas, extra_args=None, callback=None):
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma_hat = sigmas[i]
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = _to_d(x, sigma_hat, denoised)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigma_hat, 'denoised': denoised})
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = model(x_2, sigmas[i + 1] * s_in, **extra_args)
            d_2 = _to_d(x_2, sigmas[i + 1], denoised_2)
            d_prime = (d + d_2) / 2
            x = x + d_prime * dt
    return x


def kd_get_sigmas_karras(n, sigma_min, sigma_max, rho=7.):
    ramp = torch.linspace(0, 1, n, dtype=F64)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros([1])])
# -------------------------------------------------------------------------------------------------


def _noise(n=128, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("path", [CondOTPath(), CosinePath(), VPPath()], ids=lambda p: p.name)
def test_denoiser_field_equals_exact_velocity(path):
    exact = gaussian_data_field(path, MEAN, C)
    field = denoiser_field(denoiser, path, (2,), sigma_max=1000.0)
    x = _noise(32)
    for t in (0.02, 0.3, 0.6, 0.97):  # sigma(t) < 1000 at all of these: no clamp
        assert float(path_sigmas(path, torch.tensor(t))) < 1000
        tt = torch.tensor(t, dtype=F64)
        torch.testing.assert_close(field(tt, x), exact(tt, x), rtol=1e-10, atol=1e-10)
    t_b = torch.linspace(0.05, 0.95, 32, dtype=F64)
    torch.testing.assert_close(field(t_b, x), exact(t_b, x), rtol=1e-10, atol=1e-10)


def test_sigma_max_clamp_asks_the_denoiser_at_sigma_max():
    """Below t(sigma_max) the denoiser sees sigma_max and x rescaled to that noise level."""
    seen = []
    path = CondOTPath()
    field = denoiser_field(lambda x, s: seen.append((x, s)) or denoiser(x, s), path, (2,), sigma_max=10.0)
    x = _noise(4)
    field(torch.tensor(0.0, dtype=F64), x)  # sigma(0) = inf -> 10, x_ve = x * 10 / sigma_0
    torch.testing.assert_close(seen[-1][1], torch.full((4,), 10.0, dtype=F64))
    torch.testing.assert_close(seen[-1][0], 10.0 * x)
    field(torch.tensor(0.5, dtype=F64), x)  # sigma = 1 < 10: unclamped, x_ve = x / alpha
    torch.testing.assert_close(seen[-1][1], torch.ones(4, dtype=F64))
    torch.testing.assert_close(seen[-1][0], 2.0 * x)


def test_field_is_held_over_the_last_instant():
    """At t = 1 (sigma_t = 0, where dopri5 evaluates) a denoiser with D(x, 0) != x would give an
    infinite velocity; the field holds its value at 1 - 1e-5 instead."""
    def off(x, sigma):
        return denoiser(x, sigma) + 0.01 * torch.sin(3 * x)

    for path in ("fm-ot", "eps-vp"):
        field = denoiser_field(off, path, (2,), sigma_max=80.0)
        x = _noise(8)
        end = field(torch.tensor(1.0, dtype=F64), x)
        assert torch.isfinite(end).all()
        torch.testing.assert_close(end, field(torch.tensor(1 - 1e-5, dtype=F64), x), rtol=0, atol=0)


def _cases():
    ot, vp = CondOTPath(), VPPath()
    bns = BNSSolver(6, sigma0=2.0, path=vp)
    bns.init_from("dpm++2m", gaussian_data_field(vp, MEAN, C))
    bns_ot = BNSSolver(5, path=ot)
    bns_ot.init_from("ddim", gaussian_data_field(ot, MEAN, C))
    return [("rk1-bespoke/fm-ot", perturbed(bespoke_from_family("rk1-bespoke", 5)), "fm-ot", 80.0),
            ("rk2-bespoke/fm-ot", perturbed(bespoke_from_family("rk2-bespoke", 6)), "fm-ot", 80.0),
            ("rk2-bespoke/fm-cs", perturbed(bespoke_from_family("rk2-bespoke", 4)), "fm-cs", 14.6),
            ("rk2-bespoke/eps-vp", perturbed(bespoke_from_family("rk2-bespoke", 8)), "eps-vp", None),
            ("bns/eps-vp", perturbed(bns, 0.02), None, None),
            ("bns/fm-ot", perturbed(bns_ot, 0.02), None, 80.0)]


@pytest.mark.parametrize("case", range(6))
def test_sampler_equals_core_solve(case):
    name, solver, path, sigma_max = _cases()[case]
    sig = bespoke_sigmas(solver, path, sigma_max)
    assert sig.numel() == solver.nfe + 1 and float(sig[-1]) == 0.0 and bool((sig[1:] < sig[:-1]).all())
    eps = _noise()
    x = eps * sig[0]
    got = sample_bespoke(denoiser, x, sig, solver=solver, path=path, sigma_max=sigma_max, disable=True)
    p = get_path(path) if path else solver.path
    field = denoiser_field(denoiser, p, (2,), sigma_max)
    start = float(p(torch.tensor(0.0, dtype=F64)).sigma)  # x_0 = sigma_0 x / sigmas[0]
    with torch.no_grad():
        ref = solver.solve(field, start * eps).x
    err = float((got - ref).abs().max())
    assert err < 1e-12, (name, err)
    # and make_sampler is the same function with k-diffusion's signature
    fn = make_sampler(solver, path, sigma_max)
    assert list(inspect.signature(fn).parameters) == ["model", "x", "sigmas", "extra_args", "callback", "disable"]
    assert torch.equal(fn(denoiser, x, sig, disable=True), got)


def test_ddim_through_the_sampler_is_k_diffusion_euler():
    """Euler in sigma on the VE ODE is DDIM: the DDIM scheme (as a BNS solver on eps-VP, which
    starts at a finite sigma(0)) through sample_bespoke equals k-diffusion's sample_euler on the
    same sigmas, step by step (the callbacks agree too)."""
    vp = VPPath()
    solver = BNSSolver(7, path=vp)
    solver.init_from_scheme(ddim_scheme(vp, uniform_grid(7)))
    sig = bespoke_sigmas(solver)
    torch.testing.assert_close(sig, path_sigmas(vp, uniform_grid(7)))
    x = _noise() * sig[0]
    ours, theirs = [], []
    got = sample_bespoke(denoiser, x, sig, callback=ours.append, disable=True, solver=solver)
    ref = kd_sample_euler(denoiser, x, sig, callback=theirs.append)
    # x starts at sigma ~ 152 (|x| up to ~500): agreement to ~1e-12 of that scale
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)
    assert [d["i"] for d in ours] == list(range(7))
    for a, b in zip(ours, theirs):
        assert float(a["sigma"]) == float(b["sigma"]) and float(a["sigma_hat"]) == float(b["sigma_hat"])
        torch.testing.assert_close(a["x"], b["x"], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(a["denoised"], b["denoised"], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("n", [3, 6])
def test_edm_scheme_through_the_sampler_is_k_diffusion_heun(n):
    """EDM's Heun sampler as a linear scheme (2n - 1 evaluations, repeated times) through
    sample_bespoke equals k-diffusion's sample_heun on get_sigmas_karras(n, 0.002, 80)."""
    vp = VPPath()
    scheme = edm_scheme(vp, n)
    sig = bespoke_sigmas(scheme, vp)
    karras = kd_get_sigmas_karras(n, 0.002, 80.0)
    torch.testing.assert_close(torch.unique_consecutive(sig), karras, rtol=1e-10, atol=1e-12)
    x = _noise() * 80.0
    got = sample_bespoke(denoiser, x, sig, disable=True, solver=scheme, path=vp)
    ref = kd_sample_heun(denoiser, x, karras)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_converges_to_the_exact_sample():
    """A fine DPM-Solver++(2M) scheme through the sampler lands on the exact ODE solution from
    its start x_0 = sigma_0 eps (k-diffusion's x at sigma = 0 is our x at t = 1): errors 2.9e-3,
    1.6e-4 at 50, 200 steps (order 2)."""
    vp = VPPath()
    eps = _noise(64)
    p0 = vp(torch.tensor(0.0, dtype=F64))
    x_start = p0.sigma * eps
    exact = MEAN + C * (x_start - p0.alpha * MEAN) / torch.sqrt(p0.alpha**2 * C**2 + p0.sigma**2)
    errs = []
    for n in (50, 200):
        # the sigma-range grid ends at t = 1 (Lu et al.'s, the default on VP, stops at 1 - 1e-3)
        from core.solvers.dedicated import logsnr_grid
        scheme = build_scheme("dpm++2m", n, vp, time_grid=logsnr_grid(vp, n, kind="sigma"))
        sig = bespoke_sigmas(scheme, vp)
        got = sample_bespoke(denoiser, eps * sig[0], sig, disable=True, solver=scheme, path=vp)
        errs.append(float((got - exact).abs().max()))
    assert errs[1] < 3e-4 and errs[1] < errs[0] / 10, errs


@pytest.mark.parametrize("path", [CondOTPath(), CosinePath(), VPPath()], ids=lambda p: p.name)
def test_flow_convention_field_equals_exact_velocity(path):
    """convention="flow": sigma(t) = sigma_t / (alpha_t + sigma_t) is finite at t = 0 (no sigma_max)."""
    exact = gaussian_data_field(path, MEAN, C)
    field = denoiser_field(flow_denoiser, path, (2,), convention="flow")
    x = _noise(32)
    for t in (0.0, 0.3, 0.6, 0.97):
        tt = torch.tensor(t, dtype=F64)
        torch.testing.assert_close(field(tt, x), exact(tt, x), rtol=1e-10, atol=1e-10)


def test_flow_convention_on_fm_ot_is_euler_in_t():
    """On FM-OT the flow convention is sigma = 1 - t and x the same: Euler on a grid through
    sample_bespoke is k-diffusion's sample_euler on sigmas = 1 - grid, from the same x = eps."""
    grid = torch.tensor([0.0, 0.2, 0.45, 0.7, 0.9, 1.0], dtype=F64)
    scheme = build_scheme("euler", 5, CondOTPath(), time_grid=grid)
    sig = bespoke_sigmas(scheme, "fm-ot", convention="flow")
    torch.testing.assert_close(sig, 1 - grid, rtol=0, atol=1e-15)
    eps = _noise()
    got = sample_bespoke(flow_denoiser, eps * sig[0], sig, solver=scheme, path="fm-ot", convention="flow",
                         disable=True)
    torch.testing.assert_close(got, kd_sample_euler(flow_denoiser, eps * sig[0], sig), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family", ["rk2-bespoke", "bns"])
def test_flow_convention_sampler_equals_core_solve(family):
    ot = CondOTPath()
    if family == "bns":
        solver = BNSSolver(6, sigma0=1.5, path=ot)
        solver.init_from("dpm++2m", gaussian_data_field(ot, MEAN, C))
        solver = perturbed(solver, 0.02)
    else:
        solver = perturbed(bespoke_from_family("rk2-bespoke", 6))
    sig = bespoke_sigmas(solver, "fm-ot", convention="flow")
    eps = _noise()
    got = make_sampler(solver, "fm-ot", convention="flow")(flow_denoiser, eps * sig[0], sig, disable=True)
    with torch.no_grad():
        ref = solver.solve(denoiser_field(flow_denoiser, ot, (2,), convention="flow"), eps).x
    assert float((got - ref).abs().max()) < 1e-12


def test_make_sampler_from_a_solver_file(tmp_path):
    """A solver trained on a denoiser field, saved, and bound from its file: same samples; the file
    is refused for another model id or another guidance scale."""
    from core.checkpoint import CheckpointError
    from core.solvers.learned import save_solver
    field = denoiser_field(denoiser, "fm-ot", (2,), sigma_max=80.0, model_id="my-denoiser-v1")
    solver = perturbed(bespoke_from_family("rk2-bespoke", 4))
    f = tmp_path / "rk2b4.safetensors"
    save_solver(solver, f, field)
    sig = bespoke_sigmas(solver, "fm-ot", 80.0)
    x = _noise() * sig[0]
    fn = make_sampler(str(f), "fm-ot", 80.0, model_id="my-denoiser-v1")
    assert fn.solver.nfe == 4
    ref = sample_bespoke(denoiser, x, sig, solver=solver, path="fm-ot", sigma_max=80.0, disable=True)
    assert float((fn(denoiser, x, sig, disable=True) - ref).abs().max()) < 1e-15
    with pytest.raises(CheckpointError, match="trained for model my-denois"):
        make_sampler(str(f), "fm-ot", 80.0, model_id="another-model")
    with pytest.raises(CheckpointError, match="guidance scale"):
        make_sampler(str(f), "fm-ot", 80.0, guidance_scale=3.0)


def test_extra_args_reach_the_model():
    seen = {}

    def model(x, sigma, cond=None):
        seen["cond"] = cond
        return denoiser(x, sigma)

    solver = bespoke_from_family("rk1-bespoke", 3)
    sig = bespoke_sigmas(solver, "fm-ot", 80.0)
    sample_bespoke(model, _noise(4) * 80, sig, extra_args={"cond": "a cat"}, disable=True, solver=solver,
                   path="fm-ot", sigma_max=80.0)
    assert seen["cond"] == "a cat"


def test_refusals():
    solver = bespoke_from_family("rk2-bespoke", 4)
    sig = bespoke_sigmas(solver, "fm-ot", 80.0)
    x = _noise(4) * 80
    with pytest.raises(ValueError, match="does not record the Gaussian path"):
        bespoke_sigmas(solver)
    with pytest.raises(ValueError, match="sigma = inf on path fm-ot; pass sigma_max"):
        bespoke_sigmas(solver, "fm-ot")
    with pytest.raises(ValueError, match="alpha_0 = 0"):
        denoiser_field(denoiser, "fm-ot", (2,))
    with pytest.raises(ValueError, match="unknown sigma convention 'const'"):
        bespoke_sigmas(solver, "fm-ot", convention="const")
    with pytest.raises(ValueError, match="sigma_max must be a positive finite number"):
        bespoke_sigmas(solver, "fm-ot", math.inf)
    with pytest.raises(ValueError, match="trained for NFE 4: it needs its 5 sigmas"):
        sample_bespoke(denoiser, x, bespoke_sigmas(bespoke_from_family("rk2-bespoke", 6), "fm-ot", 80.0),
                       solver=solver, path="fm-ot", sigma_max=80.0)
    wrong = sig.clone()
    wrong[2] *= 1.1
    with pytest.raises(ValueError, match="are not rk2-bespoke@4's learned grid"):
        sample_bespoke(denoiser, x, wrong, solver=solver, path="fm-ot", sigma_max=80.0)
    with pytest.raises(ValueError, match="are not rk2-bespoke@4's learned grid"):  # another sigma_max
        sample_bespoke(denoiser, x, sig, solver=solver, path="fm-ot", sigma_max=20.0)
    bns = BNSSolver(4, path=CondOTPath())
    with pytest.raises(ValueError, match="trained on path"):
        make_sampler(bns, "eps-vp", 80.0)
    gbns = BNSSolver(4, path=VPPath(), guidance_scale=2.0)
    with pytest.raises(ValueError, match="guidance scale 2.0"):
        sample_bespoke(denoiser, x, bespoke_sigmas(gbns), solver=gbns, disable=True)
    out = sample_bespoke(denoiser, x, bespoke_sigmas(gbns), solver=gbns, disable=True, guidance_scale=2.0)
    assert torch.isfinite(out).all()
