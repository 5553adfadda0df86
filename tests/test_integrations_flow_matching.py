"""flow_matching in and out: scheduler -> path mapping, ScheduleTransformedModel vs our scale-time
maps, the adapted field against exact Gaussian-data velocities, and LearnedODESolver against
core's own solve from the same noise."""
import pytest
import torch
from flow_matching.path import AffineProbPath, CondOTProbPath
from flow_matching.path.scheduler import (CondOTScheduler, CosineScheduler, LinearVPScheduler,
                                          PolynomialConvexScheduler, ScheduleTransformedModel, VPScheduler)
from flow_matching.solver import Solver
from flow_matching.utils import ModelWrapper
from torch import nn

from core.analytic import gaussian_data_field, mixture_field
from core.checkpoint import CheckpointError
from core.integrations.flow_matching import (LearnedODESolver, field_from_flow_matching, model_hash,
                                             path_from_scheduler)
from core.paths import CondOTPath, CosinePath, VPPath, change_of_path, path_st_map
from core.solvers.bespoke import bespoke_from_family
from core.solvers.bns import BNSSolver
from core.solvers.learned import save_solver
from core.train import SolverSpec, TrainConfig, train_solver
from tests.helpers import perturbed

F64 = torch.float64
MEAN = torch.tensor([0.7, -0.4], dtype=F64)
C = 0.3
SCHEDULERS = {"fm-ot": CondOTScheduler, "fm-cs": CosineScheduler, "eps-vp": VPScheduler}
PATHS = {"fm-ot": CondOTPath, "fm-cs": CosinePath, "eps-vp": VPPath}


class GaussianModel(ModelWrapper):
    """The exact marginal velocity / eps / x1 prediction of data N(MEAN, C^2 I), written from the
    flow_matching scheduler's own alpha_t, sigma_t (what a perfectly trained model would return)."""

    def __init__(self, scheduler, prediction="velocity"):
        super().__init__(model=None)
        self.scheduler, self.prediction = scheduler, prediction

    def forward(self, x, t, **extras):
        assert t.shape == (x.shape[0],), "flow_matching models get t of shape (B,)"
        o = self.scheduler(t.reshape(-1, 1))
        a, s, da, ds = o.alpha_t, o.sigma_t, o.d_alpha_t, o.d_sigma_t
        var = a * a * C**2 + s * s
        e_x1 = MEAN + (a * C**2 / var) * (x - a * MEAN)
        e_x0 = (s / var) * (x - a * MEAN)
        return {"velocity": da * e_x1 + ds * e_x0, "eps": e_x0, "x1": e_x1}[self.prediction]


def _noise(n=64, seed=0, dtype=F64):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------------------------------------------
# In: scheduler -> path
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sched, want", [
    (CondOTScheduler(), CondOTPath()), (PolynomialConvexScheduler(1), CondOTPath()),
    (CosineScheduler(), CosinePath()), (VPScheduler(), VPPath()), (VPScheduler(0.2, 12.0), VPPath(0.2, 12.0)),
    (CondOTProbPath(), CondOTPath()), (AffineProbPath(CosineScheduler()), CosinePath()),
])
def test_scheduler_maps_to_our_path(sched, want):
    path = path_from_scheduler(sched)
    assert path.to_dict() == want.to_dict()
    t = torch.linspace(0.01, 0.99, 41, dtype=F64)
    theirs, ours = getattr(sched, "scheduler", sched)(t), path(t)
    for a, b in ((theirs.alpha_t, ours.alpha), (theirs.sigma_t, ours.sigma),
                 (theirs.d_alpha_t, ours.d_alpha), (theirs.d_sigma_t, ours.d_sigma)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    rho = torch.tensor([0.05, 0.5, 1.0, 3.0, 20.0], dtype=F64)
    torch.testing.assert_close(getattr(sched, "scheduler", sched).snr_inverse(rho), path.snr_inverse(rho),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sched, name", [(LinearVPScheduler(), "LinearVPScheduler"),
                                         (PolynomialConvexScheduler(2), r"PolynomialConvexScheduler\(n=2\)")])
def test_unmappable_scheduler_is_refused_by_name(sched, name):
    with pytest.raises(ValueError, match=name):
        path_from_scheduler(sched)
    with pytest.raises(ValueError, match=name):
        field_from_flow_matching(GaussianModel(sched), sched, (2,))


def test_scheduler_whose_formulas_differ_is_refused(monkeypatch):
    original = VPScheduler.__call__

    def wrong(self, t):
        o = original(self, t)
        o.alpha_t = o.alpha_t * 1.001
        return o

    monkeypatch.setattr(VPScheduler, "__call__", wrong)
    with pytest.raises(ValueError, match="VPScheduler does not follow path eps-vp: its alpha_t differs"):
        path_from_scheduler(VPScheduler())


def test_not_a_scheduler_is_refused():
    with pytest.raises(TypeError, match="flow_matching Scheduler"):
        path_from_scheduler("fm-ot")


# ------------------------------------------------------------------------------------------
# Our scale-time maps against flow_matching's ScheduleTransformedModel
# ------------------------------------------------------------------------------------------

class _AsModel(nn.Module):
    def __init__(self, u):
        super().__init__()
        self.u = u

    def forward(self, x, t, **extras):
        return self.u(t, x)


@pytest.mark.parametrize("src", sorted(SCHEDULERS))
@pytest.mark.parametrize("dst", sorted(SCHEDULERS))
def test_st_maps_match_schedule_transformed_model(src, dst):
    """Theorem 2.3 both ways: our change_of_path(u, P, Q) is flow_matching's
    ScheduleTransformedModel(u, S_P, S_Q), on a non-linear (mixture) field, and our t_r, s_r
    are the ones it uses."""
    means = torch.tensor([[-1.0, 0.5], [1.0, -0.5], [0.2, 1.2]], dtype=F64)
    u = mixture_field(PATHS[src](), means, 0.2)
    ours = change_of_path(u, PATHS[src](), PATHS[dst]())
    theirs = ScheduleTransformedModel(_AsModel(u), SCHEDULERS[src](), SCHEDULERS[dst]())
    x = _noise(16)
    for r in (0.05, 0.2, 0.5, 0.8, 0.95):
        r_t = torch.tensor(r, dtype=F64)
        torch.testing.assert_close(ours(r_t, x), theirs(x=x, t=r_t), rtol=1e-9, atol=1e-9)
        m = path_st_map(PATHS[src](), PATHS[dst](), r_t)
        o_src = SCHEDULERS[src]()
        o_dst = SCHEDULERS[dst]()(r_t)
        t_r = o_src.snr_inverse(o_dst.alpha_t / o_dst.sigma_t)
        torch.testing.assert_close(m.t, t_r, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(m.s, o_dst.sigma_t / o_src(t_r).sigma_t, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------
# In: the adapted field is our path's exact velocity
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@pytest.mark.parametrize("prediction", ["velocity", "eps", "x1"])
def test_adapted_field_equals_exact_velocity(name, prediction):
    sched = SCHEDULERS[name]()
    field = field_from_flow_matching(GaussianModel(sched, prediction), sched, (2,), prediction=prediction)
    exact = gaussian_data_field(PATHS[name](), MEAN, C)
    assert field.path.to_dict() == PATHS[name]().to_dict() and field.data_shape == (2,)
    x = _noise(32)
    for t in (0.02, 0.3, 0.6, 0.97):
        torch.testing.assert_close(field(torch.tensor(t, dtype=F64), x), exact(torch.tensor(t, dtype=F64), x),
                                   rtol=1e-9, atol=1e-9)
    t_b = torch.linspace(0.05, 0.95, 32, dtype=F64)  # per-row times (what Bespoke training passes)
    torch.testing.assert_close(field(t_b, x), exact(t_b, x), rtol=1e-9, atol=1e-9)


def test_model_extras_are_passed_to_the_model():
    class Labelled(nn.Module):
        def forward(self, x, t, label):
            return x * 0 + label.to(x).reshape(-1, 1)

    field = field_from_flow_matching(Labelled(), CondOTScheduler(), (2,), model_extras={"label": torch.tensor([3.0])})
    assert float(field(torch.tensor(0.5), torch.zeros(4, 2)).max()) == 3.0
    assert field.meta["extras"] == ["label"]
    solver = LearnedODESolver(Labelled(), CondOTScheduler(), bespoke_from_family("rk1-bespoke", 2), data_shape=(2,),
                              model_extras={"label": torch.tensor([1.0])})
    x1 = solver.sample(x_init=torch.zeros(4, 2))  # u = 1 from t = 0 to 1: x1 = x0 + 1
    torch.testing.assert_close(x1, torch.ones(4, 2))
    x1 = solver.sample(x_init=torch.zeros(4, 2), model_extras={"label": torch.tensor([2.0])})  # per call
    torch.testing.assert_close(x1, torch.full((4, 2), 2.0))
    with pytest.raises(TypeError, match="unexpected keyword argument 'labl'"):  # a typo is not swallowed
        solver.sample(x_init=torch.zeros(4, 2), labl=torch.tensor([2.0]))


def test_field_arguments_are_checked():
    with pytest.raises(ValueError, match="unknown prediction type 'score'"):
        field_from_flow_matching(GaussianModel(CondOTScheduler()), CondOTScheduler(), (2,), prediction="score")
    with pytest.raises(ValueError, match="data_shape"):
        field_from_flow_matching(GaussianModel(CondOTScheduler()), CondOTScheduler(), ())


# ------------------------------------------------------------------------------------------
# Out: LearnedODESolver equals core's own solve from the same noise
# ------------------------------------------------------------------------------------------

def _solvers(path):
    bns = BNSSolver(6, sigma0=1.5, path=path)
    bns.init_from("dpm++2m", gaussian_data_field(path, MEAN, C))
    return {"rk1-bespoke": perturbed(bespoke_from_family("rk1-bespoke", 5)),
            "rk2-bespoke": perturbed(bespoke_from_family("rk2-bespoke", 6)),
            "bns": perturbed(bns, 0.02)}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_learned_solver_equals_core_solve_analytic(name):
    sched = SCHEDULERS[name]()
    model = GaussianModel(sched)
    exact = gaussian_data_field(PATHS[name](), MEAN, C)
    x0 = _noise(128)
    for family, solver in _solvers(PATHS[name]()).items():
        fm = LearnedODESolver(model, sched, solver, data_shape=(2,))
        assert isinstance(fm, Solver)
        got = fm.sample(x_init=x0)
        with torch.no_grad():
            ref = solver.solve(exact, x0).x
        err = float((got - ref).abs().max())
        assert err < 1e-12, (family, err)


class TinyMLP(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(3, 32), nn.SiLU(), nn.Linear(32, 2))

    def forward(self, x, t):
        return self.net(torch.cat([x, t.reshape(-1, 1).to(x)], 1))


def test_trained_solver_file_through_the_solver_equals_core(tmp_path):
    """A real (random, float32) network: train RK2-Bespoke on the adapted field, save it, load it
    back through LearnedODESolver (model check), sample: equals core's own solve to float32
    rounding. Another network is refused."""
    model, sched = TinyMLP(), CosineScheduler()
    field = field_from_flow_matching(model, sched, (2,))
    res = train_solver(field, SolverSpec("rk2-bespoke", nfe=4), TrainConfig(iters=8, n_train=128, n_val=64,
                                                                            batch_size=64, val_every=4, gt_grid=17))
    f = tmp_path / "rk2b4.safetensors"
    save_solver(res.solver, f, field)
    fm = LearnedODESolver(model, sched, str(f), data_shape=(2,))
    assert fm.header["model_id"] == model_hash(model) == field.model_id
    x0 = _noise(256, dtype=torch.float32)
    got = fm.sample(x_init=x0)
    with torch.no_grad():
        ref = res.solver.solve(field, x0).x
    assert got.dtype == torch.float32
    assert float((got - ref).abs().max()) < 1e-5
    traj = fm.sample(x_init=x0, return_intermediates=True)
    assert traj.shape == (5, 256, 2) and torch.equal(traj[0], x0) and torch.equal(traj[-1], got)
    assert fm.time_grid.shape == (5,) and float(fm.time_grid[-1]) == 1.0
    with pytest.raises(CheckpointError, match="trained for model"):
        LearnedODESolver(TinyMLP(seed=1), sched, str(f), data_shape=(2,))


def test_refusals():
    sched = CondOTScheduler()
    solver = bespoke_from_family("rk2-bespoke", 4)
    fm = LearnedODESolver(GaussianModel(sched), sched, solver, data_shape=(2,))
    x0 = _noise(8)
    with pytest.raises(ValueError, match="trained for NFE 4; it cannot run at NFE 8"):
        fm.sample(x_init=x0, nfe=8)
    with pytest.raises(ValueError, match="step_size and method must be None"):
        fm.sample(x_init=x0, step_size=0.05)
    with pytest.raises(ValueError, match="step_size and method must be None"):
        fm.sample(x_init=x0, method="midpoint")
    with pytest.raises(ValueError, match=r"time_grid must be None or \[0, 1\]"):
        fm.sample(x_init=x0, time_grid=torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match=r"x_init has shape \(8, 3\)"):
        fm.sample(x_init=torch.zeros(8, 3))
    assert torch.isfinite(fm.sample(x_init=x0, time_grid=torch.tensor([0.0, 1.0]), nfe=4)).all()
    bns = BNSSolver(4, path=CondOTPath())  # trained for an FM-OT model
    cos = LearnedODESolver(GaussianModel(CosineScheduler()), CosineScheduler(), bns, data_shape=(2,))
    with pytest.raises(ValueError, match="built for a model on path"):
        cos.sample(x_init=x0)


def test_importing_core_does_not_import_flow_matching():
    import subprocess
    import sys
    code = "import core, core.solvers, core.train, sys; print(any(m.startswith('flow_matching') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=__file__.rsplit("/tests/", 1)[0])
    assert out.stdout.strip() == "False"


def test_enable_grad_differentiates_through_the_sample():
    """enable_grad=True (as in ODESolver) keeps the graph: d(sample)/d(x_init) matches the exact
    flow map's Jacobian for Gaussian data, c / sqrt(alpha_0^2 c^2 + sigma_0^2) = C on FM-OT, to
    the solver's accuracy."""
    sched = CondOTScheduler()
    bns = BNSSolver(8, path=CondOTPath())
    bns.init_from("dpm++2m", gaussian_data_field(CondOTPath(), MEAN, C))
    fm = LearnedODESolver(GaussianModel(sched), sched, bns, data_shape=(2,))
    x0 = _noise(16).requires_grad_(True)
    fm.sample(x_init=x0, enable_grad=True).sum().backward()
    torch.testing.assert_close(x0.grad, torch.full_like(x0, C), rtol=0, atol=1e-2)
    with pytest.raises(RuntimeError):
        fm.sample(x_init=_noise(4).requires_grad_(True)).sum().backward()  # default: no graph
