"""Training-recipe experiments: train learned solvers with TrainConfig overrides and print, for
each run, the held-out RMSE against midpoint and Euler, where it stopped, and its validation
curve (every 50 iterations), so that a recipe choice (learning rate, schedule, patience) is
made on measured runs.

    python bench/bench_recipe.py --runs bns:16:midpoint bns:16:midpoint:lr_schedule=cosine \
        "bns:16:midpoint:lr_schedule=cosine,lr=0.04,patience=0,iters=1000" --json out.jsonl

A run is FAMILY:NFE[:INIT[:KEY=VALUE,...]] with TrainConfig field names (the rest are the
defaults). Evaluation: 2000 samples of the "eval" noise stream of --seed, GT by dopri5, the same
noise for every run. Runs one after the other on --threads torch threads.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import fields

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core import load_model  # noqa: E402
from core.evaluate import evaluate, ground_truth  # noqa: E402
from core.seeds import stream_noise  # noqa: E402
from core.solvers import get_solver  # noqa: E402
from core.train import SolverSpec, TrainConfig, train_solver  # noqa: E402

_TYPES = {f.name: f.type for f in fields(TrainConfig)}
_PARSE = {"int": int, "float": float, "str": str, "bool": lambda v: v.lower() in ("1", "true", "yes")}


def parse_run(text: str) -> tuple[SolverSpec, dict]:
    """'bns:16:midpoint:lr=0.002,patience=0' -> (SolverSpec, TrainConfig overrides)."""
    parts = text.split(":")
    if len(parts) < 2:
        raise ValueError(f"a run is FAMILY:NFE[:INIT[:KEY=VALUE,...]], got {text!r}")
    family, nfe = parts[0], int(parts[1])
    init = parts[2] if len(parts) > 2 and parts[2] else "identity"
    if family == "bns" and init == "identity":
        init = "euler"
    overrides = {}
    for item in filter(None, (parts[3] if len(parts) > 3 else "").split(",")):
        key, _, value = item.partition("=")
        if key not in _TYPES or key == "seed":
            raise ValueError(f"unknown TrainConfig field {key!r} in {text!r} (use --seed for the seed)")
        overrides[key] = _PARSE[_TYPES[key]](value)
    return SolverSpec(family, nfe=nfe, init=init), overrides


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="assets/checkerboard_fm-ot.safetensors")
    ap.add_argument("--runs", nargs="+", required=True, help="FAMILY:NFE[:INIT[:KEY=VALUE,...]]")
    ap.add_argument("--n", type=int, default=2000, help="held-out evaluation samples")
    ap.add_argument("--seed", type=int, default=0, help="training seed (TrainConfig.seed) and evaluation noise seed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="append one JSON line per run to this file")
    a = ap.parse_args(argv)
    runs = [parse_run(r) for r in a.runs]  # every run checked before anything is trained
    torch.set_num_threads(a.threads)
    field = load_model(a.model)
    x0 = stream_noise(field, a.n, a.seed, "eval")
    gt = ground_truth(field, x0)
    base: dict[tuple[str, int], float] = {}
    for text, (spec, overrides) in zip(a.runs, runs):
        for name in ("midpoint", "euler"):
            if (name, spec.nfe) not in base and not (name == "midpoint" and spec.nfe % 2):
                base[name, spec.nfe] = evaluate(field, [get_solver(name, field)], [spec.nfe], x0, gt)[0]["rmse"]
        t0 = time.perf_counter()
        res = train_solver(field, spec, TrainConfig(seed=a.seed, **overrides))
        seconds = time.perf_counter() - t0
        r = evaluate(field, [res.solver], [spec.nfe], x0, gt)[0]
        metric = "psnr" if spec.family == "bns" else "rmse"
        curve = [(h["iteration"], round(h[metric], 4)) for h in res.history if metric in h]
        row = {"run": text, "model": a.model, "seed": a.seed, "rmse": r["rmse"], "psnr": r["psnr"],
               "vs_midpoint": r["rmse"] / base["midpoint", spec.nfe] if ("midpoint", spec.nfe) in base else None,
               "vs_euler": r["rmse"] / base["euler", spec.nfe], "best_iteration": res.best_iteration,
               "iterations": res.history[-1]["iteration"] + sum(s["iterations"] for s in res.stages),
               "stop_reason": res.stop_reason, "seconds": seconds, "validation": curve}
        mid = "" if row["vs_midpoint"] is None else f"{row['vs_midpoint']:.3f}x midpoint, "
        print(f"{text}: RMSE {r['rmse']:.4g} ({mid}{row['vs_euler']:.3f}x euler), PSNR {r['psnr']:.2f} dB, "
              f"{row['iterations']} it ({res.stop_reason}), {seconds:.0f} s", flush=True)
        print(f"  validation {metric}: {curve[::2]}", flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
