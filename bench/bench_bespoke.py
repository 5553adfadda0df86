"""Benchmark of issue 2's speed targets for Bespoke solvers; prints one table.

1. Training: RK2-Bespoke n = 4 (NFE 8) on a 2-D MLP flow model (hidden 256, 3 layers): seconds
   until the validation RMSE first reaches 90 % of its final improvement (target <= 10 s),
   with the GT pool build time reported beside it.
2. Sampling: a trained Bespoke solver vs plain midpoint at the same NFE, same batch: median
   wall time of repeated solves and the overhead ratio (target <= 5 %).
3. Where the time goes: per-iteration cost split into GT reads, model calls and the rest.

    python bench/bench_bespoke.py [--model assets/checkerboard_fm-ot.safetensors] [--device cpu]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.bench_perf import time_to_fraction  # noqa: E402
from bench.timing import median_time, print_table  # noqa: E402
from core.solvers.base import rk_sample, uniform_grid  # noqa: E402
from core.train import SolverSpec, TrainConfig, resolve_device, train_solver  # noqa: E402

DEFAULT_MODEL = "assets/checkerboard_fm-ot.safetensors"


def load(model: str, device):
    from core import load_model
    return load_model(model, device=device)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    field = load(args.model, device)
    rows = []

    # 1. Training to 90 % of the final improvement.
    cfg = TrainConfig(iters=args.iters, val_every=5, device=str(device))
    t0 = time.perf_counter()
    res = train_solver(field, SolverSpec("rk2-bespoke", 8), cfg)
    wall = time.perf_counter() - t0
    t90 = time_to_fraction(res.history, "rmse", higher=False)
    init, best = res.init["rmse"], res.best["rmse"]
    per_iter = res.elapsed / max(1, res.history[-1]["iteration"])
    rows += [
        ("RK2-Bespoke NFE 8: validation RMSE, midpoint (init) -> best", f"{init:.4f} -> {best:.4f} ({init / best:.2f}x)"),
        ("  seconds to 90 % of the final improvement (training)", f"{t90:.2f} s (target <= 10 s)" if t90 is not None else "no improvement"),
        (f"  GT pool build ({cfg.n_train + cfg.n_val} dopri5 paths, {cfg.gt_grid}-point grid), once", f"{res.gt_seconds:.2f} s, {res.gt_nfe} NFE"),
        ("  seconds to 90 % including the GT pool", f"{t90 + res.gt_seconds:.2f} s" if t90 is not None else "-"),
        (f"  full run: {res.history[-1]['iteration']} iterations", f"{res.elapsed:.2f} s training, {per_iter * 1e3:.1f} ms/iter, {wall:.2f} s wall"),
    ]

    # 2. Sampling overhead vs midpoint at the same NFE.
    solver = res.solver.to(device)
    for batch in (1024, 16384):
        x0 = field.noise(batch, generator=torch.Generator().manual_seed(1)).to(device)
        with torch.no_grad():
            mid = lambda: rk_sample(field, x0, uniform_grid(4), "midpoint")
            bes = lambda: solver.solve(field, x0)
            mid(), bes()  # warm up
            # Interleave the two so that drifting machine load hits both alike.
            pairs = [(median_time(mid, 1), median_time(bes, 1)) for _ in range(args.repeats)]
            t_mid = statistics.median(a for a, _ in pairs)
            t_bes = statistics.median(b for _, b in pairs)
        rows.append((f"sampling NFE 8, batch {batch}: midpoint / Bespoke (median of {args.repeats})",
                     f"{t_mid * 1e3:.2f} ms / {t_bes * 1e3:.2f} ms: overhead {100 * (t_bes / t_mid - 1):+.1f} % (target <= 5 %)"))

    # 3. What dominates one training iteration.
    from core.losses import gt_states_with_time_grad
    obj_pool_x0 = field.noise(2048, generator=torch.Generator().manual_seed(2)).to(device)
    from core.solvers.gt import GTPool
    pool = GTPool.build(field, obj_pool_x0, n_grid=65)
    p = solver.decode()
    idx = torch.randperm(2048)[:256]
    t_read = median_time(lambda: gt_states_with_time_grad(pool, p["time_grid"], idx), args.repeats)
    x = gt_states_with_time_grad(pool, p["time_grid"], idx).detach()
    c = solver.step_coefficients(p)
    t_steps = median_time(lambda: solver.steps(field, x[:-1], c), args.repeats)

    def full_iter():
        loss = solver.steps(field, gt_states_with_time_grad(pool, p2["time_grid"], idx)[:-1],
                            solver.step_coefficients(p2)).square().mean()
        loss.backward()
    p2 = None

    def it():
        nonlocal p2
        p2 = solver.decode()
        full_iter()
    t_iter = median_time(it, args.repeats)
    rows.append(("one iteration (batch 256, 4 steps x 2 stages = 2 model calls of 1024 rows)",
                 f"{t_iter * 1e3:.2f} ms: GT read {t_read * 1e3:.2f} ms, forward model calls {t_steps * 1e3:.2f} ms, "
                 f"backward + rest {max(0.0, t_iter - t_read - t_steps) * 1e3:.2f} ms"))

    print_table(f"Bespoke benchmark on {args.model} ({field.meta.get('arch', '')}, device {device}, "
                f"torch threads {torch.get_num_threads()})", rows)


if __name__ == "__main__":
    main()
