"""Linear schemes: RK methods as schemes equal the tableau sampler; the runner's contract."""
import pytest
import torch

from core.solvers.base import rk_sample, uniform_grid
from core.solvers.linear import LinearScheme, run_scheme, rk_scheme


def _x0(n=32, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun", "rk4"])
def test_rk_scheme_equals_tableau_sampler(method, mixture_ot):
    grid = torch.tensor([0.0, 0.1, 0.35, 0.6, 0.8, 1.0], dtype=torch.float64)  # non-uniform on purpose
    x0 = _x0()
    ref = rk_sample(mixture_ot, x0, grid, method)
    sch = rk_scheme(grid, method)
    got = run_scheme(sch, mixture_ot, x0)
    assert got.nfe == ref.nfe == sch.nfe
    torch.testing.assert_close(got.x, ref.x, rtol=1e-13, atol=1e-13)


def test_midpoint_coefficients_match_math_md():
    """docs/MATH.md §4.3: grid of half steps; a = 1; half-step rows: h on earlier odd nodes and
    h/2 on its own node; full-step rows: h on the odd nodes."""
    n = 3
    h = 1 / n
    sch = rk_scheme(uniform_grid(n), "midpoint")
    torch.testing.assert_close(sch.t, torch.linspace(0, 1, 2 * n + 1, dtype=torch.float64))
    torch.testing.assert_close(sch.A, torch.ones(2 * n + 1, dtype=torch.float64))
    B = torch.zeros(2 * n + 1, 2 * n, dtype=torch.float64)
    for k in range(1, 2 * n + 1):
        for j in range(1, k, 2):
            B[k, j] = h
        if k % 2 == 1:
            B[k, k - 1] = h / 2
    torch.testing.assert_close(sch.B, B, rtol=0, atol=1e-15)


def test_euler_coefficients():
    sch = rk_scheme(uniform_grid(4), "euler")
    assert sch.strictly_increasing and sch.nfe == 4
    torch.testing.assert_close(sch.B, torch.tril(torch.full((5, 4), 0.25, dtype=torch.float64), -1))


def test_scheme_validation():
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    A = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="lower-triangular"):
        LinearScheme("bad", t, A, torch.ones(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-decreasing"):
        LinearScheme("bad", torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64), A, torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"A must be \(3,\)"):
        LinearScheme("bad", t, torch.ones(2, dtype=torch.float64), torch.zeros(3, 2, dtype=torch.float64))


def test_runner_is_differentiable_and_calls_back(mixture_ot):
    sch = rk_scheme(uniform_grid(4), "euler")
    A = sch.A.clone().requires_grad_(True)
    B = sch.B.clone().requires_grad_(True)
    seen = []
    out = run_scheme(LinearScheme("x", sch.t, A, B), mixture_ot, _x0(8), callback=seen.append)
    out.x.square().sum().backward()
    assert [s.i for s in seen] == [0, 1, 2, 3] and seen[-1].t_next == 1.0
    assert A.grad.abs().sum() > 0
    # only the used (strictly lower) part of B gets gradient, and all of it does
    used = torch.ones_like(B, dtype=torch.bool).tril(-1)
    assert (B.grad[used] != 0).all() and (B.grad[~used] == 0).all()


def test_inference_fast_path_equals_differentiable_path(mixture_ot, f64):
    """run_scheme under no_grad (one buffer, a GEMV per step) == the autograd path."""
    from core.paths import CondOTPath
    from core.solvers.dedicated import build_scheme
    from core.solvers.linear import run_scheme
    x0 = torch.randn(33, 2)
    for name in ("euler", "midpoint", "dpm++2m", "ddim"):
        scheme = build_scheme(name, 8, CondOTPath())
        slow = run_scheme(scheme, mixture_ot, x0)
        seen = []
        with torch.no_grad():
            fast = run_scheme(scheme, mixture_ot, x0, callback=seen.append)
        torch.testing.assert_close(fast.x, slow.x, rtol=1e-12, atol=1e-12)
        assert [s.i for s in seen] == list(range(8)) and torch.equal(seen[-1].x_next, fast.x)


def test_a_scheme_moves_to_a_dtype_whole():
    s = rk_scheme(uniform_grid(3), "midpoint")
    f = s.to(dtype=torch.float32)
    assert f.name == s.name and (f.t.dtype, f.A.dtype, f.B.dtype) == (torch.float32,) * 3
    for a, b in ((f.t, s.t), (f.A, s.A), (f.B, s.B)):
        torch.testing.assert_close(a, b.float(), rtol=0, atol=0)


def test_scheme_builder_refuses_a_state_that_uses_a_later_velocity():
    from core.solvers.linear import SchemeBuilder
    sb = SchemeBuilder(2)
    u0 = sb.eval(0.0, sb.x0)
    sb.eval(0.5, sb.x0 + u0 * 0.5)
    with pytest.raises(RuntimeError, match="^scheme declared 2 evaluations but asks for more$"):
        sb.eval(0.75, sb.x0)
    from core.solvers.linear import Lin
    sb = SchemeBuilder(2)
    u0 = sb.eval(0.0, sb.x0)
    with pytest.raises(RuntimeError, match="^a state may only depend on earlier velocities$"):
        sb.eval(0.5, sb.x0 + u0 + Lin.u(1, 2))  # velocity 1 is the one this evaluation makes
