"""diffusers in and out: a pipeline's denoiser as a velocity field u(t, x), and any learned solver
as a diffusers scheduler (`BespokeScheduler`) or as a time grid (sigmas / timesteps).

In. `field_from_pipeline(folder)` (what `core.load_model(folder)` calls for a folder saved with
`save_pretrained`) and `as_velocity_field(model, scheduler_config, ...)` (any denoiser from
Python, text-conditioned ones with pre-computed conditioning) convert once, at the boundary:
- discrete VP schedulers (DDPM / DDIM / DPM-Solver / Euler ... configs: betas -> alphas_cumprod)
  become the Gaussian path `core.paths.DiscreteVPPath` ("vp-discrete"): our t maps to the
  timestep tau = (N - 1) - N t, the network sees max(tau, 0), and its prediction_type
  (epsilon / v_prediction / sample) is converted to a velocity with core.paths' formulas;
- flow schedulers (FlowMatchEulerDiscrete, or any with use_flow_sigmas) map onto FM-OT: sigma =
  1 - t, the network sees timestep = sigma * num_train_timesteps and predicts noise - data, so
  u = -output. A shift (static or dynamic) only chooses where the sampler steps; the ODE, and so
  the learned solver, does not depend on it.
The state x is the pipeline's own latent in both cases (VP: x = sqrt(acp) x1 + sqrt(1 - acp) x0;
flow: x = (1 - sigma) x1 + sigma x0), so init_noise_sigma = 1 and nothing is rescaled.

Out. `BespokeScheduler` runs a solver written as a linear scheme (core/solvers/linear.py:
x_k = A_k x0 + sum_j B_kj u_j, one model call per entry; RK2-Bespoke's intermediate evaluations
are extra timesteps) inside the stock loop `for t in s.timesteps: out = model(x, t); x = s.step(out,
t, x).prev_sample` and inside stock pipelines. It refuses an NFE, custom sigmas or an img2img start
it was not made for; `check_model` / `attach` refuse another model or guidance scale (a pipeline
never tells its scheduler the guidance scale, so that check happens when attaching).
`export_sigmas` writes the learned time grid alone (a grid loses BNS's coefficients and Bespoke's
scales).

diffusers is imported lazily: nothing here runs at `import core`.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from ..checkpoint import state_dict_hash
from ..field import VelocityField
from ..paths import CondOTPath, DiscreteVPPath, GaussianPath, get_path, velocity_from_prediction

DIFFUSERS_VERSION = "0.42.1"  # the version pinned in requirements.txt and checked by the tests

VP_PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x1"}
FLOW = "flow"
T_EDGE = 1e-5  # "sample" (x1) networks: t clamped to 1 - T_EDGE, as core.model_io does for x1 models


def _import_diffusers():
    try:
        import diffusers  # noqa: F401
    except ImportError as e:  # pragma: no cover - diffusers is in requirements.txt
        raise ImportError(f"this needs diffusers (pip install diffusers=={DIFFUSERS_VERSION}): {e}") from None
    return diffusers


# --------------------------------------------------------------------------------------
# Scheduler config -> path, prediction, timestep map
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Convention:
    """How a diffusers model sees time and what it predicts.

    kind: "vp-discrete" or "flow"; path: our Gaussian path; prediction_type: diffusers' name
    ("epsilon", "v_prediction", "sample", or "flow" = noise - data); num_train_timesteps N."""

    kind: str
    path: GaussianPath
    prediction_type: str
    num_train_timesteps: int

    def timestep(self, t: Tensor) -> Tensor:
        """The timestep the network is given at our time t (float64, differentiable in t)."""
        t = torch.as_tensor(t).to(torch.float64)
        if self.kind == FLOW:
            return (1 - t) * self.num_train_timesteps
        return self.path.timestep(t).clamp_min(0.0)

    def sigma(self, t: Tensor) -> Tensor:
        """The scheduler's sigma at our time t: 1 - t (flow) or the VE sigma_t / alpha_t (VP)."""
        t = torch.as_tensor(t).to(torch.float64)
        if self.kind == FLOW:
            return 1 - t
        c = self.path(t)
        return c.sigma / c.alpha

    def coefficients(self, t: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """(beta, gamma) with u = beta x + gamma out at the scalar time t, computed in `dtype` exactly as
        to_velocity does (the scheduler computes them once per step in set_timesteps)."""
        if self.kind == FLOW:
            return torch.zeros((), dtype=dtype), -torch.ones((), dtype=dtype)
        pred = VP_PREDICTIONS[self.prediction_type]
        t = torch.as_tensor(t, dtype=dtype)
        if pred == "x1":
            t = t.clamp(max=1 - T_EDGE)
        from ..paths import prediction_coefficients
        beta, gamma = prediction_coefficients(self.path, pred, t)
        return beta.to(dtype), gamma.to(dtype)

    def to_velocity(self, t: Tensor, x: Tensor, out: Tensor) -> Tensor:
        """u(t, x) from the network's output at t (t a scalar or (B,), in x's dtype)."""
        if self.kind == FLOW:
            return -out
        pred = VP_PREDICTIONS[self.prediction_type]
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if pred == "x1":
            t = t.clamp(max=1 - T_EDGE)
        return velocity_from_prediction(lambda _t, _x: out, self.path, pred)(t, x)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "path": self.path.to_dict(), "prediction_type": self.prediction_type,
                "num_train_timesteps": self.num_train_timesteps}

    @classmethod
    def from_dict(cls, d: dict) -> "Convention":
        return cls(d["kind"], get_path(d["path"]), d["prediction_type"], int(d["num_train_timesteps"]))


def scheduler_config(config) -> dict:
    """A scheduler's config as a dict, from a scheduler object, a dict, or a folder / JSON file."""
    if isinstance(config, (str, os.PathLike)):
        p = Path(config)
        p = p / "scheduler_config.json" if p.is_dir() else p
        try:
            config = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read the scheduler config {str(p)!r}: {e}") from None
    cfg = getattr(config, "config", config)
    if not hasattr(cfg, "items"):
        raise ValueError(f"not a scheduler or scheduler config: {type(config).__name__}")
    out = {k: v for k, v in cfg.items()}
    if cfg is not config:  # a scheduler object: its config does not name its class
        out.setdefault("_class_name", type(config).__name__)
    return out


def convention_from_scheduler(config) -> Convention:
    """The convention of a scheduler (an object with .config, a config dict, or a folder / file)."""
    cfg = scheduler_config(config)
    name = str(cfg.get("_class_name", ""))
    n = cfg.get("num_train_timesteps", 1000)
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"scheduler {name}: num_train_timesteps must be an integer >= 2, got {n!r}")
    if "FlowMatch" in name or cfg.get("use_flow_sigmas"):
        if cfg.get("invert_sigmas"):
            raise ValueError(f"scheduler {name} has invert_sigmas=True (Mochi's convention): not supported")
        pred = cfg.get("prediction_type", "flow_prediction")
        if pred not in (None, "flow_prediction", "epsilon") or (pred == "epsilon" and "FlowMatch" not in name):
            raise ValueError(f"flow scheduler {name} with prediction_type {pred!r}: only velocity (flow) "
                             f"prediction is supported")
        return Convention(FLOW, CondOTPath(), FLOW, n)
    if "beta_schedule" not in cfg and "trained_betas" not in cfg and "beta_start" not in cfg:
        raise ValueError(f"scheduler {name or cfg!r} is neither a discrete VP scheduler (betas) nor a flow "
                         f"scheduler (FlowMatch*, use_flow_sigmas); it cannot be converted")
    if cfg.get("rescale_betas_zero_snr"):
        raise ValueError(f"scheduler {name} rescales betas to zero terminal SNR (alpha = 0 at the first step): "
                         f"not supported")
    pred = cfg.get("prediction_type", "epsilon")
    if pred not in VP_PREDICTIONS:
        raise ValueError(f"scheduler {name}: prediction_type {pred!r} is not one of {list(VP_PREDICTIONS)}")
    path = DiscreteVPPath(num_train_timesteps=n, beta_start=cfg.get("beta_start", 0.0001),
                          beta_end=cfg.get("beta_end", 0.02), beta_schedule=cfg.get("beta_schedule", "linear"),
                          trained_betas=cfg.get("trained_betas"))
    return Convention("vp-discrete", path, pred, n)


# --------------------------------------------------------------------------------------
# In: a diffusers denoiser as a velocity field
# --------------------------------------------------------------------------------------

weights_hash = state_dict_hash  # the model part of model_id (core.checkpoint)


def _model_id(module: Optional[torch.nn.Module], conv: Convention, fallback: str) -> str:
    h = hashlib.sha256(json.dumps(conv.to_dict(), sort_keys=True).encode())
    h.update((weights_hash(module) if module is not None else fallback).encode())
    return h.hexdigest()


def _rows(v, idx: Tensor):
    """Row i of a batch gets v[i % L] for a tensor v with L rows; other values pass as they are."""
    if isinstance(v, Tensor) and v.dim() >= 1:
        return v[idx % v.shape[0]]
    return v


def _output(out) -> Tensor:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return out[0]
    if hasattr(out, "sample"):
        return out.sample
    raise TypeError(f"the model returned {type(out).__name__}; expected a tensor, a tuple or an output with .sample")


@dataclass
class DiffusersField(VelocityField):
    """A diffusers denoiser as u(t, x) (see the module docstring).

    model: the callable (a diffusers model, or anything called as model(x, timestep=..., **kw));
    convention: how it sees time / what it predicts; cond: model keyword arguments (tensors with
    L rows: row i of a batch gets row i % L, like class labels); uncond: the unconditional
    keyword arguments for classifier-free guidance (same keys), used when guidance_scale is not
    None and != 1: u = u_uncond + w (u_cond - u_uncond), both in ONE batched call = one NFE.
    Class-conditional UNets: `labels` (L,) go in as class_labels, the null label is num_classes.
    """

    model: Any = None
    convention: Optional[Convention] = None
    cond: Optional[dict] = None
    uncond: Optional[dict] = None
    labels: Optional[Tensor] = None
    num_classes: int = 0
    out_channels: Optional[int] = None  # keep the first channels (learned-variance UNets output 2 C)

    def with_labels(self, labels) -> "DiffusersField":
        from ..model_io import _check_labels
        return _bind(self, labels=_check_labels(labels, self.num_classes))

    def with_guidance(self, guidance_scale) -> "DiffusersField":
        return _bind(self, guidance_scale=_check_w(self, guidance_scale))

    def for_rows(self, idx) -> "DiffusersField":
        """The field as seen by rows idx of a larger batch (each row keeps its labels / conditioning)."""
        if isinstance(idx, slice):
            idx = torch.arange(*idx.indices(idx.stop))
        idx = torch.as_tensor(idx, dtype=torch.long).flatten().cpu()
        labels = None if self.labels is None else self.labels[idx % self.labels.shape[0]]
        cond = None if self.cond is None else {k: _rows(v, idx) for k, v in self.cond.items()}
        uncond = None if self.uncond is None else {k: _rows(v, idx) for k, v in self.uncond.items()}
        return _bind(self, labels=labels, cond=cond, uncond=uncond)


def _check_w(field: DiffusersField, w):
    if w is None:
        return None
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
        raise ValueError(f"guidance scale must be a finite number, got {w!r}")
    if float(w) != 1.0 and field.uncond is None and field.num_classes == 0:
        raise ValueError(f"guidance scale {w!r} needs unconditional inputs: pass uncond=... (text models) or use a "
                         f"class-conditional model")
    return float(w)


def _model_device_dtype(model) -> tuple[torch.device, Optional[torch.dtype]]:
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device, p.dtype
    return torch.device("cpu"), None


def _bind(base: DiffusersField, **changes) -> DiffusersField:
    """A new field with `changes`, its fn rebuilt."""
    f = replace(base, **changes)
    model, conv = f.model, f.convention
    w = f.guidance_scale

    def call(t: Tensor, x: Tensor) -> Tensor:
        dev, dt = _model_device_dtype(model)
        xin = x.to(device=dev, dtype=dt or x.dtype)
        B = x.shape[0]
        t = torch.as_tensor(t, dtype=x.dtype)
        tb = t.expand(B) if t.dim() == 0 else t
        tau = conv.timestep(tb).to(device=dev, dtype=dt or x.dtype)  # differentiable in t (BNS learns its times)
        idx = torch.arange(B)
        kw = {k: _rows(v, idx) for k, v in (f.cond or {}).items()}
        if f.labels is not None:
            kw["class_labels"] = f.labels[idx % f.labels.shape[0]].to(dev)
        guided = w is not None and w != 1.0
        if guided:
            ukw = {k: _rows(v, idx) for k, v in (f.uncond or {}).items()}
            if f.labels is not None:
                ukw["class_labels"] = torch.full((B,), f.num_classes, dtype=torch.long, device=dev)
            both = {k: torch.cat([kw[k], ukw[k]]) if isinstance(kw.get(k), Tensor) else kw.get(k, ukw[k])
                    for k in set(kw) | set(ukw)}
            out = _output(model(torch.cat([xin, xin]), timestep=torch.cat([tau, tau]), **both))
        else:
            out = _output(model(xin, timestep=tau, **kw))
        if f.out_channels is not None and out.shape[1] != f.out_channels:
            out = out[:, : f.out_channels]
        if guided:
            out = out[B:] + w * (out[:B] - out[B:])
        out = out.to(device=x.device, dtype=x.dtype)
        if tuple(out.shape) != tuple(x.shape):
            raise ValueError(f"the model maps {tuple(x.shape)} to {tuple(out.shape)}")
        return conv.to_velocity(t, x, out)

    f.fn = call
    f.meta = {**f.meta, "guidance_scale": w,
              "labels": None if f.labels is None else f.labels.tolist()[:64]}
    return f


def as_velocity_field(model, scheduler, data_shape, cond: Optional[dict] = None, uncond: Optional[dict] = None,
                      guidance_scale: Optional[float] = None, labels=None, num_classes: int = 0,
                      data_range: float = 2.0, model_id: Optional[str] = None,
                      out_channels: Optional[int] = None, meta: Optional[dict] = None) -> DiffusersField:
    """Any diffusers denoiser (or a callable model(x, timestep=..., **kw)) as a velocity field.

    scheduler: its scheduler (object, config dict or folder) giving the path and prediction type.
    data_shape: one sample's (latent) shape. cond / uncond: pre-computed conditioning keyword
    arguments (e.g. encoder_hidden_states and pooled_projections of an SD3 transformer) for the
    conditional and unconditional halves; guidance_scale w combines them like the pipelines do.
    model_id: defaults to a hash of the model's weights and the convention (solvers record it;
      hashing reads every weight once: seconds for a GB-size model; pass your own id to skip it).
    """
    conv = convention_from_scheduler(scheduler)
    meta = {"scheduler_config": {k: v for k, v in scheduler_config(scheduler).items()
                                 if isinstance(v, (str, int, float, bool, type(None)))}, **(meta or {})}
    module = model if isinstance(model, torch.nn.Module) else None
    mid = model_id or _model_id(module, conv, f"callable-{id(model)}")
    base = DiffusersField(fn=lambda t, x: x, data_shape=tuple(int(d) for d in data_shape), path=conv.path,
                          data_range=float(data_range), model_id=mid, guidance_scale=None,
                          meta={"source": "diffusers", "diffusers": conv.to_dict(), **(meta or {})},
                          module=module, model=model, convention=conv, cond=cond, uncond=uncond,
                          labels=None, num_classes=int(num_classes), out_channels=out_channels)
    if num_classes:
        from ..model_io import _check_labels
        base.labels = _check_labels(torch.arange(num_classes) if labels is None else labels, num_classes)
    elif labels is not None:
        raise ValueError("this model is unconditional; it takes no class labels")
    return _bind(base, guidance_scale=_check_w(base, guidance_scale))


def is_pipeline_folder(src) -> bool:
    return isinstance(src, (str, os.PathLike)) and Path(src).is_dir() and (Path(src) / "model_index.json").is_file()


TEXT_CONDITIONED = ("SD3Transformer2DModel", "FluxTransformer2DModel", "UNet2DConditionModel")
FACTS_FILE = "bespoke.json"  # this project's facts and defaults next to a pipeline it ships (scripts/make_mnist.py)
MAX_FACTS_BYTES = 64 * 1024


def pipeline_facts(folder) -> dict:
    """The folder's bespoke.json (a pipeline this project made: build facts and the defaults the
    app uses: guidance_scale, data_range), checked; {} when the folder has none. A file that is
    too big, not a JSON object, or with a default out of range raises ValueError (one line)."""
    p = Path(folder) / FACTS_FILE
    if not p.is_file():
        return {}
    if p.stat().st_size > MAX_FACTS_BYTES:
        raise ValueError(f"{str(p)!r} is over {MAX_FACTS_BYTES} bytes: not a facts file")
    try:
        facts = json.loads(p.read_text(), parse_constant=lambda c: float("nan"))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {str(p)!r}: {e}") from None
    if not isinstance(facts, dict):
        raise ValueError(f"{str(p)!r} must hold a JSON object, got {type(facts).__name__}")
    for key, lo, hi in (("guidance_scale", 0.0, 100.0), ("data_range", 1e-6, 1e6)):
        v = facts.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi):
            raise ValueError(f"{str(p)!r}: {key} must be a number in [{lo:g}, {hi:g}], got {v!r}")
    return facts


def _data_name(facts: dict, shape: tuple, fallback: str) -> str:
    """The data set a pipeline was trained on, when it is one of core.data's (so the report and
    the app can compare its samples with real ones): bespoke.json's "dataset", or the first part
    of its "name" (<data>_<path>, as the shipped models are named); else the folder's name."""
    from ..data import DATASETS
    name = facts.get("dataset") or str(facts.get("name", "")).split("_")[0]
    spec = DATASETS.get(name) if isinstance(name, str) else None
    return name if spec is not None and tuple(spec.shape) == tuple(shape) else fallback


def field_from_pipeline(folder, guidance_scale: Optional[float] = None, device=None,
                        dtype: Optional[torch.dtype] = None, labels=None) -> DiffusersField:
    """A pipeline folder (model_index.json + unet/ or transformer/ + scheduler/) as a velocity
    field. Weights load from safetensors only (nothing is unpickled), offline. Unconditional and
    class-conditional UNet2DModels work here; text-conditioned denoisers need their conditioning
    from Python (`as_velocity_field(..., cond=...)`). Raises ValueError with one line otherwise."""
    folder = Path(folder)
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{str(folder)!r} is not a diffusers pipeline folder: cannot read model_index.json ({e})") from None
    part = "unet" if "unet" in index else "transformer" if "transformer" in index else None
    if part is None or "scheduler" not in index:
        raise ValueError(f"{str(folder)!r}: model_index.json must name a 'unet' or 'transformer' and a 'scheduler'; "
                         f"it has {sorted(k for k in index if not k.startswith('_'))}")
    for sub in (part, "scheduler"):
        if not (folder / sub).is_dir():
            raise ValueError(f"{str(folder)!r} has no {sub}/ folder")
    convention_from_scheduler(folder / "scheduler")  # refuse an unsupported scheduler before loading weights
    entry = index[part]
    cls_name = entry[1] if isinstance(entry, (list, tuple)) and len(entry) == 2 else None
    if cls_name in TEXT_CONDITIONED:
        raise ValueError(f"{str(folder)!r} holds a text-conditioned {cls_name}: load it from Python with its "
                         f"pre-computed conditioning, core.integrations.diffusers.as_velocity_field(model, "
                         f"scheduler, data_shape, cond=..., uncond=...)")
    diffusers = _import_diffusers()
    cls = getattr(diffusers, cls_name or "", None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
        raise ValueError(f"{str(folder)!r}: unknown {part} class {entry!r} (diffusers {diffusers.__version__})")
    try:
        model = cls.from_pretrained(folder / part, use_safetensors=True, local_files_only=True,
                                    low_cpu_mem_usage=False, torch_dtype=dtype or torch.float32)
    except Exception as e:  # diffusers raises many kinds (OSError, EnvironmentError, ValueError, ...)
        msg = " ".join(str(e).split())[:300]
        raise ValueError(f"cannot load {part}/ of {str(folder)!r} as {cls_name} (safetensors only): {msg}") from None
    model = model.to(device=device or "cpu").eval().requires_grad_(False)
    cfg = model.config
    size = cfg.get("sample_size")
    channels = cfg.get("in_channels")
    if not isinstance(channels, int):
        raise ValueError(f"{str(folder)!r}: the {part} config has no in_channels")
    size = (size, size) if isinstance(size, int) else tuple(size or ())
    if len(size) != 2:
        raise ValueError(f"{str(folder)!r}: the {part} config has no sample_size")
    shape = (channels, *size)
    n_class = cfg.get("num_class_embeds") or 0
    num_classes = max(int(n_class) - 1, 0) if n_class else 0  # the last class embedding is the null class
    out_channels = channels if cfg.get("out_channels", channels) == 2 * channels else None
    facts = pipeline_facts(folder)
    meta = {"file": os.fspath(folder), "arch": cls_name, "data": {"name": _data_name(facts, shape, folder.name),
                                                                  "shape": list(shape)},
            "pipeline": index.get("_class_name")}
    if facts:
        meta["bespoke"] = facts
        if isinstance(facts.get("train_seconds"), (int, float)):
            meta["training"] = {"seconds": float(facts["train_seconds"]), "steps": facts.get("steps"),
                                "device": facts.get("device")}
        if isinstance(facts.get("parameters"), int):
            meta["parameters"] = facts["parameters"]
    if num_classes:
        meta["conditioning"] = {"num_classes": num_classes, "null_class": num_classes}
        if guidance_scale is None:
            guidance_scale = facts.get("guidance_scale")  # the folder's own default, if it has one
    if not num_classes and guidance_scale is not None:
        raise ValueError(f"guidance scale {guidance_scale!r} given, but this model is unconditional")
    field = as_velocity_field(model, folder / "scheduler", shape, guidance_scale=guidance_scale, labels=labels,
                              num_classes=num_classes, out_channels=out_channels, meta=meta,
                              data_range=facts.get("data_range", 2.0))
    with torch.no_grad():  # a probe: right shape, finite values
        x = torch.zeros((2, *shape))
        y = field(torch.tensor(0.5), x)
    if not torch.isfinite(y).all():
        raise ValueError(f"{str(folder)!r}: the {part}'s output is not finite (NaN or inf weights?)")
    return field


# --------------------------------------------------------------------------------------
# Out: a learned solver as a scheme, a scheduler, a grid
# --------------------------------------------------------------------------------------

def solver_scheme(solver, field=None, nfe: Optional[int] = None):
    """The LinearScheme of a learned solver (BNS, RK1/RK2-Bespoke) or of a built-in one by name."""
    from ..solvers.dedicated import build_scheme
    from ..solvers.learned import LearnedSolver
    from ..solvers.linear import LinearScheme
    from .scheme import learned_scheme
    if isinstance(solver, (LearnedSolver, LinearScheme)):
        return learned_scheme(solver)
    name = getattr(solver, "name", solver)
    if isinstance(name, str) and nfe is not None:
        return build_scheme(name, nfe, getattr(field, "path", None))
    raise ValueError(f"cannot write {solver!r} as a linear scheme (learned solvers, or a built-in name with an NFE)")


def _convention_of(field) -> Convention:
    conv = getattr(field, "convention", None)
    if conv is None:
        raise ValueError("a diffusers scheduler can only be exported for a diffusers model (a pipeline folder, or "
                         "core.integrations.diffusers.as_velocity_field); this model is one of this project's "
                         "checkpoints: sample it with `python -m core sample`")
    return conv


def scheduler_for(field, solver, nfe: Optional[int] = None) -> "BespokeScheduler":
    """A BespokeScheduler running `solver` (learned, or a built-in name with nfe) for `field`."""
    conv = _convention_of(field)
    scheme = solver_scheme(solver, field, nfe)
    A = scheme.A.detach().to(torch.float64)
    if abs(float(A[0]) - 1.0) > 1e-12 or float(scheme.t[0]) != 0.0:
        raise ValueError(f"{scheme.name}: a scheduler must evaluate the model first at the initial noise "
                         f"(t_0 = 0, A_0 = 1); this scheme has t_0 = {float(scheme.t[0])}, A_0 = {float(A[0])}")
    cls = scheduler_class()
    return cls(times=scheme.t.detach().double().tolist(), A=A.tolist(), B=scheme.B.detach().double().tolist(),
               convention=conv.to_dict(), solver=getattr(solver, "name", str(solver)),
               model_id=field.model_id, guidance_scale=field.guidance_scale)


def export_scheduler(field, solver, out_dir, nfe: Optional[int] = None) -> "BespokeScheduler":
    """Write the scheduler folder (scheduler_config.json); load it with BespokeScheduler.from_pretrained."""
    s = scheduler_for(field, solver, nfe)
    s.save_pretrained(os.fspath(out_dir))
    return s


_CLASS = None


def scheduler_class():
    """BespokeScheduler, built on first use so that diffusers is imported lazily."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _make_scheduler_class()
    return _CLASS


def __getattr__(name):  # core.integrations.diffusers.BespokeScheduler, imported lazily
    if name == "BespokeScheduler":
        return scheduler_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class SchedulerRefusal(ValueError):
    """The scheduler was asked for something its solver was not trained for."""


def _make_scheduler_class():
    _import_diffusers()
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput

    class BespokeScheduler(SchedulerMixin, ConfigMixin):
        """A learned solver (any linear scheme x_k = A_k x0 + sum_j B_kj u_j) as a diffusers scheduler.

        One timestep per model evaluation: len(timesteps) = NFE. step k stores the velocity of the
        model output at t_k and returns x_{k+1}; the last step returns the sample. Made for one
        model (model_id), one guidance scale and one NFE: set_timesteps refuses another NFE and
        custom sigmas / timesteps; set_begin_index, add_noise and scale_noise refuse to start
        anywhere but the first timestep (an img2img strength < 1); `check_model` / `attach`
        refuse another model or guidance scale.
        """

        config_name = "scheduler_config.json"
        _compatibles: list = []
        order = 1

        @register_to_config
        def __init__(self, times: list = None, A: list = None, B: list = None, convention: dict = None,
                     solver: str = "", model_id: Optional[str] = None, guidance_scale: Optional[float] = None,
                     num_train_timesteps: Optional[int] = None, use_flow_sigmas: bool = True,
                     use_dynamic_shifting: bool = False, shift: float = 1.0):
            if times is None or A is None or B is None or convention is None:
                raise ValueError("BespokeScheduler needs times, A, B and convention (use export_scheduler)")
            from ..solvers.linear import LinearScheme
            self.scheme = LinearScheme(str(solver), torch.tensor(times, dtype=torch.float64),
                                       torch.tensor(A, dtype=torch.float64), torch.tensor(B, dtype=torch.float64))
            self.conv = Convention.from_dict(convention)
            self.nfe = self.scheme.nfe
            self.init_noise_sigma = 1.0
            self.num_inference_steps = None
            self.timesteps = None
            self.sigmas = None
            self._step_index = None
            self._begin_index = None
            self._x0, self._us = None, []

        def __len__(self) -> int:
            return self.conv.num_train_timesteps

        @property
        def step_index(self):
            return self._step_index

        @property
        def begin_index(self):
            return self._begin_index

        def set_begin_index(self, begin_index: int = 0):
            if begin_index != 0:
                raise SchedulerRefusal(
                    f"BespokeScheduler ({self.config.solver}) runs its learned solver from pure noise; starting at "
                    f"step {begin_index} (img2img with strength < 1) cannot be honoured: use strength=1.0")
            self._begin_index = 0

        def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None, sigmas=None,
                          timesteps=None, mu: Optional[float] = None, **kwargs):
            """The learned grid. num_inference_steps must be the trained NFE (or None); mu (a
            resolution-dependent flow shift) is ignored: a shift re-times the ODE, the learned
            solver already fixes its own times."""
            if sigmas is not None or timesteps is not None:
                raise SchedulerRefusal(f"BespokeScheduler ({self.config.solver}) uses its learned time grid; it "
                                       f"cannot take custom sigmas or timesteps")
            if num_inference_steps is not None and int(num_inference_steps) != self.nfe:
                raise SchedulerRefusal(
                    f"BespokeScheduler runs {self.config.solver}, trained for NFE {self.nfe}; it cannot run "
                    f"num_inference_steps={num_inference_steps} (pass num_inference_steps={self.nfe}, or train "
                    f"and export a solver for that NFE)")
            t = self.scheme.t[:-1].to(torch.float32)  # the model sees float32-rounded times
            self.timesteps = self.conv.timestep(t).to(device=device, dtype=torch.float32)
            self.sigmas = self.conv.sigma(self.scheme.t).to(device=device, dtype=torch.float32)
            self.num_inference_steps = self.nfe
            self._step_index, self._begin_index = None, None
            self._x0, self._us = None, []

        def _coefficients(self, dtype: torch.dtype) -> list:
            """Per step (beta_k, gamma_k) of u_k = beta_k x_k + gamma_k out_k, made once per dtype."""
            cache = self.__dict__.setdefault("_coef_cache", {})
            if dtype not in cache:
                cache[dtype] = [self.conv.coefficients(float(t), dtype) for t in self.scheme.t[:-1].to(dtype)]
            return cache[dtype]

        def scale_model_input(self, sample: Tensor, timestep=None) -> Tensor:
            return sample

        def _check_first(self, timestep, what: str):
            if self.timesteps is None:
                self.set_timesteps()
            ts = torch.as_tensor(timestep, dtype=torch.float32).flatten().cpu()
            if not torch.allclose(ts, self.timesteps[:1].cpu().expand_as(ts), atol=1e-3, rtol=0):
                raise SchedulerRefusal(
                    f"BespokeScheduler ({self.config.solver}) starts from pure noise at timestep "
                    f"{float(self.timesteps[0]):.4g}; {what} at timestep {ts[0].item():.4g} (img2img with "
                    f"strength < 1) cannot be honoured: use strength=1.0")

        def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps) -> Tensor:
            """Noise data to the first timestep only (x = alpha_0 x1 + sigma_0 noise)."""
            self._check_first(timesteps, "add_noise")
            c = self.conv.path(self.scheme.t[0])
            return float(c.alpha) * original_samples + float(c.sigma) * noise

        def scale_noise(self, sample: Tensor, timestep, noise: Optional[Tensor] = None) -> Tensor:
            """Flow pipelines' img2img noising, at the first timestep only."""
            self._check_first(timestep, "scale_noise")
            return self.add_noise(sample, noise, timestep)

        def check_model(self, model, guidance_scale: Optional[float] = None) -> None:
            """Refuse a model (a module or a velocity field) or guidance scale the solver was not made for."""
            got = getattr(model, "model_id", None)
            if got is None and isinstance(model, torch.nn.Module):
                got = _model_id(model, self.conv, "")
            want = self.config.model_id
            if want is not None and got is not None and got != want:
                raise SchedulerRefusal(f"this scheduler's solver ({self.config.solver}) was trained for model "
                                       f"{want[:12]}..., not for this one ({got[:12]}...)")
            if isinstance(model, VelocityField) and guidance_scale is None:
                guidance_scale = model.guidance_scale
            g = self.config.guidance_scale
            same = (g is None and guidance_scale in (None, 1.0)) or (
                g is not None and guidance_scale is not None and abs(float(g) - float(guidance_scale)) < 1e-9)
            if not same:
                raise SchedulerRefusal(f"this scheduler's solver ({self.config.solver}) was trained at guidance "
                                       f"scale {g!r}; it is used at {guidance_scale!r}")

        def attach(self, pipe, guidance_scale: Optional[float] = None):
            """Check the pipeline's denoiser and the guidance scale, then set pipe.scheduler = self."""
            model = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
            if model is None:
                raise SchedulerRefusal(f"{type(pipe).__name__} has no unet or transformer to check")
            self.check_model(model, guidance_scale)
            pipe.scheduler = self
            return pipe

        def step(self, model_output: Tensor, timestep, sample: Tensor, generator=None, return_dict: bool = True,
                 **kwargs):
            if self.timesteps is None:
                raise ValueError("call set_timesteps before step")
            k = 0 if self._step_index is None else self._step_index
            if k >= self.nfe:
                raise ValueError(f"BespokeScheduler: step called {k + 1} times, the solver has {self.nfe} steps "
                                 f"(call set_timesteps to start again)")
            want = float(self.timesteps[k])
            got = float(torch.as_tensor(timestep, dtype=torch.float32).flatten()[0])
            if abs(got - want) > 1e-3 * max(1.0, abs(want)):
                raise ValueError(f"BespokeScheduler: step {k} expects timestep {want:.6g}, got {got:.6g} "
                                 f"(iterate over scheduler.timesteps)")
            work = torch.float64 if sample.dtype == torch.float64 else torch.float32
            x = sample.to(work)
            if k == 0:
                self._x0, self._us = x, []
            beta, gamma = self._coefficients(work)[k]
            out = model_output.to(work)
            self._us.append(-out if self.conv.kind == FLOW else beta.to(x.device) * x + gamma.to(x.device) * out)
            A = self.scheme.A.to(device=x.device, dtype=work)
            B = self.scheme.B.to(device=x.device, dtype=work)
            x_next = A[k + 1] * self._x0
            for j, u_j in enumerate(self._us):
                x_next = x_next + B[k + 1, j] * u_j
            self._step_index = k + 1
            if self._step_index == self.nfe:
                self._x0, self._us = None, []
            x_next = x_next.to(model_output.dtype)
            if not return_dict:
                return (x_next,)
            return SchedulerOutput(prev_sample=x_next)

    BespokeScheduler.__module__ = __name__
    return BespokeScheduler


def learned_grid(solver, field=None, nfe: Optional[int] = None) -> tuple[Tensor, str]:
    """The solver's time grid in our t (float64, from 0 to 1) and what it is."""
    from ..solvers.bespoke import BespokeSolver
    if isinstance(solver, BespokeSolver):
        with torch.no_grad():
            return solver.decode()["t"].detach().double().cpu(), "step grid t_0..t_n (the ST scales s_r are lost)"
    scheme = solver_scheme(solver, field, nfe)
    return scheme.t.detach().double().cpu(), "evaluation times t_0..t_{m-1} and the end t_m = 1"


def export_sigmas(field, solver, nfe: Optional[int] = None) -> dict:
    """The learned time grid as sigmas / timesteps (a JSON-able dict; see the notes in it)."""
    conv = getattr(field, "convention", None)
    t, what = learned_grid(solver, field, nfe)
    if conv is None:  # one of this project's checkpoints: the grid in its own terms
        return _own_model_grid(field, solver, t, what)
    sig = conv.sigma(t).tolist()
    sig[-1] = 0.0
    tau = conv.timestep(t[:-1]).tolist()
    out: dict[str, Any] = {
        "solver": getattr(solver, "name", str(solver)), "model_id": field.model_id,
        "guidance_scale": field.guidance_scale, "grid": what, "t": t.tolist(),
        "sigmas": sig, "timesteps": tau,
        "note": ("A time grid alone loses the learned solver's coefficients (BNS) and scales (Bespoke): a stock "
                 "solver on this grid is not the learned solver. For the learned solver itself use "
                 "`--format diffusers` (BespokeScheduler)."),
    }
    if conv.kind == FLOW:
        out["convention"] = "flow: sigma = 1 - t, timestep = sigma * num_train_timesteps; sigmas end with 0"
        cfg = (field.meta.get("scheduler_config") or {})
        shift = float(cfg.get("shift", 1.0) or 1.0)
        dyn = bool(cfg.get("use_dynamic_shifting", False))
        remap = [k for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "shift_terminal")
                 if cfg.get(k)]
        body = sig[:-1]  # diffusers appends the final 0 itself
        if dyn or remap:
            out["diffusers"] = {
                "sigmas": body, "refused_preshift": (
                    "the pipeline's scheduler re-maps custom sigmas (" + ", ".join(
                        (["use_dynamic_shifting (mu depends on the resolution)"] if dyn else []) + remap) +
                    "); pre-inverting is not possible, so turn it off: "
                    "FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, use_dynamic_shifting=False, "
                    "shift=1.0" + "".join(f", {k}=False" if k != "shift_terminal" else ", shift_terminal=None"
                                          for k in remap) + "), then set_timesteps(sigmas=sigmas)")}
        else:
            pre = [s / (shift - (shift - 1) * s) for s in body]  # shift(s_pre) = s
            out["diffusers"] = {
                "sigmas": pre, "shift": shift,
                "how": ("scheduler.set_timesteps(sigmas=sigmas) on the pipeline's own FlowMatchEulerDiscreteScheduler "
                        f"(static shift {shift:g}): these sigmas are pre-inverted so that its shift maps them back "
                        "onto the learned grid")}
        out["comfyui"] = {"sigmas": sig, "how": "manual sigmas (a flow model's sigma = 1 - t; the last is 0)"}
    else:
        out["convention"] = ("VP: sigmas are the VE noise levels sqrt((1 - acp) / acp) (k-diffusion / ComfyUI); "
                             "timesteps are the continuous discrete-time index tau = (N - 1) - N t")
        out["timesteps_rounded"] = [int(round(v)) for v in tau]
        out["comfyui"] = {"sigmas": sig, "how": "manual sigmas for an eps / v model (VE sigma; the last is 0)"}
    return out


def _own_model_grid(field, solver, t: Tensor, what: str) -> dict:
    out: dict[str, Any] = {"solver": getattr(solver, "name", str(solver)), "model_id": field.model_id,
                           "guidance_scale": field.guidance_scale, "grid": what, "t": t.tolist()}
    path = getattr(field, "path", None)
    if path is not None and path.name == "fm-ot":
        out["sigmas"] = (1 - t).tolist()
        out["convention"] = "FM-OT: sigma = 1 - t (a flow scheduler's sigma); the last is 0"
    elif path is not None:
        c = path(t)
        if bool((c.alpha > 0).all()):
            sig = (c.sigma / c.alpha).tolist()
            sig[-1] = 0.0
            out["sigmas"] = sig
            out["convention"] = f"{path.name}: VE sigma = sigma_t / alpha_t; the last is 0"
    out["note"] = ("A time grid alone loses the learned solver's coefficients (BNS) and scales (Bespoke): a stock "
                   "solver on this grid is not the learned solver.")
    return out
