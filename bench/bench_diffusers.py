"""A learned solver inside diffusers, against the pipeline's own scheduler, on small diffusers models
trained here (8x8 digits, UNet2DModel): PSNR to GT at equal NFE, and the sampling-time overhead of
BespokeScheduler over the stock step.

    python bench/bench_diffusers.py --out-dir /tmp/bespoke-diffusers-bench            # all of it
    python bench/bench_diffusers.py --kind flow --steps 3000 --bns-iters 200 --nfe 8
    python bench/bench_diffusers.py --equality    # only the equality table (tiny random models, seconds)

For each kind (flow: FlowMatchEulerDiscreteScheduler, velocity prediction, the default of flow
pipelines; vp: DDPMScheduler config, epsilon prediction, with DDIMScheduler as the deterministic
stock sampler) it trains the model (or reuses the saved pipeline folder), loads it with
`core.load_model(folder)`, trains BNS and RK2-Bespoke at one NFE with core.train, exports each as
a BespokeScheduler and runs it in the stock diffusers loop on held-out noise; GT is dopri5 on the
same noise. Timing: the stock loop (model + scheduler.step), medians over repeats, 1 thread.
"""
from __future__ import annotations

import argparse
import os
import statistics
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


def step_only(scheduler, unet, x, nfe: int, repeats: int) -> float:
    """Median time of the nfe scheduler.step calls of one solve, the model outputs replayed."""
    with torch.no_grad():
        scheduler.set_timesteps(nfe)
        outs, y = [], x.clone()
        for t in scheduler.timesteps:
            outs.append(unet(y, t).sample)
            y = scheduler.step(outs[-1], t, y).prev_sample

    def steps():
        scheduler.set_timesteps(nfe)
        y = x.clone()
        for t, o in zip(scheduler.timesteps, outs):
            y = scheduler.step(o, t, y).prev_sample

    with torch.no_grad():
        return median_time(steps, repeats)


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
    rows = []
    if not args.timing_only:
        t0 = time.perf_counter()
        gt = gt_solve(field, x0, atol=args.gt_tol, rtol=args.gt_tol)
        print(f"  GT: dopri5 tol {args.gt_tol:g}, NFE {gt.nfe}, {time.perf_counter() - t0:.1f} s")

    def score(name, x):
        if args.timing_only:
            return
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
    schedulers = {}
    if args.timing_only:  # the step's cost does not depend on the coefficients: an exported 8-NFE scheme
        from core.integrations.diffusers import scheduler_for
        schedulers["8-NFE scheme (dpm++2m as BespokeScheduler)"] = scheduler_for(field, "dpm++2m", nfe)
    tc = TrainConfig(iters=args.bns_iters, batch_size=64, n_train=args.n_train, n_val=128, val_every=20, gt_atol=args.gt_tol,
                     gt_rtol=args.gt_tol, seed=args.seed, device="cpu")
    for family, init, iters, lr in (() if args.timing_only else (
            ("rk2-bespoke", "identity", args.bespoke_iters, 2e-3),
            ("bns", "dpm++2m" if kind == "vp" else "euler", args.bns_iters, 5e-3))):
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
    # Sampling time: the stock loop with the pipeline's scheduler and with BespokeScheduler, interleaved
    # (A B A B ...) so that the machine's load hits both alike; and the scheduler alone (the model's
    # outputs recorded once and replayed).
    xb = field.noise(args.time_batch, generator=torch.Generator().manual_seed(5))
    for family, s in schedulers.items():
        t_def, t_b = [], []
        for _ in range(args.repeats):
            t_def.append(median_time(lambda: stock_loop(default, unet, xb.clone(), nfe), 1))
            t_b.append(median_time(lambda: stock_loop(s, unet, xb.clone(), nfe), 1))
        a, b = statistics.median(t_def), statistics.median(t_b)
        sa, sb = step_only(default, unet, xb, nfe, args.repeats), step_only(s, unet, xb, nfe, args.repeats)
        rows.append((kind, f"time: {family} / {type(default).__name__}", nfe,
                     f"{b * 1e3:.1f} ms / {a * 1e3:.1f} ms ({100 * (b / a - 1):+.1f} %); scheduler steps alone "
                     f"{sb * 1e3:.2f} ms / {sa * 1e3:.2f} ms"))
        print(f"  {rows[-1][1]}: {rows[-1][3]}", flush=True)
    return rows


def equality_table() -> None:
    """Max |difference| between the exported scheduler in diffusers' loops / pipelines and core's own
    solve from the same noise, and between our DDIM / DPM-Solver++(2M) and diffusers' on the same grid
    (tiny random models, float32; the same set-ups as tests/test_diffusers.py)."""
    from diffusers import (DDIMScheduler, DDPMPipeline, DDPMScheduler, DPMSolverMultistepScheduler,
                           FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, UNet2DModel)
    from core.integrations.diffusers import as_velocity_field, scheduler_for
    from core.solvers.bespoke import bespoke_from_family
    from core.solvers.bns import BNSSolver
    from core.solvers.dedicated import ddim_sample, dpmpp2m_sample

    def jitter(s, scale, seed):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in s.parameters():
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
        return s

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D")).eval().requires_grad_(False)
    with torch.no_grad():
        unet.conv_out.weight.mul_(0.05)
    folder = Path(tempfile.mkdtemp()) / "ddpm"
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(folder)
    field = load_model(folder)
    unet = field.module
    x0 = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    rows = []

    def add(what, a, b):
        rows.append((what, float((a - b).abs().max()), float((a - b).abs().max() / b.abs().max())))

    for name, sched, ours in (
            ("DDIMScheduler vs core ddim (trailing grid, 10 steps)",
             DDIMScheduler(timestep_spacing="trailing", set_alpha_to_one=True, clip_sample=False), ddim_sample),
            ("DPMSolverMultistepScheduler vs core dpm++2m (trailing, 10 steps)",
             DPMSolverMultistepScheduler(timestep_spacing="trailing", final_sigmas_type="zero"), dpmpp2m_sample)):
        theirs = stock_loop(sched, unet, x0.clone(), 10)
        grid = torch.cat([field.path.t_of_timestep(sched.timesteps.double()), torch.ones(1, dtype=torch.float64)])
        with torch.no_grad():
            add(name, theirs, ours(field, x0, grid).x)
    for fam, solver in (("bns", jitter(BNSSolver(6, path=field.path).init_from("dpm++2m", field), 0.05, 0)),
                        ("rk2-bespoke", jitter(bespoke_from_family("rk2-bespoke", 6), 0.1, 0))):
        s = scheduler_for(field, solver)
        with torch.no_grad():
            ref = solver.solve(field, x0).x
        add(f"BespokeScheduler ({fam}, NFE 6) in the stock loop vs core", stock_loop(s, unet, x0.clone(), 6), ref)
        pipe = DDPMPipeline(unet=unet, scheduler=s)
        pipe.set_progress_bar_config(disable=True)
        img = pipe(batch_size=4, generator=torch.Generator().manual_seed(3), num_inference_steps=6,
                   output_type="pt").images
        add(f"BespokeScheduler ({fam}) in DDPMPipeline vs core (output in [0, 1])", img, (ref / 2 + 0.5).clamp(0, 1))
    torch.manual_seed(0)
    tr = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
                               num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
                               pooled_projection_dim=8, out_channels=4).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    cond = {"encoder_hidden_states": torch.randn(1, 5, 16, generator=g), "pooled_projections": torch.randn(1, 8, generator=g)}
    uncond = {k: torch.zeros_like(v) for k, v in cond.items()}
    f3 = as_velocity_field(tr, FlowMatchEulerDiscreteScheduler(shift=3.0), (4, 8, 8), cond=cond, uncond=uncond,
                           guidance_scale=3.0)
    solver = jitter(BNSSolver(5, path=f3.path, guidance_scale=3.0).init_from("dpm++2m", f3), 0.05, 1)
    try:
        from diffusers import StableDiffusion3Pipeline
        pipe = StableDiffusion3Pipeline(transformer=tr, scheduler=scheduler_for(f3, solver), vae=None, text_encoder=None,
                                        tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None,
                                        tokenizer_3=None)
        pipe.set_progress_bar_config(disable=True)
        two = {k: v.repeat(2, *([1] * (v.dim() - 1))) for k, v in cond.items()}
        utwo = {k: v.repeat(2, *([1] * (v.dim() - 1))) for k, v in uncond.items()}
        out = pipe(prompt_embeds=two["encoder_hidden_states"], pooled_prompt_embeds=two["pooled_projections"],
                   negative_prompt_embeds=utwo["encoder_hidden_states"],
                   negative_pooled_prompt_embeds=utwo["pooled_projections"], guidance_scale=3.0, num_inference_steps=5,
                   height=64, width=64, output_type="latent", generator=torch.Generator().manual_seed(7)).images
        with torch.no_grad():
            ref = solver.solve(f3, torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(7))).x
        add("BespokeScheduler (bns, NFE 5) in StableDiffusion3Pipeline, CFG 3 vs core", out, ref)
    except ImportError as e:
        print(f"(StableDiffusion3Pipeline skipped: {e})")
    print("\n| what | max abs diff | relative to max abs |\n|---|---|---|")
    for what, a, r in rows:
        print(f"| {what} | {a:.2e} | {r:.2e} |")


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
    p.add_argument("--equality", action="store_true", help="only the equality table (tiny random models)")
    p.add_argument("--timing-only", action="store_true", help="only the sampling times (no GT, no training)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.equality:
        equality_table()
        return
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
