"""The models the app can open: shipped checkpoints in assets/, analytic fields with exact
ground truth, and checkpoints the user uploads. Loading goes through core (never unpickled).

A model is named by a stable key: "shipped:<file name>", "analytic:<name>" or
"upload:<sha256 prefix>". No streamlit here; explorer/state.py caches what these return.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from core import checkpoint, limits
from core.analytic import mixture_field
from core.field import VelocityField
from core.paths import get_path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"
MODEL_SUFFIXES = (".safetensors", ".bespoke")
MAX_UPLOAD_MB = limits.MAX_UPLOAD_MB  # per uploaded checkpoint, decimal MB (the shipped ones are far smaller)
UPLOAD_LIMIT_LABEL = f"at most {MAX_UPLOAD_MB} MB = {MAX_UPLOAD_MB * 10**6:,} bytes"


@dataclass(frozen=True)
class ModelEntry:
    """One row of the model picker."""

    key: str
    label: str
    source: str  # "shipped", "analytic" or "upload"
    file: Optional[str] = None  # the checkpoint path for shipped models


class ModelLoadError(ValueError):
    """A model that cannot be opened; the message is one readable line."""


# ------------------------------------------------------------------------------------------
# Analytic models: closed-form velocity fields (exact GT), always available.
# ------------------------------------------------------------------------------------------

def _circle_means(k: int, radius: float) -> torch.Tensor:
    a = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    return radius * torch.stack([torch.cos(a), torch.sin(a)], 1)  # (K, 2)


ANALYTIC = {
    "8gaussians-fm-ot": ("Analytic: 8 Gaussians, FM-OT (exact field)", "fm-ot"),
    "8gaussians-eps-vp": ("Analytic: 8 Gaussians, eps-VP (exact field)", "eps-vp"),
}


def analytic_field(name: str) -> VelocityField:
    """8 Gaussians (std 0.08) on a circle of radius 0.75, with the exact marginal velocity."""
    if name not in ANALYTIC:
        raise ModelLoadError(f"unknown analytic model {name!r}; known: {sorted(ANALYTIC)}")
    label, path_name = ANALYTIC[name]
    field = mixture_field(get_path(path_name), _circle_means(8, 0.75).float(), c=0.08)
    field.model_id = f"analytic-{name}"
    field.meta = {"data": "mixture of 8 Gaussians (std 0.08) on a circle of radius 0.75",
                  "architecture": "closed-form marginal velocity (no network)", "prediction": "velocity (exact)",
                  "parameters": 0}
    return field


# ------------------------------------------------------------------------------------------
# Shipped and uploaded checkpoints: core.load_model.
# ------------------------------------------------------------------------------------------

def _is_model_file(p: Path) -> bool:
    """A valid checkpoint of kind "model" (assets/ also holds solvers and feature networks)."""
    try:
        _, header = checkpoint.load(p)
    except checkpoint.CheckpointError:
        return False
    return header.get("kind") == "model"


def _is_pipeline_folder(p: Path) -> bool:
    return p.is_dir() and (p / "model_index.json").is_file()


def shipped_files() -> list[Path]:
    """Model checkpoints under assets/ and the diffusers pipeline folders directly in it (sorted,
    so the default is stable). Nothing is imported or loaded for a folder here: diffusers is
    imported only when one is picked."""
    if not ASSETS.is_dir():
        return []
    folders = [p for p in ASSETS.iterdir() if _is_pipeline_folder(p)]
    files = [p for p in ASSETS.rglob("*") if p.is_file() and p.suffix in MODEL_SUFFIXES
             and not any(f in p.parents for f in folders) and _is_model_file(p)]
    return sorted(files + folders)


SOLVER_SUFFIXES = (".bespoke", ".safetensors")


def shipped_solver_files(key: str) -> list[tuple[Path, Optional[Path]]]:
    """The learned solvers shipped with a shipped pipeline folder (key "shipped:<folder>"):
    (solver file, its training-curve file or None) for each file in <folder>/solvers/, sorted.
    The curve is <same stem>.history.json (core/history.py)."""
    source, _, name = key.partition(":")
    folder = ASSETS / name / "solvers"
    if source != "shipped" or not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix in SOLVER_SUFFIXES:
            hist = p.with_name(p.stem + ".history.json")
            out.append((p, hist if hist.is_file() else None))
    return out


def _pretty(stem: str) -> str:
    return stem.replace("_", " ")


def catalogue() -> list[ModelEntry]:
    """Shipped checkpoints first (the default is the first one), then the analytic models."""
    rows = [ModelEntry(f"shipped:{p.relative_to(ASSETS).as_posix()}", _pretty(p.stem), "shipped", str(p))
            for p in shipped_files()]
    rows += [ModelEntry(f"analytic:{k}", label, "analytic") for k, (label, _) in ANALYTIC.items()]
    return rows


def upload_key(raw: bytes) -> str:
    return "upload:" + hashlib.sha256(raw).hexdigest()[:16]


def _load_model_fn():
    try:
        from core import load_model  # core.load_model(path | bytes) -> VelocityField
    except ImportError:
        return None
    return load_model


def load_checkpoint(src, name: str) -> VelocityField:
    """Open a model checkpoint (a path or raw bytes) with core.load_model; any failure becomes
    ModelLoadError naming the file and the reason."""
    load_model = _load_model_fn()
    if load_model is None:
        raise ModelLoadError("this build of core has no model loader (core.load_model) yet")
    try:
        field = load_model(src)
    except Exception as e:  # a corrupt or foreign file must give a message, never a traceback
        raise ModelLoadError(f"{name}: {e}" if name else str(e)) from None
    if not isinstance(field, VelocityField):
        raise ModelLoadError(f"{name}: the loader returned {type(field).__name__}, not a velocity field")
    return field


def load_entry(key: str, raw: Optional[bytes] = None) -> VelocityField:
    """The velocity field for a catalogue key (raw: the uploaded bytes for "upload:" keys)."""
    source, _, name = key.partition(":")
    if source == "analytic":
        return analytic_field(name)
    if source == "shipped":
        path = ASSETS / name
        if not path.is_file() and not _is_pipeline_folder(path):
            raise ModelLoadError(f"shipped model {name!r} is missing from {ASSETS}")
        return load_checkpoint(str(path), name)
    if source == "folder":
        return load_folder(name)
    if source == "upload":
        if raw is None:
            raise ModelLoadError("the uploaded model is no longer in this session; upload it again")
        if len(raw) > MAX_UPLOAD_MB * 10**6:
            raise ModelLoadError(f"the file is {len(raw) / 1e6:.1f} MB, over the limit ({UPLOAD_LIMIT_LABEL})")
        return load_checkpoint(raw, "")
    raise ModelLoadError(f"unknown model key {key!r}")


def folder_key(path: str) -> str:
    """The catalogue key of a local diffusers pipeline folder (its absolute path)."""
    return "folder:" + str(Path(path).expanduser().resolve())


def load_folder(path: str) -> VelocityField:
    """A local diffusers pipeline folder (server-side path), validated like an upload: it must be
    a folder with model_index.json, its weights at most MAX_UPLOAD_MB, and core.load_model must
    accept it; any failure becomes ModelLoadError."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ModelLoadError(f"{path!r} is not a folder on this machine")
    if not (p / "model_index.json").is_file():
        raise ModelLoadError(f"{path!r} has no model_index.json: not a diffusers pipeline folder")
    size = sum(f.stat().st_size for sub in ("unet", "transformer") if (p / sub).is_dir()
               for f in (p / sub).rglob("*") if f.is_file())
    if size > MAX_UPLOAD_MB << 20:
        raise ModelLoadError(f"{path!r}: its denoiser is {size / 2**20:.1f} MB, over the {MAX_UPLOAD_MB} MB limit")
    return load_checkpoint(str(p), p.name)


def describe(field: VelocityField, label: str = "") -> dict:
    """What the Model page shows about a field: readable name -> value pairs."""
    meta = dict(field.meta or {})
    data = meta.get("data")
    data_name = data.get("name", "?") if isinstance(data, dict) else meta.get("data", "?")
    n_params = meta.get("parameters")
    if n_params is None and field.module is not None:
        n_params = sum(p.numel() for p in field.module.parameters())
    arch = meta.get("architecture") or meta.get("arch", "?")
    if isinstance(meta.get("arch_args"), dict):
        arch += " (" + ", ".join(f"{k}={v}" for k, v in meta["arch_args"].items()) + ")"
    cond = meta.get("conditioning")
    return {
        "model": label or str(field.model_id),
        "data": data_name,
        "sample shape": " x ".join(str(d) for d in field.data_shape),
        "Gaussian path": field.path.name if field.path is not None else "none",
        "prediction type": (getattr(field, "prediction", None) or meta.get("prediction")
                            or getattr(getattr(field, "convention", None), "prediction_type", None) or "?"),
        "architecture": arch,
        "parameters": f"{n_params:,}" if isinstance(n_params, int) else "?",
        "classes": str(cond.get("num_classes")) if isinstance(cond, dict) else "unconditional",
        "guidance scale w": "none" if field.guidance_scale is None else f"{field.guidance_scale:g}",
        "model id (content hash)": str(field.model_id)[:16],
    }


def is_image(field: VelocityField) -> bool:
    return len(field.data_shape) == 3


def is_2d(field: VelocityField) -> bool:
    return tuple(field.data_shape) == (2,)
