"""Build the learned solvers shipped with the MNIST model (assets/mnist_fm-ot/solvers/): RK2-Bespoke
and BNS at NFE 8, each with the training curve it was trained with (<stem>.history.json), trained
with the command line on one ground-truth data set made once with make-gt.

    python scripts/make_mnist_solvers.py                      # GT, then both solvers, one after the other
    python scripts/make_mnist_solvers.py --stage gt           # or stage by stage:
    python scripts/make_mnist_solvers.py --stage rk2-bespoke  # (these two can run at the same time)
    python scripts/make_mnist_solvers.py --stage bns

Budget (28x28 U-Net on a CPU): 300 training + 200 validation GT paths (multiples of 10: the labels
cycle 0..9 over the rows), dopri5 at 1e-4, float32 (the network is float32), batches of 20 paths; the rest is core.train.TrainConfig's defaults. Each
command is printed before it runs, with its wall time after.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = "assets/mnist_fm-ot"
SOLVERS = {"rk2-bespoke": [], "bns": ["--init", "midpoint"]}


def run(cmd: list[str]) -> float:
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "core", *cmd], cwd=ROOT, check=True)
    dt = time.perf_counter() - t0
    print(f"  ({dt:.0f} s)", flush=True)
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage", choices=["all", "gt", *SOLVERS], default="all")
    ap.add_argument("--gt-dir", default="build/mnist_gt", help="where the GT data set goes (not shipped)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--nfe", type=int, default=8)
    args = ap.parse_args()
    common = ["--model", MODEL, "--device", "cpu", "--threads", str(args.threads)]
    if args.stage in ("all", "gt"):
        run(["make-gt", *common, "--n", "300", "--n-val", "200", "--shard-size", "100", "--store", "paths", "--atol", "1e-4", "--rtol", "1e-4",
             "--dtype", "float32", "--seed", "0", "--quiet", "--out", args.gt_dir])
    for family, extra in SOLVERS.items():
        if args.stage not in ("all", family):
            continue
        stem = f"{MODEL}/solvers/{family}_nfe{args.nfe}"
        run(["train-solver", *common, "--gt", args.gt_dir, "--solver", family, "--nfe", str(args.nfe), *extra,
             "--batch-size", "20", "--iters", str(args.iters), "--quiet", "--out", f"{stem}.bespoke",
             "--history", f"{stem}.history.json"])


if __name__ == "__main__":
    main()
