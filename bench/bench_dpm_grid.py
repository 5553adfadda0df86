"""DPM-Solver++(2M) on its two time grids (core.solvers.dedicated.DPM_GRIDS), every shipped
Gaussian-path model: RMSE to GT (dopri5, tol 1e-5) from the same 2000 evaluation-noise samples
(seed 0), NFE 4 / 8 / 16. The default grid (DPM_GRID) is the one that wins here.

    python bench/bench_dpm_grid.py [--models assets/checkerboard_eps-vp.safetensors ...] [--n 2000]
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.evaluate import ground_truth  # noqa: E402
from core.metrics import rmse  # noqa: E402
from core.seeds import stream_noise  # noqa: E402
from core.solvers.dedicated import DPM_GRID, DPM_GRIDS, dpmpp2m_sample, logsnr_grid  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=sorted(glob.glob("assets/*_*.safetensors")))
    ap.add_argument("--nfe", nargs="*", type=int, default=[4, 8, 16])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from core import load_model
    print(f"DPM-Solver++(2M) RMSE to GT, {args.n} samples (evaluation noise, seed {args.seed}); default grid: "
          f"{DPM_GRID!r}\n")
    print("| model | grid | " + " | ".join(f"NFE {n}" for n in args.nfe) + " |")
    print("|---|---|" + "---|" * len(args.nfe))
    for m in args.models:
        field = load_model(m)
        if getattr(field, "path", None) is None:
            continue
        x0 = stream_noise(field, args.n, args.seed, "eval")
        x1 = ground_truth(field, x0).x1
        for kind in DPM_GRIDS:
            errs = []
            for n in args.nfe:
                with torch.no_grad():
                    x = dpmpp2m_sample(field, x0, logsnr_grid(field.path, n, kind=kind)).x
                errs.append(float(rmse(x, x1).mean()))
            print(f"| {os.path.basename(m).rsplit('.', 1)[0]} | {kind} | " + " | ".join(f"{e:.4g}" for e in errs) + " |")


if __name__ == "__main__":
    main()
