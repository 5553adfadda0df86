"""Issue 12's acceptance table: learned solvers with the CLI's defaults (core.train.TrainConfig)
against their base solver, median over training seeds 0-2, prints one markdown table.

For each (model, family, NFE) and seed s: train with TrainConfig(seed=s) (every other value the
default, as `python -m core train-solver` does), then evaluate it and the base solver (midpoint
for RK2-Bespoke and BNS, Euler for RK1-Bespoke) on 2000 held-out samples: the "eval" noise
stream of seed 100 (core.seeds; disjoint from every training / validation stream), the same noise
for every solver, GT by dopri5 (tol 1e-5). Reports the median RMSE ratio learned / base, the
median training time (GT excluded, and with it) and iterations. Wall-clock times depend on the
machine's load: read the iteration counts beside them.

    python bench/bench_acceptance.py                      # checkerboard FM-OT RK2 @ 4, 8; digits FM-OT RK2 @ 8
    python bench/bench_acceptance.py --cases checkerboard_fm-ot:rk2-bespoke:8 --seeds 0 1 2 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.evaluate import evaluate, ground_truth  # noqa: E402
from core.seeds import stream_noise  # noqa: E402
from core.solvers.registry import get_solver  # noqa: E402
from core.train import SolverSpec, TrainConfig, train_solver  # noqa: E402

CASES = ("checkerboard_fm-ot:rk2-bespoke:8:0.40", "checkerboard_fm-ot:rk2-bespoke:4:0.30",
         "digits_fm-ot:rk2-bespoke:8:0.60")
"""model:family:NFE[:target ratio]."""
EVAL_SEED = 100


def run_case(model: str, family: str, nfe: int, seeds, n_eval: int, device: str) -> dict:
    from core import load_model
    field = load_model(os.path.join("assets", model + ".safetensors"), device=device)
    x0 = stream_noise(field, n_eval, EVAL_SEED, "eval", field.device)
    gt = ground_truth(field, x0)
    base = get_solver("euler" if family == "rk1-bespoke" else "midpoint", field)
    runs = []
    for s in seeds:
        t0 = time.perf_counter()
        res = train_solver(field, SolverSpec(family, nfe), TrainConfig(seed=s, device=device))
        wall = time.perf_counter() - t0
        rows = evaluate(field, [res.solver, base], [nfe], x0, gt)
        iters = res.history[-1]["iteration"] + sum(st["iterations"] for st in res.stages)
        runs.append({"seed": s, "learned": rows[0]["rmse"], "base": rows[1]["rmse"],
                     "ratio": rows[0]["rmse"] / rows[1]["rmse"], "val_rmse": res.best["rmse"],
                     "train_s": res.elapsed, "wall_s": wall, "iterations": iters,
                     "stages": [(st["nfe"], st["iterations"]) for st in res.stages] + [(nfe, res.history[-1]["iteration"])],
                     "stop": res.stop_reason})
        print(f"  {model} {family}@{nfe} seed {s}: ratio {runs[-1]['ratio']:.3f} (learned {rows[0]['rmse']:.4g}, "
              f"base {rows[1]['rmse']:.4g}), {iters} it, {res.elapsed:.0f} s training, {wall:.0f} s with GT",
              file=sys.stderr, flush=True)
    med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
    return {"model": model, "family": family, "nfe": nfe, "runs": runs, "ratio": med("ratio"),
            "learned": med("learned"), "base": med("base"), "train_s": med("train_s"), "wall_s": med("wall_s"),
            "iterations": med("iterations")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = []
    for case in args.cases:
        parts = case.split(":")
        r = run_case(parts[0], parts[1], int(parts[2]), args.seeds, args.n, args.device)
        r["target"] = float(parts[3]) if len(parts) > 3 else None
        out.append(r)
    d = TrainConfig()
    print(f"\nLearned / base RMSE, median of seeds {args.seeds}, {args.n} held-out samples (same noise for every "
          f"solver), CLI defaults (lr {d.lr}, {d.lr_schedule}, up to {d.iters} iterations per stage, patience "
          f"{d.patience}, coarse-to-fine {d.coarse_to_fine}); {args.threads} thread(s), {args.device}\n")
    print("| model | solver | NFE | learned RMSE | base RMSE | ratio | target | training s (with GT) | iterations |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in out:
        tgt = "" if r["target"] is None else f"<= {r['target']:.2f} " + ("yes" if r["ratio"] <= r["target"] else "NO")
        print(f"| {r['model']} | {r['family']} | {r['nfe']} | {r['learned']:.4g} | {r['base']:.4g} | {r['ratio']:.3f} | "
              f"{tgt} | {r['train_s']:.0f} ({r['wall_s']:.0f}) | {r['iterations']:.0f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
