"""Gaussian paths: derivatives, SNR inverse, prediction conversion, ST transform (Theorem 2.3)."""
import pytest
import torch

from core.analytic import gaussian_data_field, gaussian_data_solution
from core.paths import (CondOTPath, CosinePath, EDMPath, ScaledOTPath, VPPath, change_of_path, eps_from_velocity,
                        get_path, path_st_map, velocity_from_prediction, x1_from_velocity)
from core.solvers.base import rk_sample, uniform_grid

PATHS = [CondOTPath(), CosinePath(), VPPath(), ScaledOTPath(3.0)]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_derivatives_match_autograd(path):
    t = torch.linspace(0.02, 0.98, 25, dtype=torch.float64, requires_grad=True)
    c = path(t)
    da, = torch.autograd.grad(c.alpha.sum(), t, retain_graph=True)
    ds, = torch.autograd.grad(c.sigma.sum(), t)
    torch.testing.assert_close(c.d_alpha, da, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(c.d_sigma, ds, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("path", PATHS + [EDMPath()], ids=lambda p: p.name)
def test_snr_inverse_roundtrip(path):
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    torch.testing.assert_close(path.snr_inverse(path.snr(t)), t, rtol=1e-9, atol=1e-9)


def test_endpoints():
    for p in (CondOTPath(), CosinePath()):
        c0, c1 = p(torch.tensor(0.0, dtype=torch.float64)), p(torch.tensor(1.0, dtype=torch.float64))
        assert abs(c0.alpha) < 1e-15 and abs(c0.sigma - 1) < 1e-15 and abs(c1.alpha - 1) < 1e-15 and abs(c1.sigma) < 1e-15
    c0 = VPPath()(torch.tensor(0.0, dtype=torch.float64))
    assert 0.005 < c0.alpha < 0.008  # alpha_0 of eps-VP is ~0.0067, not exactly 0


@pytest.mark.parametrize("path", [CondOTPath(), CosinePath(), VPPath()], ids=lambda p: p.name)
def test_prediction_conversion_roundtrip(path, f64):
    """eps- and x1-predicting networks built from the exact VF give back the same VF."""
    mean = torch.tensor([0.5, -1.0])
    u = gaussian_data_field(path, mean, 0.3)
    eps_net = lambda t, x: eps_from_velocity(path, t, x, u(t, x))
    x1_net = lambda t, x: x1_from_velocity(path, t, x, u(t, x))
    x = torch.randn(7, 2)
    for t in (0.1, 0.5, 0.9):
        t = torch.tensor(t)
        torch.testing.assert_close(velocity_from_prediction(eps_net, path, "eps")(t, x), u(t, x))
        torch.testing.assert_close(velocity_from_prediction(x1_net, path, "x1")(t, x), u(t, x))


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown Gaussian path 'nope'"):
        get_path("nope")
    with pytest.raises(ValueError, match="unknown prediction type 'score'"):
        velocity_from_prediction(lambda t, x: x, CondOTPath(), "score")
    with pytest.raises(ValueError, match="sigma0"):
        ScaledOTPath(-1.0)


@pytest.mark.parametrize("target", [CosinePath(), ScaledOTPath(4.0), VPPath()], ids=lambda p: p.name)
def test_change_of_path_lands_on_same_sample(target, f64):
    """Theorem 2.3: solving the ST-transformed ODE finely gives the same sample (up to s_1)."""
    path = CondOTPath()
    mean = torch.tensor([1.0, -0.5, 0.25])
    u = gaussian_data_field(path, mean, 0.4)
    u_bar = change_of_path(u, path, target)
    x0 = torch.randn(5, 3)
    r0, r1 = 1e-4, 1 - 1e-4  # stay off the singular ends of the maps
    m0, m1 = (path_st_map(path, target, torch.tensor(r)) for r in (r0, r1))
    xbar0 = m0.s * gaussian_data_solution(path, mean, 0.4, x0, m0.t)
    grid = torch.linspace(r0, r1, 401)
    xbar1 = rk_sample(u_bar, xbar0, grid, "rk4").x
    exact = gaussian_data_solution(path, mean, 0.4, x0, m1.t)
    torch.testing.assert_close(xbar1 / m1.s, exact, rtol=1e-6, atol=1e-6)


def test_st_map_derivatives(f64):
    """t'_r and s'_r of path_st_map match finite differences of t_r and s_r."""
    path, target = VPPath(), EDMPath()
    r = torch.linspace(0.1, 0.9, 9)
    e = 1e-6
    m, mp, mm = path_st_map(path, target, r), path_st_map(path, target, r + e), path_st_map(path, target, r - e)
    torch.testing.assert_close(m.dt, (mp.t - mm.t) / (2 * e), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(m.ds, (mp.s - mm.s) / (2 * e), rtol=1e-5, atol=1e-7)


def test_identity_st_map(f64):
    m = path_st_map(CondOTPath(), ScaledOTPath(1.0), torch.linspace(0, 1, 11))
    torch.testing.assert_close(m.t, torch.linspace(0, 1, 11))
    torch.testing.assert_close(m.s, torch.ones(11))
    torch.testing.assert_close(m.dt, torch.ones(11))
    torch.testing.assert_close(m.ds, torch.zeros(11))


def test_discrete_vp_schedule_checks_name_the_problem():
    from core.paths import DiscreteVPPath
    with pytest.raises(ValueError, match=r"^betas must lie in \(0, 1\)$"):
        DiscreteVPPath(num_train_timesteps=3, trained_betas=[0.0, 0.1, 0.2])
    with pytest.raises(ValueError, match=r"^alphas_cumprod reaches 0 \(a zero-terminal-SNR schedule\): not supported$"):
        DiscreteVPPath(num_train_timesteps=200, trained_betas=[0.99] * 200)  # 0.01^200 underflows float32
    # 1 - 1e-12 == 1 in float32: the last step adds no noise (a later step, not only the first)
    with pytest.raises(ValueError, match=r"^the noise level must increase with the timestep \(betas > 0\)$"):
        DiscreteVPPath(num_train_timesteps=3, trained_betas=[0.1, 0.1, 1e-12])


def test_per_sample_times_broadcast_over_the_data_dimensions(f64):
    """A (B,) time vector with x of shape (B, *D): every conversion equals the same call made
    one sample at a time with a scalar time."""
    gen = torch.Generator().manual_seed(3)
    t = torch.tensor([0.1, 0.35, 0.6, 0.9])
    x, u = torch.randn(4, 2, 3, generator=gen), torch.randn(4, 2, 3, generator=gen)

    def net(tt, xx):  # any network output, depending on t per sample
        return xx * 0.5 + (tt.reshape(-1, 1, 1) if tt.dim() else tt)

    for path in (VPPath(), CosinePath(), EDMPath()):
        for fn in (eps_from_velocity, x1_from_velocity):
            rows = torch.stack([fn(path, t[i], x[i:i + 1], u[i:i + 1])[0] for i in range(4)])
            torch.testing.assert_close(fn(path, t, x, u), rows)
        vel = velocity_from_prediction(net, path, "eps")
        rows = torch.stack([vel(t[i], x[i:i + 1])[0] for i in range(4)])
        torch.testing.assert_close(vel(t, x), rows)


def test_st_map_times_are_clamped_to_the_unit_interval(f64):
    """EDM's path spans only sigma in [0.002, 80]: a target SNR outside that range maps to a time
    outside [0, 1] by snr_inverse, which path_st_map clamps to the nearest end."""
    path, target = EDMPath(), CondOTPath()
    r = torch.tensor([0.001, 0.5, 0.9999])  # SNR 0.001 < 1/80 and 9999 > 1/0.002
    raw = path.snr_inverse(target.snr(r))
    assert raw[0] < 0 and raw[-1] > 1  # what is being clamped
    m = path_st_map(path, target, r)
    assert m.t[0] == 0.0 and m.t[-1] == 1.0 and 0 < m.t[1] < 1
    torch.testing.assert_close(m.t[1], raw[1])


def test_discrete_vp_paths_round_trip_and_keep_float32_betas():
    """to_dict / get_path keeps every field; trained betas are float32 like diffusers' whatever the
    default dtype; snr_inverse clamps outside the schedule's range and computes in float64."""
    from core.paths import DiscreteVPPath
    for p in (DiscreteVPPath(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
              DiscreteVPPath(num_train_timesteps=4, trained_betas=[0.1, 0.2, 0.3, 0.4]), EDMPath(rho=5.0)):
        q = get_path(p.to_dict())
        assert q.to_dict() == p.to_dict() and type(q) is type(p)
        t = torch.linspace(0, 1, 7, dtype=torch.float64)
        torch.testing.assert_close(q.snr(t), p.snr(t), rtol=0, atol=0)
    betas = [0.1, 0.2, 0.3, 0.4]
    old = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        p64 = DiscreteVPPath(num_train_timesteps=4, trained_betas=betas)
    finally:
        torch.set_default_dtype(old)
    p32 = DiscreteVPPath(num_train_timesteps=4, trained_betas=betas)
    torch.testing.assert_close(p64.log_sigmas, p32.log_sigmas, rtol=0, atol=0)
    p = DiscreteVPPath()
    assert p.snr_inverse(torch.tensor([1e-12], dtype=torch.float64)).item() == 0.0  # below the schedule's SNR
    rho = p.snr(torch.linspace(0.01, 0.99, 500, dtype=torch.float64)).float()
    torch.testing.assert_close(p.snr_inverse(rho), p.snr_inverse(rho.double()).float(), rtol=0, atol=0)
