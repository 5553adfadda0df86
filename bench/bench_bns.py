"""Benchmark of issue 4 (BNS solvers): the PSNR table on shipped models and the training speed.

1. `table`: PSNR (dB, mean over samples of 10 log10(R^2 / MSE), docs/MATH.md §8.1) against dopri5
   GT on held-out noise, at each NFE, for Euler, midpoint, DDIM, DPM-Solver++(2M) (on its log-SNR
   grid, and on a uniform-t grid), RK2-Bespoke (even NFE) and BNS, per model. Learned solvers are
   trained here with core.train.train_solver on their own noise (seed 0); the evaluation noise
   has another seed. BNS is trained from each base in --bns-init and the one with the best
   VALIDATION PSNR is kept.
2. `speed`: BNS at NFE 8 on a 2-D model: seconds until the validation PSNR first comes within
   0.1 dB of its final (best) value, the GT pairs' cost, and what one iteration's time goes to.

    python bench/bench_bns.py table --model assets/checkerboard_fm-ot.safetensors --nfe 4 6 8 12
    python bench/bench_bns.py speed --model assets/checkerboard_fm-ot.safetensors
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

from bench.timing import median_time, print_table  # noqa: E402
from core.evaluate import ground_truth  # noqa: E402
from core.field import label_period, round_to_period  # noqa: E402
from core.metrics import psnr  # noqa: E402
from core.solvers.base import uniform_grid  # noqa: E402
from core.solvers.dedicated import dpmpp2m_sample  # noqa: E402
from core.solvers.registry import get_solver  # noqa: E402
from core.train import SolverSpec, TrainConfig, resolve_device, train_solver  # noqa: E402

BASELINES = ("euler", "midpoint", "ddim", "dpm++2m")


def load(model: str, device):
    from core import load_model
    return load_model(model, device=device)


def eval_psnr(field, solver, x0, x1, nfe) -> float:
    with torch.no_grad():
        x = solver.solve(field, x0, nfe).x
    return float(psnr(x.to(x1), x1, field.data_range).mean())


def bns_config(args, device) -> TrainConfig:
    return TrainConfig(iters=args.bns_iters, lr=args.bns_lr, batch_size=args.batch_size, val_every=args.val_every,
                       n_train=args.n_train, n_val=args.n_val, device=str(device), seed=0)


def cmd_table(args) -> None:
    device = resolve_device(args.device)
    results = {}
    for model in args.model:
        field = load(model, device)
        n_eval = round_to_period(args.n_eval, label_period(field))
        x0 = field.noise(n_eval, generator=torch.Generator().manual_seed(12345)).to(device)
        gt = ground_truth(field, x0, atol=args.gt_tol, rtol=args.gt_tol)
        rows: dict[str, dict[int, float]] = {}
        info: dict[str, dict] = {}
        for name in BASELINES:
            solver = get_solver(name, field)
            for nfe in args.nfe:
                try:
                    solver.check_nfe(nfe)
                except ValueError:
                    continue
                rows.setdefault(name, {})[nfe] = eval_psnr(field, solver, x0, gt.x1, nfe)
        # DPM-Solver++(2M) on a uniform-in-t grid too, so that the log-SNR grid's choice is visible.
        for nfe in args.nfe:
            with torch.no_grad():
                x = dpmpp2m_sample(field, x0, uniform_grid(nfe)).x
            rows.setdefault("dpm++2m (uniform t)", {})[nfe] = float(psnr(x.to(gt.x1), gt.x1, field.data_range).mean())
        for nfe in args.nfe:
            learned = []
            if nfe % 2 == 0:
                learned.append(("rk2-bespoke", SolverSpec("rk2-bespoke", nfe),
                                TrainConfig(iters=args.bespoke_iters, n_train=args.n_train, n_val=args.n_val,
                                            device=str(device), seed=0)))
            inits = [i for i in args.bns_init if not (i == "midpoint" and nfe % 2)]
            learned += [("bns", SolverSpec("bns", nfe, init=i, sigma0=args.bns_sigma0), bns_config(args, device))
                        for i in inits]
            for name, spec, cfg in learned:
                res = train_solver(field, spec, cfg)
                val = res.best.get("psnr")
                # BNS from several inits: keep the one with the best VALIDATION PSNR (held-out
                # training split), never by the evaluation numbers.
                if name in info and nfe in info[name] and info[name][nfe]["val_psnr"] >= val:
                    continue
                rows.setdefault(name, {})[nfe] = eval_psnr(field, res.solver, x0, gt.x1, None)
                info.setdefault(name, {})[nfe] = {"init": spec.init, "train_s": round(res.elapsed, 2),
                                                  "gt_s": round(res.gt_seconds, 2), "val_psnr_init": res.init.get("psnr"),
                                                  "val_psnr": val, "best_iteration": res.best_iteration}
                print(f"  {os.path.basename(model)} {name}@{nfe} (init {spec.init}): eval PSNR {rows[name][nfe]:.2f} dB "
                      f"(validation {res.init.get('psnr'):.2f} -> {val:.2f}; {res.elapsed:.1f} s "
                      f"training, {res.gt_seconds:.1f} s GT)", file=sys.stderr, flush=True)
        results[model] = {"model_id": field.model_id, "psnr": rows, "train": info, "n_eval": n_eval, "gt_nfe": gt.nfe}
        print(f"\n{os.path.basename(model)} ({field.meta.get('arch', '')}, path {field.path.name}, "
              f"{n_eval} held-out samples, GT dopri5 tol {args.gt_tol:g}): PSNR in dB\n")
        print(markdown(rows, args.nfe))
        if "bns" in info:
            print("\nBNS init chosen by validation PSNR: " +
                  ", ".join(f"NFE {n}: {info['bns'][n]['init']}" for n in args.nfe if n in info["bns"]))
        if "bns" in rows:
            print("\n" + verdict(rows, args.nfe))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)


def markdown(rows: dict[str, dict[int, float]], nfes) -> str:
    head = "| solver | " + " | ".join(f"NFE {n}" for n in nfes) + " |"
    lines = [head, "|---" * (len(nfes) + 1) + "|"]
    for name, vals in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{vals[n]:.2f}" if n in vals else "-" for n in nfes) + " |")
    return "\n".join(lines)


def verdict(rows, nfes) -> str:
    out = []
    for n in nfes:
        others = {k: v[n] for k, v in rows.items() if k != "bns" and n in v}
        best_other = max(others, key=others.get)
        ded = max(rows[k][n] for k in ("ddim", "dpm++2m", "dpm++2m (uniform t)") if n in rows.get(k, {}))
        line = (f"NFE {n}: BNS {rows['bns'][n]:.2f} vs best other {best_other} {others[best_other]:.2f} "
                f"({rows['bns'][n] - others[best_other]:+.2f} dB); vs best dedicated {rows['bns'][n] - ded:+.2f} dB")
        if "rk2-bespoke" in rows and n in rows["rk2-bespoke"]:
            line += f"; vs RK2-Bespoke {rows['bns'][n] - rows['rk2-bespoke'][n]:+.2f} dB"
        out.append(line)
    return "\n".join(out)


def cmd_speed(args) -> None:
    from core.solvers.bns import build_bns
    from core.train import fit
    device = resolve_device(args.device)
    field = load(args.model[0], device)
    spec = SolverSpec("bns", args.nfe[0], init=args.bns_init[0], sigma0=args.bns_sigma0)
    cfg = bns_config(args, device)
    t0 = time.perf_counter()
    solver, obj = build_bns(field, spec, cfg, device)
    build_s = time.perf_counter() - t0
    res = fit(solver, obj, cfg, spec=spec)
    vals = [(h["elapsed"], h["psnr"]) for h in res.history if "psnr" in h]
    final = res.best["psnr"]
    t_final = next(t for t, v in vals if v >= final - 0.1)
    per_iter = res.elapsed / max(1, res.history[-1]["iteration"])

    # Where one iteration goes: the unrolled solve (model calls), backward, decode, validation.
    gen = torch.Generator().manual_seed(0)
    t_decode = median_time(lambda: solver.scheme(), args.repeats)
    t_fwd = median_time(lambda: obj.loss(solver, gen), args.repeats)

    def fwd_bwd():
        solver.zero_grad()
        obj.loss(solver, gen).mean().backward()
    t_fb = median_time(fwd_bwd, args.repeats)
    t_val = median_time(lambda: obj.validate(solver), max(3, args.repeats // 4))
    x = obj.x0[: cfg.batch_size]
    t_model = median_time(lambda: [field(0.5, x) for _ in range(spec.nfe)], args.repeats)

    rows = [
        (f"BNS NFE {spec.nfe} (init {spec.init}, sigma0 {spec.sigma0:g}): validation PSNR init -> best",
         f"{res.init['psnr']:.2f} -> {final:.2f} dB (best at iteration {res.best_iteration} of {cfg.iters})"),
        ("  seconds of training until validation PSNR is within 0.1 dB of the final", f"{t_final:.2f} s (target <= 30 s)"),
        (f"  GT pairs ({cfg.n_train} + {cfg.n_val} dopri5 solves), made once", f"{obj.gt_seconds:.2f} s, {obj.gt_nfe} NFE"),
        ("  the same including the GT pairs and setup", f"{t_final + build_s:.2f} s"),
        (f"  full run: {cfg.iters} iterations, validation every {cfg.val_every}",
         f"{res.elapsed:.2f} s, {per_iter * 1e3:.1f} ms/iteration"),
        (f"one iteration (batch {cfg.batch_size}, {spec.nfe} model calls)",
         f"forward + backward {t_fb * 1e3:.1f} ms = forward {t_fwd * 1e3:.1f} ms (of which bare model calls "
         f"{t_model * 1e3:.1f} ms, coefficients {t_decode * 1e3:.2f} ms) + backward {max(0.0, t_fb - t_fwd) * 1e3:.1f} ms"),
        (f"one validation ({cfg.n_val} samples, no grad)", f"{t_val * 1e3:.1f} ms (every {cfg.val_every} iterations)"),
    ]
    print_table(f"BNS benchmark on {args.model[0]} ({field.meta.get('arch', '')}, device {device}, "
                f"torch threads {torch.get_num_threads()})", rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["table", "speed"])
    ap.add_argument("--model", nargs="+", default=["assets/checkerboard_fm-ot.safetensors"])
    ap.add_argument("--nfe", type=int, nargs="+", default=None, help="table: 4 6 8 12; speed: 8")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--n-eval", type=int, default=2048, help="held-out evaluation samples")
    ap.add_argument("--gt-tol", type=float, default=1e-5, help="dopri5 atol = rtol of the evaluation GT")
    ap.add_argument("--n-train", type=int, default=1024, help="GT pairs / paths to train on")
    ap.add_argument("--n-val", type=int, default=512, help="validation samples")
    ap.add_argument("--batch-size", type=int, default=128, help="BNS: GT pairs per iteration")
    ap.add_argument("--bns-iters", type=int, default=250)
    ap.add_argument("--bns-lr", type=float, default=1e-2)
    ap.add_argument("--bns-init", nargs="+", default=["euler", "dpm++2m"],
                    help="base solver(s) to start BNS from; with several, the best by validation PSNR is kept")
    ap.add_argument("--bns-sigma0", type=float, default=1.0)
    ap.add_argument("--bespoke-iters", type=int, default=600)
    ap.add_argument("--val-every", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--out", default="", help="write the results as JSON here")
    args = ap.parse_args(argv)
    args.nfe = args.nfe or ([4, 6, 8, 12] if args.what == "table" else [8])
    if args.threads:
        torch.set_num_threads(args.threads)
    (cmd_table if args.what == "table" else cmd_speed)(args)


if __name__ == "__main__":
    main()
