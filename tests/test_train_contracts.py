"""Contracts of the training loop (core.train.fit / train_solver), written against what a caller
sees: the returned solver, TrainResult, the callback events, NonFiniteLossError.

The objectives here use the real Bespoke loss (so the parameters really move) and, where the
test must know in advance which validation is the best, a scripted validation metric; every
validation records the solver's parameters at that moment, so "the returned solver is the best
one" is checked against the snapshot taken at the best validation, not against a rule."""
import math
import threading

import pytest
import torch

from core import metrics
from core.losses import BespokeObjective
from core.solvers.base import rk_sample, uniform_grid
from core.solvers.bespoke import BespokeSolver
from core.solvers.gt import GTPool, gt_solve
from core.train import (NonFiniteLossError, SolverSpec, TrainConfig, build_bespoke, fit, resolve_device,
                        train_solver)


def _state(solver) -> dict:
    return {k: v.detach().clone() for k, v in solver.state_dict().items()}


def _assert_same_state(solver, state):
    now = solver.state_dict()
    assert now.keys() == state.keys()
    for k in state:
        torch.testing.assert_close(now[k], state[k], rtol=0, atol=0, msg=lambda m, k=k: f"{k}: {m}")


def _states_differ(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def _pool_and_field():
    from core.analytic import mixture_field
    from core.paths import CondOTPath
    means = torch.tensor([[-1.5, -1.5], [1.5, 1.5], [0.0, 0.0]], dtype=torch.float64)
    field = mixture_field(CondOTPath(), means, 0.2)
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    return GTPool.build(field, x0, n_grid=9, atol=1e-4, rtol=1e-4), field


@pytest.fixture
def bespoke_objective(_pool_and_field):
    """A small real Bespoke objective in float64 (train = validation pool: only its loss is used)."""
    pool, field = _pool_and_field
    return BespokeObjective(field, pool, pool, batch_size=16)


class ScriptedObjective:
    """The real loss of `inner`; validation returns the next value of `values` as the metric and
    records (parameters, metrics) at that call."""

    def __init__(self, inner, values, metric="rmse", mode="min"):
        self.inner, self.values = inner, list(values)
        self.metric, self.mode = metric, mode
        self.seen: list[tuple[dict, dict]] = []

    def loss(self, solver, generator=None):
        return self.inner.loss(solver, generator)

    def validate(self, solver):
        v = self.values[len(self.seen)]
        m = {self.metric: v, "other": 100.0 + len(self.seen)}
        self.seen.append((_state(solver), m))
        return dict(m)


def _validated_iterations(result) -> list[int]:
    return [h["iteration"] for h in result.history if "rmse" in h or "psnr" in h]


@pytest.mark.parametrize("values, mode, best_call", [
    ([1.0, 0.3, 0.5, 0.6, 0.7, 0.8], "min", 1),  # peaks early, then only gets worse
    ([1.0, 0.9, 0.3, 0.3, 0.4, 0.5], "min", 2),  # a later tie does not replace the best
    ([0.1, 0.5, 0.6, 0.7, 0.8, 0.9], "min", 0),  # nothing beats the initial solver
    ([10.0, 20.0, 15.0, 12.0, 11.0, 10.5], "max", 1),  # BNS-style: PSNR, higher is better
    ([1.0, 0.9, 0.8, 0.7, 0.6, 0.5], "min", 4),  # best at the last iteration (10, not a multiple of 3)
])
def test_returned_solver_is_the_best_validation_snapshot(bespoke_objective, values, mode, best_call):
    solver = BespokeSolver(2, 2)
    obj = ScriptedObjective(bespoke_objective, values, metric="rmse" if mode == "min" else "psnr", mode=mode)
    res = fit(solver, obj, TrainConfig(iters=10, val_every=3, lr=0.05))
    # validated at init (0), every 3 iterations and at the last one, whatever the divisibility
    assert _validated_iterations(res) == [0, 3, 6, 9, 10]
    assert len(obj.seen) == 5 and res.solver is solver
    best_state, best_metrics = obj.seen[best_call]
    _assert_same_state(solver, best_state)
    assert res.best == best_metrics and res.init == obj.seen[0][1]
    assert res.best_iteration == [0, 3, 6, 9, 10][best_call]
    # the parameters did move: the snapshots are not all the same (else the check above is empty)
    assert _states_differ(obj.seen[0][0], obj.seen[-1][0])
    if best_call < 4:
        assert _states_differ(best_state, obj.seen[-1][0])


def test_stop_returns_the_best_snapshot_not_the_last_state(bespoke_objective):
    stop = threading.Event()
    solver = BespokeSolver(1, 3)
    obj = ScriptedObjective(bespoke_objective, [1.0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0])
    seen = []

    def cb(ev):
        seen.append(ev.iteration)
        if ev.iteration == 7:
            stop.set()
    res = fit(solver, obj, TrainConfig(iters=1000, val_every=2, lr=0.05), callback=cb, stop_event=stop)
    assert res.stopped and seen == list(range(8)) and res.history[-1]["iteration"] == 7
    assert _validated_iterations(res) == [0, 2, 4, 6]
    _assert_same_state(solver, obj.seen[1][0])  # the peak at iteration 2
    assert res.best_iteration == 2 and res.best == obj.seen[1][1]
    assert res.summary()["iterations"] == 7 and res.summary()["stopped"] is True


def test_stop_before_the_first_iteration_returns_the_initial_solver(bespoke_objective):
    stop = threading.Event()
    stop.set()
    solver = BespokeSolver(2, 2)
    init = _state(solver)
    obj = ScriptedObjective(bespoke_objective, [0.5])
    res = fit(solver, obj, TrainConfig(iters=50), stop_event=stop)
    assert res.stopped and [h["iteration"] for h in res.history] == [0] and res.best_iteration == 0
    _assert_same_state(solver, init)


def test_history_and_events_report_every_iteration(bespoke_objective):
    events = []
    solver = BespokeSolver(2, 2)
    cfg = TrainConfig(iters=7, val_every=3, lr=0.01)
    res = fit(solver, bespoke_objective, cfg, callback=events.append)
    assert [e.iteration for e in events] == [h["iteration"] for h in res.history] == list(range(8))
    assert all(e.total_iters == 7 for e in events)
    assert math.isnan(res.history[0]["loss"]) and math.isnan(events[0].loss)
    assert res.history[0]["elapsed"] == events[0].elapsed == 0.0  # the initial solver: before any training
    for e, h in zip(events[1:], res.history[1:]):
        assert e.loss == h["loss"] and math.isfinite(e.loss) and e.loss > 0
        assert (e.metrics is not None) == (e.iteration in (3, 6, 7))
        if e.metrics is not None:
            assert e.metrics == {k: h[k] for k in ("rmse", "psnr")}
    elapsed = [e.elapsed for e in events]
    assert elapsed == sorted(elapsed) and res.elapsed >= elapsed[-1]
    # events carry the parameters of that iteration: they change while training
    assert not (events[1].params["t"] == events[-1].params["t"]).all()
    s = res.summary()
    assert s["iterations"] == 7 and s["best"] == res.best and s["init"] == res.init
    assert s["best_iteration"] == res.best_iteration and s["stopped"] is False
    assert s["train_seconds"] == round(res.elapsed, 3) and s["spec"]["family"] == "rk2-bespoke"
    assert s["gt_seconds"] == 0.0 and s["gt_nfe"] == 0  # fit alone makes no GT


def test_nan_loss_rolls_back_to_the_best_validation_parameters(bespoke_objective):
    """Issue 10: the parameters that produced the NaN (the previous iteration's) are not kept; the
    solver goes back to its best validation (here the initial one: validation ran at 0 only)."""
    solver = BespokeSolver(2, 2)
    states = {}
    calls = {"n": 0}

    def loss(s, g):
        calls["n"] += 1
        out = bespoke_objective.loss(s, g)
        return out * math.nan if calls["n"] == 4 else out
    obj = ScriptedObjective(bespoke_objective, [1.0] * 10)
    obj.loss = loss
    with pytest.raises(NonFiniteLossError, match="iteration 4: loss is nan") as e:
        fit(solver, obj, TrainConfig(iters=10, val_every=100, lr=0.05),
            callback=lambda ev: states.__setitem__(ev.iteration, _state(solver)))
    assert sorted(states) == [0, 1, 2, 3]
    assert e.value.result.best_iteration == 0 and e.value.result.diverged
    _assert_same_state(solver, states[0])
    assert _states_differ(states[3], states[0]) and _states_differ(states[3], states[2])
    assert e.value.result.history[-1]["iteration"] == 3 and e.value.result.elapsed > 0


def test_nan_gradient_rolls_back_too(bespoke_objective):
    """A finite loss with a NaN gradient (sqrt at 0 times 0) is caught before Adam steps."""
    solver = BespokeSolver(1, 3)
    states = {}
    calls = {"n": 0}

    def loss(s, g):
        calls["n"] += 1
        out = bespoke_objective.loss(s, g)
        if calls["n"] == 3:
            out = out + torch.sqrt(0.0 * sum(p.sum() for p in s.parameters()))  # value +0, gradient NaN
        return out
    obj = ScriptedObjective(bespoke_objective, [1.0] * 10)
    obj.loss = loss
    with pytest.raises(NonFiniteLossError, match="iteration 3: gradient has non-finite values"):
        fit(solver, obj, TrainConfig(iters=10, val_every=100, lr=0.05),
            callback=lambda ev: states.__setitem__(ev.iteration, _state(solver)))
    _assert_same_state(solver, states[0])  # the best validation (iteration 0), as for a NaN loss
    assert _states_differ(states[2], states[0])


def _fit_state(objective, **cfg):
    solver = BespokeSolver(2, 2)
    fit(solver, objective, TrainConfig(iters=6, val_every=100, **cfg))
    return _state(solver)


def test_gradient_clipping_is_applied(bespoke_objective):
    off = _fit_state(bespoke_objective, grad_clip=0.0, lr=0.05)
    assert _states_differ(off, _state(BespokeSolver(2, 2)))  # grad_clip = 0 means off, not "clip to 0"
    loose = _fit_state(bespoke_objective, grad_clip=1e9, lr=0.05)
    for k in off:  # a bound far above the gradient norm changes nothing
        torch.testing.assert_close(loose[k], off[k], rtol=0, atol=0)
    # A tight bound rescales each step's gradient by a different factor: Adam then moves differently.
    tight = _fit_state(bespoke_objective, grad_clip=1e-6, lr=0.05)
    assert _states_differ(tight, off)


def test_training_is_reproducible_from_the_seed(bespoke_objective):
    a = _fit_state(bespoke_objective, seed=3, lr=0.05)
    b = _fit_state(bespoke_objective, seed=3, lr=0.05)
    c = _fit_state(bespoke_objective, seed=4, lr=0.05)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert _states_differ(a, c)  # the seed picks the batches


def _no_shared_rows(a, b) -> bool:
    return not (a.reshape(len(a), 1, -1) == b.reshape(1, len(b), -1)).all(-1).any()


def test_bespoke_validation_is_on_the_held_out_pool(mixture_ot):
    """validate() equals RMSE / PSNR of a solve of the held-out noise against its GT, computed
    here directly; the held-out noise is n_val samples none of which is in the training pool."""
    spec, cfg = SolverSpec("rk2-bespoke", 4), TrainConfig(iters=1, n_train=48, n_val=16, gt_grid=17, seed=5)
    solver, obj = build_bespoke(mixture_ot, spec, cfg, torch.device("cpu"))
    assert obj.val.size == 16 and obj.train.size == 48 and _no_shared_rows(obj.val.x0, obj.train.x0)
    gt = gt_solve(mixture_ot, obj.val.x0, atol=1e-5, rtol=1e-5).x
    torch.testing.assert_close(obj.val.x1, gt, rtol=0, atol=1e-3)  # dopri5's steps depend on the batch
    x = rk_sample(mixture_ot, obj.val.x0, uniform_grid(2), "midpoint").x  # the identity init
    mse = ((x - obj.val.x1) ** 2).mean(1)
    got = obj.validate(solver)
    assert got["rmse"] == pytest.approx(mse.sqrt().mean().item(), rel=1e-9)
    assert got["psnr"] == pytest.approx((10 * torch.log10(4.0 / mse)).mean().item(), rel=1e-9)  # R = 2
    res = train_solver(mixture_ot, spec, cfg)
    assert res.init == pytest.approx(got, rel=1e-9)  # the same pool, drawn from the same seed
    assert res.gt_nfe == obj.gt_nfe > 0 and res.gt_seconds > 0 and res.spec == spec
    assert res.summary()["gt_seconds"] == round(res.gt_seconds, 3) and res.summary()["gt_nfe"] == res.gt_nfe


def test_bns_validation_is_on_the_held_out_pairs(mixture_ot):
    from core.solvers.bns import build_bns
    spec, cfg = SolverSpec("bns", 4, init="euler"), TrainConfig(iters=1, n_train=40, n_val=24, seed=2)
    solver, obj = build_bns(mixture_ot, spec, cfg, torch.device("cpu"))
    assert len(obj.x0_val) == 24 and len(obj.x0) == 40 and _no_shared_rows(obj.x0_val, obj.x0)
    torch.testing.assert_close(obj.x1_val, gt_solve(mixture_ot, obj.x0_val, atol=1e-5, rtol=1e-5).x,
                               rtol=0, atol=1e-3)
    x = rk_sample(mixture_ot, obj.x0_val, uniform_grid(4), "euler").x  # BNS initialised from Euler
    mse = ((x - obj.x1_val) ** 2).mean(1)
    got = obj.validate(solver)
    assert got["rmse"] == pytest.approx(mse.sqrt().mean().item(), rel=1e-4)
    assert got["psnr"] == pytest.approx((10 * torch.log10(4.0 / mse)).mean().item(), rel=1e-4)
    assert train_solver(mixture_ot, spec, cfg).init == pytest.approx(got, rel=1e-9)


@pytest.mark.parametrize("kwargs, message", [
    ({"iters": 0}, "TrainConfig.iters must be a positive integer, got 0"),
    ({"batch_size": 2.5}, "TrainConfig.batch_size must be a positive integer, got 2.5"),
    ({"val_every": -1}, "TrainConfig.val_every must be a positive integer, got -1"),
    ({"n_train": 0}, "TrainConfig.n_train"),
    ({"n_val": 0}, "TrainConfig.n_val"),
    ({"gt_grid": 0}, "TrainConfig.gt_grid"),
    ({"lr": 0.0}, "learning rate must be positive, got 0.0"),
    ({"lr": math.inf}, "learning rate must be positive, got inf"),
    ({"lr_schedule": "step"}, "lr_schedule must be .*, got 'step'"),
])
def test_train_config_names_the_bad_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"nfe": 0}, "NFE must be a positive integer, got 0"),
    ({"nfe": 4.0}, "NFE must be a positive integer, got 4.0"),
    ({"lipschitz": -0.5}, "L_tau must be a finite number >= 0, got -0.5"),
    ({"lipschitz": math.inf}, "L_tau must be a finite number >= 0, got inf"),
    ({"sigma0": 0.0}, "sigma0 must be a positive finite number, got 0.0"),
    ({"sigma0": math.nan}, "sigma0 must be a positive finite number, got nan"),
])
def test_solver_spec_names_the_bad_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SolverSpec("rk2-bespoke", **{"nfe": 8, **kwargs})
    SolverSpec("rk2-bespoke", 8, lipschitz=0.0)  # L_tau = 0 is allowed (no error propagation)


def test_bespoke_init_from_a_path_and_its_error(mixture_ot):
    """init="fm-cs": the untrained solver is the ST map from the model's path to the cosine path."""
    from core.analytic import gaussian_data_field
    from core.paths import CosinePath, path_st_map
    cfg = TrainConfig(iters=1, n_train=8, n_val=4, gt_grid=5)
    solver, _ = build_bespoke(mixture_ot, SolverSpec("rk1-bespoke", 4, init="fm-cs"), cfg, torch.device("cpu"))
    ref = BespokeSolver(1, 4).init_from_st(lambda r: path_st_map(mixture_ot.path, CosinePath(), r, normalize=True))
    for k, v in ref.decode().items():
        torch.testing.assert_close(solver.decode()[k], v, rtol=1e-12, atol=1e-12)
    no_path = gaussian_data_field(CosinePath(), torch.zeros(2), 1.0)
    no_path.path = None
    with pytest.raises(ValueError, match="init 'fm-cs' needs a model with a Gaussian path"):
        build_bespoke(no_path, SolverSpec("rk1-bespoke", 4, init="fm-cs"), cfg, torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown Bespoke loss 'l1'"):
        build_bespoke(mixture_ot, SolverSpec("rk1-bespoke", 4, loss="l1"), cfg, torch.device("cpu"))


def test_resolve_device_auto_picks_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda' asked for, but CUDA is not available"):
            resolve_device("cuda")


def test_unknown_family_and_an_empty_summary():
    from core.train import TrainResult, _family_builder
    with pytest.raises(ValueError, match=r"family 'rk3'; known: \['bns', 'rk1-bespoke', 'rk2-bespoke'\]"):
        _family_builder("rk3")
    assert TrainResult(None, SolverSpec()).summary()["iterations"] == 0  # no history yet
