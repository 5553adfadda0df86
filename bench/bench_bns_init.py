"""Does BNS gain from a better base solver to start from? Trains BNS with the CLI's defaults
(core.train.TrainConfig) from each base init at each NFE and evaluates it against midpoint on
held-out noise (the "eval" seed stream, 2000 samples, GT by dopri5). Prints a markdown table.

    python bench/bench_bns_init.py --model assets/checkerboard_fm-ot.safetensors --nfe 4 8 16 \
        --inits euler midpoint dpm++2m --threads 1 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core import load_model  # noqa: E402
from core.evaluate import evaluate, ground_truth  # noqa: E402
from core.seeds import stream_noise  # noqa: E402
from core.solvers import get_solver  # noqa: E402
from core.train import SolverSpec, TrainConfig, train_solver  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="assets/checkerboard_fm-ot.safetensors")
    ap.add_argument("--nfe", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--inits", nargs="+", default=["euler", "midpoint", "dpm++2m"])
    ap.add_argument("--n", type=int, default=2000, help="held-out evaluation samples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    field = load_model(a.model)
    x0 = stream_noise(field, a.n, a.seed, "eval")
    gt = ground_truth(field, x0)
    mid = get_solver("midpoint", field)
    rows = []
    for nfe in a.nfe:
        base = evaluate(field, [mid], [nfe], x0, gt)[0]["rmse"]
        for init in a.inits:
            t0 = time.perf_counter()
            res = train_solver(field, SolverSpec("bns", nfe=nfe, init=init), TrainConfig(seed=a.seed))
            r = evaluate(field, [res.solver], [nfe], x0, gt)[0]
            rows.append({"nfe": nfe, "init": init, "rmse": r["rmse"], "psnr": r["psnr"], "midpoint_rmse": base,
                         "ratio": r["rmse"] / base, "init_val_rmse": res.init["rmse"], "iterations":
                         res.history[-1]["iteration"], "seconds": time.perf_counter() - t0})
            print(f"NFE {nfe} init {init}: RMSE {r['rmse']:.4g} ({r['rmse'] / base:.3f} x midpoint), "
                  f"{rows[-1]['iterations']} it, {rows[-1]['seconds']:.0f} s", flush=True)
    print(f"\nBNS from each base init, CLI defaults, seed {a.seed}, {a.n} held-out samples, {a.threads} thread(s)\n")
    print("| NFE | init | BNS RMSE | / midpoint | PSNR (dB) | iterations | s (with GT) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['nfe']} | {r['init']} | {r['rmse']:.4g} | {r['ratio']:.3f} | {r['psnr']:.2f} | {r['iterations']} | "
              f"{r['seconds']:.0f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"model": a.model, "seed": a.seed, "n": a.n, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
