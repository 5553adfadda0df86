"""Dedicated Gaussian-path solvers (DDIM, DPM-Solver++(2M), EDM): scheme == natural form,
NFE, errors, convergence and order on exact and analytic problems."""
import functools
import math

import numpy as np
import pytest
import torch

from core.analytic import gaussian_data_field, gaussian_data_solution, mixture_field
from core.field import VelocityField
from core.paths import CondOTPath, CosinePath, VPPath
from core.solvers.base import rk_sample, uniform_grid
from core.solvers.dedicated import (DPM_GRID, DPM_T_EPS, build_scheme, check_nfe, ddim_sample, dpmpp2m_sample,
                                    edm_grid, edm_sample, edm_sigmas, logsnr_grid, sample_dedicated)
from core.solvers.gt import gt_solve
from core.solvers.linear import run_scheme

PATHS = [CondOTPath(), CosinePath(), VPPath()]
MEAN, C = torch.tensor([0.5, -0.3], dtype=torch.float64), 0.3


def _x0(n=64, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _gaussian_exact(path, x0, t=1.0):
    """Exact x(t) of gaussian_data_field from x(0) = x0 (alpha_0 may be > 0, as on eps-VP)."""
    p0 = path(torch.tensor(0.0, dtype=torch.float64))
    z = (x0 - p0.alpha * MEAN) / torch.sqrt(p0.alpha**2 * C**2 + p0.sigma**2)
    return gaussian_data_solution(path, MEAN, C, z, t)


def _rmse(a, b):
    return ((a - b) ** 2).mean().sqrt().item()


def _slope(nfes, errs):
    return -np.polyfit(np.log(nfes), np.log(errs), 1)[0]


class Counting:
    def __init__(self, field):
        self.field, self.n = field, 0
        self.path = field.path

    def __call__(self, t, x):
        self.n += 1
        return self.field(t, x)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
@pytest.mark.parametrize("name,nfes", [("ddim", [1, 2, 5]), ("dpm++2m", [1, 2, 3, 6]), ("edm", [1, 3, 7])])
def test_scheme_equals_natural_solver(path, name, nfes):
    means = torch.tensor([[1.0, 1.0], [-1.0, 0.5], [0.0, -1.0]], dtype=torch.float64)
    field = mixture_field(path, means, 0.3)
    x0 = _x0()
    for nfe in nfes:
        counted = Counting(field)
        ref = sample_dedicated(name, counted, x0, nfe)
        sch = build_scheme(name, nfe, path)
        got = run_scheme(sch, field, x0)
        assert ref.nfe == got.nfe == sch.nfe == counted.n == nfe
        torch.testing.assert_close(got.x, ref.x, rtol=1e-12, atol=1e-12)


def test_callback_once_per_step():
    field = gaussian_data_field(CondOTPath(), MEAN, C)
    for name, nfe, steps in [("ddim", 5, 5), ("dpm++2m", 5, 5), ("edm", 5, 3)]:
        seen = []
        sample_dedicated(name, field, _x0(4), nfe, callback=seen.append)
        assert [s.i for s in seen] == list(range(steps)) and seen[-1].t_next == 1.0


def test_ddim_is_euler_on_fm_ot():
    """A known identity: DDIM on the FM-OT path is the Euler method."""
    field = mixture_field(CondOTPath(), torch.tensor([[1.0, 1.0], [-1.0, 0.0]], dtype=torch.float64), 0.2)
    x0 = _x0()
    torch.testing.assert_close(sample_dedicated("ddim", field, x0, 7).x, rk_sample(field, x0, uniform_grid(7), "euler").x,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_ddim_exact_for_a_point_mass(path):
    """For data = one point (c = 0) DDIM is exact in any number of steps, from t = 0."""
    field = gaussian_data_field(path, MEAN, 0.0)
    x0 = _x0()
    exact = MEAN + 0 * x0  # x(1) = m, whatever x0
    for nfe in (1, 3):
        steps = []
        out = sample_dedicated("ddim", field, x0, nfe, callback=steps.append).x
        torch.testing.assert_close(out, exact, rtol=1e-9, atol=1e-9)  # eps-VP clamps sigma_1 to 1e-10
        # nfe uniform steps from t = 0 to t = 1, the first from x0 itself
        assert [float(s.t) for s in steps] == pytest.approx([k / nfe for k in range(nfe)], abs=1e-12)
        assert [float(s.t_next) for s in steps] == pytest.approx([(k + 1) / nfe for k in range(nfe)], abs=1e-12)
        torch.testing.assert_close(steps[0].x, x0, rtol=0, atol=0)


def test_dpm_first_step_is_ddim():
    field = mixture_field(CosinePath(), torch.tensor([[1.0, 1.0], [-1.0, 0.0]], dtype=torch.float64), 0.3)
    x0 = _x0()
    torch.testing.assert_close(sample_dedicated("dpm++2m", field, x0, 1).x, sample_dedicated("ddim", field, x0, 1).x)
    grid = logsnr_grid(CosinePath(), 2)
    torch.testing.assert_close(run_scheme(build_scheme("dpm++2m", 2, CosinePath(), grid), field, x0).x,
                               ddim_sample(field, x0, grid).x)  # 2 steps: first + last are both first order


def test_grids():
    for path in PATHS:
        for g in (logsnr_grid(path, 6), edm_grid(path, 4)):
            assert (g[1:] > g[:-1]).all() and g[-1] == 1.0
        assert logsnr_grid(path, 6)[0] == 0.0
    lam = lambda t: math.log(t / (1 - t))  # FM-OT log-SNR
    g = logsnr_grid(CondOTPath(), 6).tolist()
    d = [lam(b) - lam(a) for a, b in zip(g[1:-2], g[2:-1])]
    assert max(d) - min(d) < 1e-9 and abs(d[0] - (math.log(80) - math.log(0.002)) / 6) < 1e-9
    s = edm_sigmas(5)
    assert abs(s[0] - 80) < 1e-9 and abs(s[-2] - 0.002) < 1e-12 and s[-1] == 0
    t = edm_grid(CondOTPath(), 5)
    torch.testing.assert_close((1 - t[:-1]) / t[:-1], s[:-1])  # sigma_ve = sigma / alpha on FM-OT


def test_errors_name_the_value():
    with pytest.raises(ValueError, match="odd NFE.*got 4"):
        check_nfe("edm", 4)
    for bad in (0, -3, 2.5, True, "8"):
        with pytest.raises(ValueError, match="positive integer"):
            check_nfe("ddim", bad)
    with pytest.raises(ValueError, match="'dpm3'"):
        check_nfe("dpm3", 4)
    with pytest.raises(ValueError, match="multiple of 2, got 5"):
        check_nfe("midpoint", 5)
    no_path = VelocityField(lambda t, x: -x, (2,), model_id="no-path")
    with pytest.raises(ValueError, match="Gaussian path.*no-path"):
        sample_dedicated("ddim", no_path, _x0(2), 4)
    with pytest.raises(ValueError, match="alpha_0 = 0"):
        edm_sample(gaussian_data_field(CondOTPath(), MEAN, C), _x0(2), 3, sigma_max=None)


# ---------------------------------------------------------------------------------------------
# Convergence and order
# ---------------------------------------------------------------------------------------------

ORDER_NFES = {"ddim": [16, 32, 64, 128], "dpm++2m": [16, 32, 64, 128], "edm": [17, 33, 65, 129]}


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
@pytest.mark.parametrize("name,order", [("ddim", 1), ("dpm++2m", 2)])
def test_order_on_gaussian_data(path, name, order):
    field = gaussian_data_field(path, MEAN, C)
    x0 = _x0()
    # DPM-Solver++ on Lu et al.'s grid (the default on eps-VP) ends at t = 1 - 1e-3: its target
    t_end = float(logsnr_grid(path, 4, kind=DPM_GRID)[-1]) if name == "dpm++2m" else 1.0
    exact = _gaussian_exact(path, x0, t_end)
    errs = [_rmse(sample_dedicated(name, field, x0, n).x, exact) for n in ORDER_NFES[name]]
    assert all(b < a for a, b in zip(errs, errs[1:])), errs
    assert abs(_slope(ORDER_NFES[name], errs) - order) < 0.25, errs
    assert errs[-1] < (2e-2 if order == 1 else 1e-3)


def test_edm_order_two_from_exact_start():
    """On eps-VP (alpha_0 > 0) EDM can start exactly at t = 0 (sigma_max = sigma_ve(0)): order 2."""
    path = VPPath()
    field = gaussian_data_field(path, MEAN, C)
    x0 = _x0()
    exact = _gaussian_exact(path, x0)
    nfes = ORDER_NFES["edm"]
    errs = [_rmse(edm_sample(field, x0, (n + 1) // 2, sigma_max=None).x, exact) for n in nfes]
    assert abs(_slope(nfes, errs) - 2) < 0.25 and errs[-1] < 2e-3, errs


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_edm_default_converges_to_its_start_floor(path):
    """With EDM's sigma_max = 80 the start x_ve = 80 x0 drops ~1/80 of the data: a floor."""
    field = gaussian_data_field(path, MEAN, C)
    x0 = _x0()
    exact = _gaussian_exact(path, x0)
    errs = [_rmse(sample_dedicated("edm", field, x0, n).x, exact) for n in (9, 17, 33, 65)]
    assert all(b < a for a, b in zip(errs, errs[1:])) and errs[-1] < 7e-3, errs


@functools.lru_cache(maxsize=None)
def _mixture_problem(path_name):
    """A non-linear analytic field on `path_name`, noise, and its dopri5 GT at tight tolerance."""
    path = {"fm-ot": CondOTPath(), "eps-vp": VPPath()}[path_name]
    means = torch.tensor([[1.0, 1.0], [-1.0, 0.5], [0.0, -1.0]], dtype=torch.float64)
    field = mixture_field(path, means, 0.5)
    x0 = _x0(32)
    return field, x0, gt_solve(field, x0, atol=1e-9, rtol=1e-9, dtype=torch.float64).x


@pytest.mark.parametrize("path", [CondOTPath(), VPPath()], ids=lambda p: p.name)
@pytest.mark.parametrize("name,order", [("ddim", 1), ("dpm++2m", 2), ("edm", 2)])
def test_converges_on_mixture(path, name, order):
    field, x0, exact = _mixture_problem(path.name)
    nfes = ORDER_NFES[name]
    if name == "edm":
        errs = [_rmse(edm_sample(field, x0, (n + 1) // 2, sigma_max=None if path.name == "eps-vp" else 80.0).x, exact)
                for n in nfes]
    else:
        errs = [_rmse(sample_dedicated(name, field, x0, n).x, exact) for n in nfes]
    assert all(b < a for a, b in zip(errs, errs[1:])), errs
    if name == "edm" and path.name == "fm-ot":
        assert errs[-1] < 7e-3, errs  # the sigma_max = 80 start floor
    else:
        assert abs(_slope(nfes, errs) - order) < 0.3, errs


def _lu_dpmpp2m_reference(path, x0, nfe, t_eps=1e-3):
    """DPM-Solver++(2M) written from Lu et al. 2022 (Algorithm 2, data prediction, multistep),
    independently of core.solvers.dedicated: lambda uniform from lambda(t = 0) to
    lambda(t = 1 - eps), first step and last step first order ("lower order final"), the data
    prediction of Gaussian data in closed form, D = m + alpha c^2 / (alpha^2 c^2 + sigma^2) (x - alpha m)."""
    def coef(t):
        p = path(torch.tensor(t, dtype=torch.float64))
        return float(p.alpha), float(p.sigma)
    lam = lambda t: math.log(coef(t)[0] / coef(t)[1])  # noqa: E731
    lams = torch.linspace(lam(0.0), lam(1 - t_eps), nfe + 1, dtype=torch.float64)
    ts = path.snr_inverse(torch.exp(lams)).tolist()
    ts[0], ts[-1] = 0.0, 1 - t_eps
    x, D_prev = x0, None
    for i in range(1, nfe + 1):
        a0, s0 = coef(ts[i - 1])
        a1, s1 = coef(ts[i])
        h = lam(ts[i]) - lam(ts[i - 1])
        D = MEAN + a0 * C**2 / (a0**2 * C**2 + s0**2) * (x - a0 * MEAN)
        if i == 1 or i == nfe:
            Dt = D
        else:
            r = (lam(ts[i - 1]) - lam(ts[i - 2])) / h
            Dt = (1 + 1 / (2 * r)) * D - 1 / (2 * r) * D_prev
        x = (s1 / s0) * x - a1 * math.expm1(-h) * Dt
        D_prev = D
    return x, ts


@pytest.mark.parametrize("nfe", [4, 8, 16])
def test_dpm_published_grid_against_reference(nfe):
    """On eps-VP the default DPM-Solver++(2M) is Lu et al.'s: same grid, same sample."""
    path = VPPath()
    field = gaussian_data_field(path, MEAN, C)
    x0 = _x0()
    ref, ts = _lu_dpmpp2m_reference(path, x0, nfe)
    grid = logsnr_grid(path, nfe, kind="lu")
    torch.testing.assert_close(grid, torch.tensor(ts, dtype=torch.float64), rtol=0, atol=1e-12)
    assert DPM_T_EPS == 1e-3 and logsnr_grid(path, nfe, kind=DPM_GRID).tolist() == grid.tolist()
    torch.testing.assert_close(sample_dedicated("dpm++2m", field, x0, nfe).x, ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(run_scheme(build_scheme("dpm++2m", nfe, path), field, x0).x, ref, rtol=1e-9, atol=1e-9)
    # Alpha_0 = 0 paths (no lambda(0)) keep the sigma-range grid, ending at t = 1
    assert logsnr_grid(CondOTPath(), nfe, kind=DPM_GRID).tolist() == logsnr_grid(CondOTPath(), nfe, kind="sigma").tolist()
