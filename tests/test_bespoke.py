"""Bespoke RK1/RK2 solvers: identity == base, consistency (Theorem 2.2), exactness, Lipschitz
bound, the eq. 27 gradient, training, save/load and bad input."""
import math
import threading

import numpy as np
import pytest
import torch

from core.analytic import gaussian_data_field, gaussian_data_solution
from core.checkpoint import CheckpointError
from core.losses import BespokeObjective, reverse_cumprod_weights
from core.paths import CondOTPath, CosinePath, EDMPath, STMap, VPPath, path_st_map
from core.solvers.base import rk_sample, uniform_grid
from core.solvers.bespoke import BespokeSolver, bespoke_from_family
from core.solvers.gt import GTPool, gt_solve
from core.solvers.learned import load_solver, save_solver
from core.solvers.registry import get_solver
from core.train import NonFiniteLossError, SolverSpec, TrainConfig, fit, train_solver


def random_smooth_st(seed):
    """A random admissible, smooth ST map: t_r increasing with t_0 = 0, t_1 = 1; s_r > 0, s_0 = 1."""
    g = torch.Generator().manual_seed(seed)
    a, b, c = (0.6 * (torch.rand(3, generator=g, dtype=torch.float64) - 0.5)).tolist()

    def st(r):
        t = r + a * torch.sin(math.pi * r) / math.pi  # t' = 1 + a cos(pi r) > 0 for |a| < 1
        dt = 1 + a * torch.cos(math.pi * r)
        s = torch.exp(b * torch.sin(math.pi * r / 2) + c * r * r)
        ds = s * (b * math.pi / 2 * torch.cos(math.pi * r / 2) + 2 * c * r)
        return STMap(t, s, dt, ds)
    return st


@pytest.mark.parametrize("order", [1, 2])
def test_identity_init_is_uniform_rk(order, mixture_ot, f64):
    x0 = torch.randn(32, 2)
    for n in (1, 3, 8):
        solver = BespokeSolver(order, n)
        res = solver.solve(mixture_ot, x0)
        ref = rk_sample(mixture_ot, x0, uniform_grid(n), "euler" if order == 1 else "midpoint")
        assert res.nfe == ref.nfe == order * n
        torch.testing.assert_close(res.x, ref.x, rtol=1e-13, atol=1e-13)
        with torch.no_grad():  # the fast inference path gives the same
            torch.testing.assert_close(solver.solve(mixture_ot, x0).x, ref.x, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_admissible_solver_keeps_base_order(order, seed, f64):
    """Theorem 2.2: for any smooth admissible (t_r, s_r) the solver has the base order."""
    path, mean, c = CosinePath(), torch.tensor([1.0, -2.0]), 0.5
    u = gaussian_data_field(path, mean, c)
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))
    exact = gaussian_data_solution(path, mean, c, x0, 1.0)
    steps = [8, 16, 32, 64]
    errs = []
    for n in steps:
        solver = BespokeSolver(order, n).init_from_st(random_smooth_st(seed))
        errs.append((solver.solve(u, x0).x - exact).abs().max().item())
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert slope == pytest.approx(order, abs=0.25), errs


def test_exact_answers_gaussian_and_mixture(mixture_ot, f64):
    path = VPPath()
    mean = torch.tensor([0.5, -0.5])
    u = gaussian_data_field(path, mean, 0.3)
    x0 = torch.randn(16, 2)
    z0 = gaussian_data_solution(path, mean, 0.3, x0, 0.0)
    exact = gaussian_data_solution(path, mean, 0.3, x0, 1.0)
    for order in (1, 2):
        solver = BespokeSolver(order, 200).init_from_st(random_smooth_st(5))
        assert (solver.solve(u, z0).x - exact).abs().max() < (3e-2 if order == 1 else 5e-4)
    gt = gt_solve(mixture_ot, x0, atol=1e-10, rtol=1e-10).x
    solver = BespokeSolver(2, 200).init_from_st(random_smooth_st(6))
    assert (solver.solve(mixture_ot, x0).x - gt).abs().max() < 5e-3


def test_init_from_gaussian_path_is_that_schedule(f64):
    """Init from the cosine path's ST map: RK1-Bespoke on an FM-OT model = Euler on the cosine VF."""
    path, target = CondOTPath(), CosinePath()
    mean = torch.tensor([0.7, -0.2])
    u = gaussian_data_field(path, mean, 0.3)
    solver = BespokeSolver(1, 6).init_from_st(lambda r: path_st_map(path, target, r, normalize=True))
    d = solver.decode()
    r = torch.linspace(0, 1, 7)
    torch.testing.assert_close(d["t"][1:-1], path_st_map(path, target, r).t[1:-1])
    assert (d["t"][1:] > d["t"][:-1]).all()
    # EDM's map (does not reach t = 0 / 1 exactly) also gives an admissible solver.
    edm = BespokeSolver(2, 4).init_from_st(lambda r: path_st_map(path, EDMPath(), r, normalize=True))
    assert torch.isfinite(edm.solve(u, torch.randn(8, 2)).x).all()


def test_parameter_counts():
    assert BespokeSolver(2, 5).num_free_parameters == 39
    assert BespokeSolver(2, 8).num_free_parameters == 63
    assert BespokeSolver(2, 10).num_free_parameters == 79
    assert BespokeSolver(1, 4).num_free_parameters == 15


@pytest.mark.parametrize("order", [1, 2])
def test_lipschitz_bounds_step_sensitivity(order, f64):
    """On u(t, x) = A x with ||A||_2 = L_tau the step's exact operator norm is <= L_i."""
    D, L_tau = 4, 1.7
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    A = L_tau * q  # orthogonal times L: every singular value is L_tau
    u = lambda t, x: x @ A.T
    for seed in range(3):
        solver = BespokeSolver(order, 5)
        with torch.no_grad():
            for p in solver.parameters():
                p.add_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        L = solver.lipschitz(L_tau)
        c = solver.step_coefficients()
        eye = torch.eye(D)
        for k in range(solver.n):
            ck = {key: v[k:k + 1] for key, v in c.items()}
            J = solver.steps(u, eye[None], ck)[0].T  # columns: step of each basis vector
            assert torch.linalg.matrix_norm(J, ord=2) <= L[k] * (1 + 1e-12)


@pytest.mark.parametrize("order", [1, 2])
def test_lipschitz_bound_is_tight_for_a_linear_field_at_identity(order, f64):
    """u(t, x) = L x at identity init: each step is the scalar (1 + hL) (RK1) or
    1 + hL + (hL)^2 / 2 (midpoint) times x, and the bound L_i equals that factor exactly."""
    D, L_tau, n = 3, 2.5, 4
    h = 1.0 / n
    u = lambda t, x: L_tau * x
    solver = BespokeSolver(order, n)
    L = solver.lipschitz(L_tau)
    factor = 1 + h * L_tau if order == 1 else 1 + h * L_tau + (h * L_tau) ** 2 / 2
    torch.testing.assert_close(L, torch.full((n,), factor, dtype=torch.float64), rtol=1e-13, atol=0)
    c = solver.step_coefficients()
    eye = torch.eye(D)
    for k in range(n):
        J = solver.steps(u, eye[None], {key: v[k:k + 1] for key, v in c.items()})[0].T
        assert torch.linalg.matrix_norm(J, ord=2).item() == pytest.approx(L[k].item(), rel=1e-13)


def test_reverse_cumprod_weights():
    L = torch.tensor([2.0, 3.0, 5.0, 7.0])
    # M_i = prod_{j=i}^{n-1} L_j for i = 1..n (eq. 26): steps k = 0..3 get 3*5*7, 5*7, 7, 1.
    torch.testing.assert_close(reverse_cumprod_weights(L), torch.tensor([105.0, 35.0, 7.0, 1.0]))


@pytest.mark.parametrize("order", [1, 2])
def test_time_gradient_matches_finite_differences(order, mixture_ot, f64):
    """eq. 27: with the stop-gradient trick the gradient w.r.t. the learned times is right."""
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    pool = GTPool.build(mixture_ot, x0, n_grid=129, atol=1e-10, rtol=1e-10)
    solver = BespokeSolver(order, 4).init_from_st(random_smooth_st(2))
    obj = BespokeObjective(mixture_ot, pool, pool, lipschitz=1.0, batch_size=64)
    loss = lambda: obj.loss(solver, torch.Generator().manual_seed(1)).mean()
    solver.zero_grad()
    loss().backward()
    grad = solver.raw_t.grad.clone()
    assert grad.abs().max() > 1e-4
    eps = 1e-6
    fd = torch.zeros_like(grad)
    with torch.no_grad():
        for k in range(grad.numel()):
            solver.raw_t[k] += eps
            lp = loss()
            solver.raw_t[k] -= 2 * eps
            lm = loss()
            solver.raw_t[k] += eps
            fd[k] = (lp - lm) / (2 * eps)
    torch.testing.assert_close(grad, fd, rtol=1e-5, atol=1e-8)
    # Gradients reach every parameter.
    for name, p in solver.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_training_halves_rk2_rmse_at_nfe8(mixture_ot):
    cfg = TrainConfig(iters=100, n_train=1024, n_val=256, val_every=20, seed=0, coarse_to_fine=False)
    events = []
    res = train_solver(mixture_ot, SolverSpec("rk2-bespoke", 8), cfg, callback=events.append)
    # Midpoint at NFE 8 on the same validation noise is the identity init. A few samples near the
    # boundaries between the tight modes dominate the mean RMSE; the per-sample PSNR shows the bulk.
    assert res.best["rmse"] <= 0.85 * res.init["rmse"] and res.best["psnr"] >= res.init["psnr"] + 3, (res.init, res.best)
    assert len(events) == 101 and [e.iteration for e in events[:2]] == [0, 1] and events[-1].iteration == 100
    assert events[0].metrics == res.init and math.isnan(events[0].loss)  # the starting point, reported first
    assert sum(e.metrics is not None for e in events) == 6
    assert {"t", "s", "dt", "ds", "time_grid"} <= set(events[0].params)
    # The returned solver keeps most of its gain on fresh noise (validation picks the best of 5).
    x0 = torch.randn(256, 2, generator=torch.Generator().manual_seed(123))
    gt = gt_solve(mixture_ot, x0, atol=1e-7, rtol=1e-7).x
    with torch.no_grad():
        err_learned = (res.solver.solve(mixture_ot, x0).x - gt).pow(2).mean(1).sqrt().mean()
    err_mid = (rk_sample(mixture_ot, x0, uniform_grid(4), "midpoint").x - gt).pow(2).mean(1).sqrt().mean()
    assert err_learned < 0.9 * err_mid


def test_stop_event_stops_cleanly(mixture_ot):
    stop = threading.Event()
    seen = []

    def cb(ev):
        seen.append(ev.iteration)
        if ev.iteration == 5:
            stop.set()
    res = train_solver(mixture_ot, SolverSpec("rk1-bespoke", 4),
                       TrainConfig(iters=500, n_train=128, n_val=64, val_every=2, coarse_to_fine=False), callback=cb,
                       stop_event=stop)
    assert res.stopped and seen[-1] == 5 and res.history[-1]["iteration"] == 5
    validated = {h["iteration"]: h["rmse"] for h in res.history if "rmse" in h}
    assert list(validated) == [0, 2, 4]  # the stop comes before iteration 6's validation
    assert res.best["rmse"] == min(validated.values()) == validated[res.best_iteration]


def test_nan_during_training_raises_and_keeps_last_good(mixture_ot, f64):
    x0 = torch.randn(64, 2)
    pool = GTPool.build(mixture_ot, x0, n_grid=33)
    solver = BespokeSolver(2, 2)
    obj = BespokeObjective(mixture_ot, pool, pool)
    calls = {"n": 0}
    real_loss = obj.loss

    def flaky_loss(s, g):
        calls["n"] += 1
        out = real_loss(s, g)
        return out * math.nan if calls["n"] == 4 else out
    obj.loss = flaky_loss
    with pytest.raises(NonFiniteLossError, match="iteration 4: loss is nan") as e:
        fit(solver, obj, TrainConfig(iters=10, val_every=100))
    assert all(torch.isfinite(p).all() for p in solver.parameters())
    assert e.value.result.history[-1]["iteration"] == 3


def test_save_load_roundtrip_and_mismatch(tmp_path, mixture_ot, f64):
    solver = BespokeSolver(2, 3).init_from_st(random_smooth_st(1))
    f = tmp_path / "s.safetensors"
    save_solver(solver, f, mixture_ot, extra={"note": "test"})
    loaded, header = load_solver(f, field=mixture_ot)
    assert header["train"] == {"note": "test"} and header["nfe"] == 6 and header["data_shape"] == [2]
    x0 = torch.randn(8, 2)
    torch.testing.assert_close(loaded.solve(mixture_ot, x0).x, solver.solve(mixture_ot, x0).x, rtol=0, atol=0)
    via_registry = get_solver(str(f), mixture_ot)
    assert via_registry.nfe == 6
    other = gaussian_data_field(CondOTPath(), torch.zeros(2), 1.0)
    other.model_id = "another-model"
    with pytest.raises(CheckpointError, match="trained for model"):
        load_solver(f, field=other)
    guided = gaussian_data_field(CondOTPath(), torch.zeros(2), 1.0)
    guided.model_id, guided.guidance_scale = mixture_ot.model_id, 2.0
    with pytest.raises(CheckpointError, match="guidance scale"):
        load_solver(f, field=guided)
    with pytest.raises(ValueError, match="trained for NFE 6; it cannot run at NFE 8"):
        loaded.solve(mixture_ot, x0, nfe=8)
    raw = bytearray(f.read_bytes())
    raw[-3] ^= 0xFF
    with pytest.raises(CheckpointError, match="content hash"):
        load_solver(bytes(raw))


def test_a_header_nfe_that_disagrees_with_the_config_is_refused(mixture_ot, f64):
    """The header's NFE and the one the config builds must agree; the message names both."""
    from core import checkpoint
    from core.solvers.learned import _solver_header, _solver_tensors
    solver = BespokeSolver(2, 3)
    header = _solver_header(solver, mixture_ot, None)
    assert header["nfe"] == 6
    header["nfe"] = 5
    raw = checkpoint.dumps(_solver_tensors(solver), header, kind="solver")
    with pytest.raises(CheckpointError, match=r"header says NFE 5 but the config gives NFE 6"):
        load_solver(raw)


def test_bad_input():
    with pytest.raises(ValueError, match="positive integer, got 0"):
        BespokeSolver(2, 0)
    with pytest.raises(ValueError, match="must be 1 \\(RK1\\) or 2"):
        BespokeSolver(3, 4)
    with pytest.raises(ValueError, match="NFE must be even; got 7"):
        bespoke_from_family("rk2-bespoke", 7)
    with pytest.raises(ValueError, match="unknown learned solver family 'rk3-bespoke'"):
        SolverSpec("rk3-bespoke", 8)
    with pytest.raises(ValueError, match="L_tau must be a finite number >= 0, got nan"):
        SolverSpec("rk2-bespoke", 8, lipschitz=math.nan)
    with pytest.raises(ValueError, match="learning rate must be positive, got -1"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ValueError, match="x0 has 1 non-finite"):
        x0 = torch.zeros(2, 2)
        x0[1, 1] = math.inf
        BespokeSolver(1, 2).solve(lambda t, x: x, x0)


def test_conditional_batches_keep_their_labels(f64):
    """A conditional model binds labels by row (labels[i % L]); training batches must keep each
    GT path at its label, or a path would switch class between steps."""
    from core.analytic import mixture_field
    from core.field import aligned_batch
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.5]])
    base = mixture_field(CondOTPath(), means, 0.2)
    labels = torch.arange(3)

    def fn(t, x):  # class k pulls towards mean k: a label-dependent VF
        lab = labels[torch.arange(x.shape[0]) % 3]
        return base(t, x) + (means[lab] - x) * 0.5
    field = base.__class__(fn, (2,), path=base.path, model_id="cond")
    field.labels = labels
    idx = aligned_batch(30, 12, 3, torch.Generator().manual_seed(0))
    assert idx.numel() == 12 and torch.equal(idx % 3, torch.arange(12) % 3)
    x0 = torch.randn(30, 2)
    pool = GTPool.build(field, x0, n_grid=65, atol=1e-9, rtol=1e-9, batch_size=7)  # chunks rounded to 6
    solver = BespokeSolver(2, 50)
    obj = BespokeObjective(field, pool, pool, batch_size=13)  # rounded to 12
    # A fine Bespoke (= midpoint) solve reproduces the pool's GT with every sample at its label,
    # so the local errors on aligned batches are tiny.
    aligned = obj.loss(solver, torch.Generator().manual_seed(0)).max()
    assert aligned < 5e-3  # midpoint truncation error summed over 50 steps
    # The same paths read at the wrong residue (shifted by one row) are far off: the check bites.
    shifted = BespokeObjective(field, pool.subset(torch.arange(1, 28)), pool, batch_size=12)
    assert shifted.loss(solver, torch.Generator().manual_seed(0)).max() > 20 * aligned
    with pytest.raises(ValueError, match="multiple of 3"):
        GTPool.build(field, torch.randn(31, 2), n_grid=5)


def test_zero_local_error_gives_finite_gradients(f64):
    """A step that is exact for some samples (zero local error) must not give NaN gradients."""
    u = lambda t, x: torch.ones_like(x)  # x(t) = x0 + t: every Bespoke step at identity is exact
    x0 = torch.randn(16, 2)
    pool = GTPool.build(u, x0, n_grid=9)
    solver = BespokeSolver(2, 3)
    obj = BespokeObjective(u, pool, pool)
    loss = obj.loss(solver, torch.Generator().manual_seed(0)).mean()
    assert loss.item() < 1e-7
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in solver.parameters())


@pytest.mark.parametrize("order", [1, 2])
def test_coarse_to_fine_init_keeps_the_coarse_map_at_shared_nodes(order, mixture_ot, f64):
    coarse = BespokeSolver(order, 3).init_from_st(random_smooth_st(2))
    fine = BespokeSolver(order, 6).init_from_coarse(coarse)
    pc, pf = coarse.decode(), fine.decode()
    for k in ("t", "s", "dt", "ds"):
        torch.testing.assert_close(pf[k][::2], pc[k], rtol=1e-12, atol=1e-12)
    assert (pf["t"][1:] > pf["t"][:-1]).all() and (pf["dt"] > 0).all() and (pf["s"] > 0).all()
    # the midpoints are the means of their neighbours (linear in t and log s): close to the smooth map
    exact = random_smooth_st(2)(torch.linspace(0, 1, fine.M + 1))
    assert (pf["t"] - exact.t).abs().max() < 2e-2 and (pf["s"] - exact.s).abs().max() < 2e-2
    mid = slice(1, fine.M, 2)
    torch.testing.assert_close(pf["t"][mid], 0.5 * (pc["t"][:-1] + pc["t"][1:]))
    torch.testing.assert_close(pf["s"][mid], torch.sqrt(pc["s"][:-1] * pc["s"][1:]))
    for k in ("dt", "ds"):  # t', s' at the evaluation nodes: means between, the last one copies its neighbour
        torch.testing.assert_close(pf[k][1:-1:2], 0.5 * (pc[k][:-1] + pc[k][1:]))
        torch.testing.assert_close(pf[k][-1], pc[k][-1])
    # and the finer solver from it is more accurate than the coarse one on the same problem
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    gt = gt_solve(mixture_ot, x0, atol=1e-10, rtol=1e-10).x
    err = lambda s: (s.solve(mixture_ot, x0).x - gt).pow(2).mean().sqrt()  # noqa: E731
    assert err(fine) < err(coarse)
    with pytest.raises(ValueError, match="half its NFE"):
        BespokeSolver(order, 6).init_from_coarse(BespokeSolver(order, 2))
    with pytest.raises(ValueError, match="half its NFE"):
        BespokeSolver(order, 6).init_from_coarse(BespokeSolver(3 - order, 3))


@pytest.mark.parametrize("target,order,min_order", [("eps-vp", 1, 0.85), ("edm", 1, 0.8), ("edm", 2, 1.8),
                                                     ("fm-cs", 2, 1.8), ("eps-vp", 2, 1.5)])
def test_init_from_path_map_is_consistent(target, order, min_order, f64):
    """init_from_st normalises a map that does not span [0, 1] (eps-VP starts at t_0 = 0.0065 on an
    FM-OT model, EDM's s_1 / s_0 = 0.0124) to an exact member of the consistent family, so the
    start solver converges at its base order. (eps-VP's map has t' -> inf at r = 1, which caps
    RK2's order once n is large; at n = 8 -> 32 it is still above 1.5.)"""
    from core.paths import get_path
    path, mean, c = CondOTPath(), torch.tensor([1.0, -2.0]), 0.5
    u = gaussian_data_field(path, mean, c)
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))
    exact = gaussian_data_solution(path, mean, c, x0, 1.0)
    st = lambda r: path_st_map(path, get_path(target), r, normalize=True)  # noqa: E731
    steps = [8, 16, 32] if order == 2 else [32, 64, 128]
    errs = []
    for n in steps:
        solver = BespokeSolver(order, n).init_from_st(st)
        d = solver.decode()
        assert d["t"][0] == 0 and d["t"][-1] == 1 and d["s"][0] == 1
        errs.append((solver.solve(u, x0).x - exact).pow(2).mean().sqrt().item())
    orders = [math.log2(a / b) for a, b in zip(errs, errs[1:])]
    assert min(orders) > min_order, (errs, orders)
    # the stored values are the affine-normalised map: t' integrates to t
    m = st(torch.linspace(0, 1, 65))
    solver = BespokeSolver(order, 64 // order).init_from_st(st)
    span = m.t[-1] - m.t[0]
    torch.testing.assert_close(solver.decode()["t"][1:-1], ((m.t - m.t[0]) / span)[1:-1])
    torch.testing.assert_close(solver.decode()["dt"], (m.dt / span)[:-1])
