"""A learned solver inside diffusers, against the pipeline's own scheduler, on small diffusers models
trained here (8x8 digits, UNet2DModel): PSNR to GT at equal NFE, and the sampling-time overhead of
BespokeScheduler over the stock step.

    python bench/bench_diffusers.py --out-dir /tmp/bespoke-diffusers-bench            # all of it
    python bench/bench_diffusers.py --kind flow --steps 3000 --bns-iters 200 --nfe 8

For each kind (flow: FlowMatchEulerDiscreteScheduler, velocity prediction, the default of flow
pipelines; vp: DDPMScheduler config, epsilon prediction, with DDIMScheduler as the deterministic
stock sampler) it trains the model (or reuses the saved pipeline folder), loads it with
`core.load_model(folder)`, trains BNS and RK2-Bespoke at one NFE with core.train, exports each as
a BespokeScheduler and runs it in the stock diffusers loop on held-out noise; GT is dopri5 on the
same noise. Timing: the stock loop (model + scheduler.step), medians over repeats, 1 thread.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.timing import median_time  # noqa: E402
from core import load_model  # noqa: E402
from core.data import digits  # noqa: E402
from core.metrics import psnr  # noqa: E402
from core.solvers import gt_solve  # noqa: E402
from core.train import SolverSpec, TrainConfig, train_solver  # noqa: E402


def _unet():
    from diffusers import UNet2DModel
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32), norm_num_groups=8,
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))


def train_pipeline(kind: str, folder: Path, steps: int, batch: int, seed: int) -> float:
    """Train a UNet2DModel on the 8x8 digits with diffusers' own training recipe; save the pipeline."""
    from diffusers import DDPMPipeline, DDPMScheduler, FlowMatchEulerDiscreteScheduler
    torch.manual_seed(seed)
    data, _ = digits()
    net = _unet()
    sched = FlowMatchEulerDiscreteScheduler() if kind == "flow" else DDPMScheduler()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.0)
    lr = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.05)
    ema = [p.detach().clone() for p in net.parameters()]
    t0 = time.perf_counter()
    for step in range(steps):
        x1 = data[torch.randint(0, len(data), (batch,))]
        noise = torch.randn_like(x1)
        if kind == "flow":  # x = (1 - s) x1 + s noise, the network predicts noise - x1 at timestep 1000 s
            s = torch.rand(batch)
            x = (1 - s[:, None, None, None]) * x1 + s[:, None, None, None] * noise
            out, target = net(x, s * 1000).sample, noise - x1
        else:  # DDPM: x = sqrt(acp) x1 + sqrt(1 - acp) noise, epsilon prediction
            tau = torch.randint(0, 1000, (batch,))
            x = sched.add_noise(x1, noise, tau)
            out, target = net(x, tau).sample, noise
        loss = torch.nn.functional.mse_loss(out, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr.step()
        with torch.no_grad():
            for e, p in zip(ema, net.parameters()):
                e.lerp_(p, 1 - 0.999 if step > steps // 10 else 1.0)
        if step % 500 == 0 or step == steps - 1:
            print(f"  [{kind}] step {step} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    with torch.no_grad():
        for e, p in zip(ema, net.parameters()):
            p.copy_(e)
    DDPMPipeline(unet=net.eval(), scheduler=sched).save_pretrained(folder)
    return time.perf_counter() - t0


def load_scheduler_config(folder: Path) -> dict:
    import json
    return json.loads((folder / "scheduler" / "scheduler_config.json").read_text())


def stock_loop(scheduler, unet, x, nfe: int, **set_kw):
    with torch.no_grad():
        scheduler.set_timesteps(nfe, **set_kw)
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x).prev_sample
    return x


def run(kind: str, args) -> list[tuple]:
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler
    from core.integrations.diffusers import BespokeScheduler, export_scheduler
    folder = Path(args.out_dir) / f"digits_{kind}"
    if not (folder / "model_index.json").is_file():
        print(f"training the {kind} model ({args.steps} steps) ...", flush=True)
        secs = train_pipeline(kind, folder, args.steps, args.batch_size, args.seed)
        print(f"  saved {folder} ({secs:.0f} s)")
    field = load_model(folder)
    unet, nfe = field.module, args.nfe
    x0 = field.noise(args.n, generator=torch.Generator().manual_seed(1234))
    t0 = time.perf_counter()
    gt = gt_solve(field, x0, atol=args.gt_tol, rtol=args.gt_tol)
    print(f"  GT: dopri5 tol {args.gt_tol:g}, NFE {gt.nfe}, {time.perf_counter() - t0:.1f} s")
    rows = []

    def score(name, x):
        rows.append((kind, name, nfe, float(psnr(x, gt.x, field.data_range).mean())))
        print(f"  {name:<44} PSNR {rows[-1][3]:.2f} dB", flush=True)

    base_cfg = load_scheduler_config(folder)
    if kind == "flow":
        default = FlowMatchEulerDiscreteScheduler.from_config(base_cfg)
        score("FlowMatchEulerDiscrete (pipeline default)", stock_loop(default, unet, x0.clone(), nfe))
    else:
        default = DDIMScheduler.from_config(base_cfg, clip_sample=False)
        score("DDIMScheduler (defaults, clip_sample off)", stock_loop(default, unet, x0.clone(), nfe))
        dpm = DPMSolverMultistepScheduler.from_config(base_cfg)
        score("DPMSolverMultistepScheduler (defaults)", stock_loop(dpm, unet, x0.clone(), nfe))
    tc = TrainConfig(iters=args.bns_iters, batch_size=64, n_train=args.n_train, n_val=128, val_every=20, gt_atol=args.gt_tol,
                     gt_rtol=args.gt_tol, seed=args.seed, device="cpu")
    schedulers = {}
    for family, init, iters, lr in (("rk2-bespoke", "identity", args.bespoke_iters, 2e-3),
                                    ("bns", "dpm++2m" if kind == "vp" else "euler", args.bns_iters, 5e-3)):
        t0 = time.perf_counter()
        res = train_solver(field, SolverSpec(family, nfe=nfe, init=init),
                           TrainConfig(**{**tc.__dict__, "iters": iters, "lr": lr}))
        secs = time.perf_counter() - t0
        d = Path(tempfile.mkdtemp()) / family
        export_scheduler(field, res.solver, d)
        s = BespokeScheduler.from_pretrained(d)
        schedulers[family] = s
        x = stock_loop(s, unet, x0.clone(), nfe)
        with torch.no_grad():
            same = float((x - res.solver.solve(field, x0).x).abs().max())
        score(f"BespokeScheduler: {family} (trained {secs:.0f} s)", x)
        print(f"    stock loop vs core's solve: max |diff| {same:.2e}")
    # Sampling time: the stock loop with the pipeline's scheduler and with BespokeScheduler.
    xb = field.noise(args.time_batch, generator=torch.Generator().manual_seed(5))
    t_def = median_time(lambda: stock_loop(default, unet, xb.clone(), nfe), args.repeats)
    for family, s in schedulers.items():
        t_b = median_time(lambda: stock_loop(s, unet, xb.clone(), nfe), args.repeats)
        rows.append((kind, f"time: {family} / {type(default).__name__}", nfe,
                     f"{t_b * 1e3:.1f} ms / {t_def * 1e3:.1f} ms ({100 * (t_b / t_def - 1):+.1f} %)"))
        print(f"  {rows[-1][1]}: {rows[-1][3]}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default=os.path.join(tempfile.gettempdir(), "bespoke-diffusers-bench"))
    p.add_argument("--kind", choices=["flow", "vp", "both"], default="both")
    p.add_argument("--steps", type=int, default=1500, help="model training steps (default 1500)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--nfe", type=int, default=8)
    p.add_argument("--n", type=int, default=500, help="held-out noise samples for PSNR (default 500)")
    p.add_argument("--n-train", type=int, default=256, help="GT pairs / paths for the learned solvers")
    p.add_argument("--bns-iters", type=int, default=100)
    p.add_argument("--bespoke-iters", type=int, default=100)
    p.add_argument("--gt-tol", type=float, default=1e-6)
    p.add_argument("--time-batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for kind in (["flow", "vp"] if args.kind == "both" else [args.kind]):
        rows += run(kind, args)
    print(f"\nNFE {args.nfe}, PSNR (dB) to dopri5 GT on {args.n} held-out noise samples; times: median of "
          f"{args.repeats} stock loops (model + scheduler.step), batch {args.time_batch}, {args.threads} thread(s)\n")
    print("| model | sampler | NFE | PSNR / time |")
    print("|---|---|---|---|")
    for kind, name, nfe, v in rows:
        print(f"| digits {kind} | {name} | {nfe} | {v if isinstance(v, str) else f'{v:.2f}'} |")


if __name__ == "__main__":
    main()
