"""The integrations against core: equality figures and the sampling-time overhead.

    python bench/bench_integrations.py [--threads 1] [--repeats 7] [--skip-model]

Equality: one learned solver of each family (RK1/RK2-Bespoke, BNS; parameters moved off their
initialisation) sampled through each adapter and by core's own `solver.solve` from the same
noise, max |difference| over 1024 samples:
  - flow_matching's LearnedODESolver, on an exact Gaussian-data model (float64) and on a small
    random MLP (float32), per scheduler (CondOT, Cosine, VP);
  - the k-diffusion-style sample_bespoke ("ve" with sigma_max = 80 on FM-OT, "flow" on FM-OT,
    "ve" on eps-VP) on the exact Gaussian-data denoiser (float64).
A model trained with flow_matching itself (an MLP on the 2-D checkerboard, flow_matching's
CondOTProbPath loss): RK2-Bespoke and BNS learned through the adapter, sampled with
LearnedODESolver, against flow_matching's ODESolver (euler, midpoint) at equal NFE; PSNR in dB
(data range 4) to ODESolver's dopri5 (atol = rtol = 1e-5) from the same 2048 noise samples.
Overhead: the median wall time of LearnedODESolver.sample against flow_matching's own
ODESolver.sample(method="euler") at the same NFE, on an MLP (2-D, batch 4096) and on a conv net
(3x32x32, batch 64): the scheme's bookkeeping over flow_matching's Euler step.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flow_matching.path.scheduler import CondOTScheduler, CosineScheduler, VPScheduler  # noqa: E402
from flow_matching.solver import ODESolver  # noqa: E402

from bench.timing import median_time, print_table  # noqa: E402
from core.analytic import gaussian_data_field  # noqa: E402
from core.integrations.flow_matching import LearnedODESolver, field_from_flow_matching, path_from_scheduler  # noqa: E402
from core.integrations.k_diffusion import bespoke_sigmas, denoiser_field, sample_bespoke  # noqa: E402
from core.paths import CondOTPath, VPPath  # noqa: E402
from core.solvers.bespoke import bespoke_from_family  # noqa: E402
from core.solvers.bns import BNSSolver  # noqa: E402

MEAN, C = torch.tensor([0.7, -0.4], dtype=torch.float64), 0.3


def perturbed(solver, scale, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in solver.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return solver


def solvers(path):
    bns = BNSSolver(8, sigma0=1.5, path=path)
    bns.init_from("dpm++2m", gaussian_data_field(path, MEAN, C))
    return {"rk1-bespoke@8": perturbed(bespoke_from_family("rk1-bespoke", 8), 0.05),
            "rk2-bespoke@8": perturbed(bespoke_from_family("rk2-bespoke", 8), 0.05),
            "bns@8": perturbed(bns, 0.02)}


class ExactModel(nn.Module):
    """The exact velocity of N(MEAN, C^2 I) data from the flow_matching scheduler's alpha, sigma."""

    def __init__(self, scheduler):
        super().__init__()
        self.scheduler = scheduler

    def forward(self, x, t):
        o = self.scheduler(t.reshape(-1, 1))
        var = o.alpha_t**2 * C**2 + o.sigma_t**2
        e1 = MEAN.to(x) + (o.alpha_t * C**2 / var) * (x - o.alpha_t * MEAN.to(x))
        e0 = (o.sigma_t / var) * (x - o.alpha_t * MEAN.to(x))
        return o.d_alpha_t * e1 + o.d_sigma_t * e0


class MLP(nn.Module):
    def __init__(self, dim=2, width=128, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(dim + 1, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, dim))

    def forward(self, x, t):  # ODESolver passes a 0-dim t, LearnedODESolver a (B,) one
        return self.net(torch.cat([x, t.to(x).expand(x.shape[0]).reshape(-1, 1)], 1))


class ConvNet(nn.Module):
    def __init__(self, ch=32, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.inp = nn.Conv2d(3, ch, 3, padding=1)
        self.mid = nn.Conv2d(ch, ch, 3, padding=1)
        self.out = nn.Conv2d(ch, 3, 3, padding=1)
        self.temb = nn.Linear(1, ch)

    def forward(self, x, t):
        t = t.to(x).expand(x.shape[0]).reshape(-1, 1)
        h = torch.nn.functional.silu(self.inp(x) + self.temb(t)[:, :, None, None])
        return self.out(torch.nn.functional.silu(self.mid(h)))


def max_diff(a, b) -> str:
    return f"{float((a - b).abs().max()):.1e}"


def equality_rows() -> list[tuple[str, str]]:
    rows = []
    g = torch.Generator().manual_seed(0)
    x64 = torch.randn(1024, 2, generator=g, dtype=torch.float64)
    for sched in (CondOTScheduler(), CosineScheduler(), VPScheduler()):
        path = path_from_scheduler(sched)
        for kind, model, x0 in (("exact f64", ExactModel(sched), x64), ("MLP f32", MLP(), x64.float())):
            field = field_from_flow_matching(model, sched, (2,))
            for name, solver in solvers(path).items():
                got = LearnedODESolver(model, sched, solver, data_shape=(2,)).sample(x_init=x0)
                with torch.no_grad():
                    ref = solver.solve(field, x0).x
                rows.append((f"flow_matching {type(sched).__name__} {kind} {name}", max_diff(got, ref)))

    def denoiser(x, sigma):
        return MEAN + (C**2 / (C**2 + sigma.reshape(-1, 1) ** 2)) * (x - MEAN)

    def flow_denoiser(x, sigma):
        s = sigma.reshape(-1, 1)
        return MEAN + ((1 - s) * C**2 / ((1 - s) ** 2 * C**2 + s**2)) * (x - (1 - s) * MEAN)

    for label, path, d, smax, conv in (("ve fm-ot sigma_max=80", CondOTPath(), denoiser, 80.0, "ve"),
                                       ("flow fm-ot", CondOTPath(), flow_denoiser, None, "flow"),
                                       ("ve eps-vp", VPPath(), denoiser, None, "ve")):
        field = denoiser_field(d, path, (2,), smax, convention=conv)
        start = float(path(torch.tensor(0.0, dtype=torch.float64)).sigma)
        for name, solver in solvers(path).items():
            sig = bespoke_sigmas(solver, path, smax, conv)
            got = sample_bespoke(d, x64 * sig[0], sig, disable=True, solver=solver, path=path, sigma_max=smax,
                                 convention=conv)
            with torch.no_grad():
                ref = solver.solve(field, start * x64).x
            rows.append((f"k-diffusion {label} exact f64 {name}", max_diff(got, ref)))
    return rows


def flow_matching_model_rows(steps: int = 3000, seed: int = 0) -> list[tuple[str, str]]:
    from flow_matching.path import AffineProbPath

    from core.data import checkerboard
    from core.metrics import psnr
    from core.train import SolverSpec, TrainConfig, train_solver

    torch.manual_seed(seed)
    model, sched = MLP(width=256, seed=seed), CondOTScheduler()
    fm_path = AffineProbPath(scheduler=sched)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):  # flow_matching's own conditional FM loss
        x1 = checkerboard(512, g).float()
        x0 = torch.randn(512, 2, generator=g)
        t = torch.rand(512, generator=g)
        ps = fm_path.sample(t=t, x_0=x0, x_1=x1)
        loss = ((model(x=ps.x_t, t=ps.t) - ps.dx_t) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    field = field_from_flow_matching(model, sched, (2,), data_range=4.0)
    x0 = torch.randn(2048, 2, generator=torch.Generator().manual_seed(123))
    ode = ODESolver(velocity_model=model)
    with torch.no_grad():
        gt = ode.sample(x_init=x0, step_size=None, method="dopri5", atol=1e-5, rtol=1e-5)
    rows = [("flow_matching MLP, checkerboard: final training loss", f"{float(loss.detach()):.3f} ({steps} steps)")]

    def db(x):
        return f"{float(psnr(x, gt, 4.0).mean()):.2f}"

    for nfe in (4, 8):
        with torch.no_grad():
            eul = ode.sample(x_init=x0, step_size=None, method="euler", time_grid=torch.linspace(0, 1, nfe + 1))
            mid = ode.sample(x_init=x0, step_size=None, method="midpoint", time_grid=torch.linspace(0, 1, nfe // 2 + 1))
        rows.append((f"NFE {nfe}: ODESolver euler / midpoint", f"{db(eul)} / {db(mid)} dB"))
        for spec in (SolverSpec("rk2-bespoke", nfe=nfe), SolverSpec("bns", nfe=nfe, init="dpm++2m")):
            res = train_solver(field, spec, TrainConfig(iters=300, seed=seed))
            x = LearnedODESolver(model, sched, res.solver, data_shape=(2,)).sample(x_init=x0)
            rows.append((f"NFE {nfe}: LearnedODESolver {spec.family} (300 iters, {res.elapsed:.0f} s)", f"{db(x)} dB"))
    return rows


def overhead_rows(repeats: int) -> list[tuple[str, str]]:
    rows = []
    sched = CondOTScheduler()
    for label, model, shape, batch in (("MLP 2-D, batch 4096", MLP(), (2,), 4096),
                                       ("conv 3x32x32, batch 64", ConvNet(), (3, 32, 32), 64)):
        x0 = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
        for name, solver in solvers(CondOTPath()).items():
            ours = LearnedODESolver(model, sched, solver, data_shape=shape)
            theirs = ODESolver(velocity_model=model)
            nfe = solver.nfe
            grid = torch.linspace(0, 1, nfe + 1)
            with torch.no_grad():
                ours.sample(x_init=x0)
                theirs.sample(x_init=x0, step_size=None, method="euler", time_grid=grid)
                t_ours = median_time(lambda: ours.sample(x_init=x0), repeats)
                t_theirs = median_time(lambda: theirs.sample(x_init=x0, step_size=None, method="euler",
                                                             time_grid=grid), repeats)
            rows.append((f"{label}, {name} vs ODESolver euler, NFE {nfe}",
                         f"{t_ours * 1e3:.1f} ms vs {t_theirs * 1e3:.1f} ms ({100 * (t_ours / t_theirs - 1):+.1f} %)"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--skip-model", action="store_true", help="skip the model trained with flow_matching")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print_table("Adapter vs core's own solve from the same noise (max |difference|, 1024 samples)", equality_rows())
    if not args.skip_model:
        print_table("A model trained with flow_matching: PSNR to ODESolver dopri5 at equal NFE (2048 samples)",
                    flow_matching_model_rows())
    print_table(f"LearnedODESolver.sample vs flow_matching's ODESolver euler at equal NFE (median of "
                f"{args.repeats}, {args.threads} thread(s))", overhead_rows(args.repeats))


if __name__ == "__main__":
    main()
