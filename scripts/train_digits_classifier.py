"""Train the small digits classifier whose features give the "digits FD" (not Inception FID).

    python scripts/train_digits_classifier.py [--out assets/digits_classifier.safetensors]

Data: scikit-learn's 1,797 8x8 digits in [-1, 1] (core.data.digits), a fixed split (seed 0) with
297 held-out images. Training: Adam, light augmentation (1-pixel shifts, Gaussian noise), fixed
seed, one CPU thread; about half a minute. Writes a safe checkpoint (never a pickle) recording
the split, the seed and the held-out accuracy.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.data import digits  # noqa: E402
from core.features import CLASSIFIER_PATH, ClassifierConfig, DigitsClassifier, save_classifier  # noqa: E402

N_TEST = 297  # held-out images (the last of a seed-0 permutation)
SPLIT_SEED = 0


def split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test) of the fixed split used by the script and its test."""
    x, y = digits()
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(SPLIT_SEED))
    tr, te = perm[:-N_TEST], perm[-N_TEST:]
    return x[tr], y[tr], x[te], y[te]


def augment(x: torch.Tensor, g: torch.Generator, noise: float) -> torch.Tensor:
    """Random shifts by up to one pixel (background -1 fills in) plus Gaussian noise."""
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)  # (B, 1, 10, 10)
    dx, dy = torch.randint(0, 3, (2,), generator=g).tolist()  # one shift per batch
    x = padded[:, :, dy:dy + 8, dx:dx + 8]
    return x + noise * torch.randn(x.shape, generator=g)


def train(epochs: int = 40, batch_size: int = 64, lr: float = 2e-3, noise: float = 0.1, seed: int = 0,
          cfg: ClassifierConfig = ClassifierConfig()) -> tuple[DigitsClassifier, dict]:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x_tr, y_tr, x_te, y_te = split()
    net = DigitsClassifier(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(x_tr.shape[0], generator=g)
        for idx in torch.split(perm, batch_size):
            loss = F.cross_entropy(net(augment(x_tr[idx], g, noise)), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    seconds = time.perf_counter() - t0
    net.eval()
    with torch.no_grad():
        acc = (net(x_te).argmax(1) == y_te).float().mean().item()
        train_acc = (net(x_tr).argmax(1) == y_tr).float().mean().item()
    info = {"data": "sklearn load_digits, 0..16 -> [-1, 1], shape (1, 8, 8)",
            "split": f"randperm(seed={SPLIT_SEED}), last {N_TEST} held out",
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "noise": noise, "seed": seed,
            "test_accuracy": acc, "train_accuracy": train_acc, "train_seconds": round(seconds, 2),
            "note": "features for a digits Frechet distance; NOT Inception FID"}
    return net, info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(CLASSIFIER_PATH))
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    net, info = train(epochs=args.epochs, seed=args.seed)
    digest = save_classifier(net, args.out, info)
    print(f"held-out accuracy {info['test_accuracy']:.4f} (train {info['train_accuracy']:.4f}), "
          f"{info['train_seconds']} s; wrote {args.out} ({digest[:12]})")


if __name__ == "__main__":
    main()
