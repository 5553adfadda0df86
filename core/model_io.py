"""Saving and loading flow models: weights plus a JSON header, never a pickle.

A model checkpoint is a `core.checkpoint` file of kind "model" whose header holds
    arch, arch_args       the network by name and its integer arguments (core.models registry)
    path                  the Gaussian path, e.g. {"name": "fm-ot"}
    prediction            what the network predicts: "velocity", "eps" or "x1"
    data                  {"name", "shape", "range"}: the training data, one sample's shape, R in PSNR
    conditioning          null, or {"num_classes", "null_class", "p_uncond", "guidance_scale"}
    seed, training        how it was made (the full training config, time, final loss)
    content_hash          sha256 of the weights (added by core.checkpoint): the model_id
`load_model` checks every field, compares every tensor's name and shape against the network the
header describes (built on the meta device first, so a lying header allocates nothing), checks
every weight is finite and of sane size, probes the network at several times for every class
(core/limits.py caps), and raises `CheckpointError` with one line naming the problem otherwise.

Class-conditional models (classifier-free guidance, docs/MATH.md section 0):
    u = u_uncond + w (u_cond - u_uncond),  both halves in ONE batched forward pass = one NFE.
w = 1 is the plain conditional model (one half only), w = 0 the unconditional one.
Networks predicting eps or x1 are evaluated at t clamped to [1e-5, 1 - 1e-5] (T_EDGE): the
conversion to a velocity is singular at the ends (eps-VP: sigma'_1 is infinite). Which class
each sample gets: row i of a batch gets labels[i % L] for the field's labels (L,); the default
labels are 0, 1, ..., num_classes - 1, so a batch cycles through the classes. The label goes by
position, so code that reorders or subsets a batch must keep each sample's class: the library's
own training does it by keeping every batch aligned to the label period (core.field.aligned_batch,
round_to_period); for an arbitrary subset use `field.for_rows(idx)`. The null class (num_classes) is a valid label: unconditional.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from .checkpoint import CheckpointError, load as load_checkpoint, save as save_checkpoint
from .field import VelocityField
from .limits import MAX_PROBE_ABS, MAX_WEIGHT_ABS
from .models import build_network, check_arch_args
from .paths import PREDICTIONS, GaussianPath, get_path, velocity_from_prediction

KIND = "model"
T_EDGE = 1e-5  # eps / x1 networks are evaluated at t clamped to [T_EDGE, 1 - T_EDGE]


def save_model(dst: Union[str, os.PathLike], net: nn.Module, header: dict) -> str:
    """Write `net`'s weights (float32) and `header` (see module docstring); returns the content
    hash, which is the loaded field's model_id."""
    tensors = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
               for k, v in net.state_dict().items()}
    return save_checkpoint(dst, tensors, header, kind=KIND)


# --------------------------------------------------------------------------------------
# Header validation
# --------------------------------------------------------------------------------------

def _bad(msg: str) -> CheckpointError:
    return CheckpointError(f"invalid model checkpoint: {msg}")


def _field(header: dict, key: str, types, what: str):
    if key not in header:
        raise _bad(f"header has no {key!r} entry")
    value = header[key]
    if isinstance(value, bool) or not isinstance(value, types):
        raise _bad(f"{key!r} must be {what}, got {value!r}")
    return value


@dataclass(frozen=True)
class ModelInfo:
    """The checked header of a model checkpoint."""

    arch: str
    arch_args: dict
    path: GaussianPath
    prediction: str
    data_name: str
    data_shape: tuple[int, ...]
    data_range: float
    num_classes: int  # 0 = unconditional
    default_guidance: Optional[float]
    model_id: str
    header: dict


def check_header(header: dict) -> ModelInfo:
    """Validate a model header (types, ranges, known names); CheckpointError otherwise."""
    arch = _field(header, "arch", str, "a string")
    try:
        args = check_arch_args(arch, _field(header, "arch_args", dict, "a JSON object"))
        path = get_path(_field(header, "path", (str, dict), "a path name or object"))
    except ValueError as e:
        raise _bad(str(e)) from None
    prediction = _field(header, "prediction", str, "a string")
    if prediction not in PREDICTIONS:
        raise _bad(f"unknown prediction type {prediction!r}; known: {list(PREDICTIONS)}")
    data = _field(header, "data", dict, "a JSON object")
    name, shape, rng = data.get("name"), data.get("shape"), data.get("range")
    if not isinstance(name, str):
        raise _bad(f"data name must be a string, got {name!r}")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 4
            or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 4096 for d in shape)):
        raise _bad(f"data shape must be a list of 1 to 4 positive integers, got {shape!r}")
    if isinstance(rng, bool) or not isinstance(rng, (int, float)) or not (math.isfinite(rng) and rng > 0):
        raise _bad(f"data range must be a positive finite number, got {rng!r}")
    cond = header.get("conditioning")
    num_classes, default_w = 0, None
    if cond is not None:
        if not isinstance(cond, dict):
            raise _bad(f"conditioning must be null or a JSON object, got {cond!r}")
        num_classes = cond.get("num_classes")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= 1000:
            raise _bad(f"conditioning.num_classes must be an integer in [1, 1000], got {num_classes!r}")
        if cond.get("null_class", num_classes) != num_classes:
            raise _bad(f"conditioning.null_class must be {num_classes}, got {cond.get('null_class')!r}")
        default_w = cond.get("guidance_scale", 1.0)
        if isinstance(default_w, bool) or not isinstance(default_w, (int, float)) or not math.isfinite(default_w):
            raise _bad(f"conditioning.guidance_scale must be a finite number, got {default_w!r}")
        default_w = float(default_w)
    model_id = header.get("content_hash")
    if not isinstance(model_id, str):
        raise _bad("header has no content hash")
    return ModelInfo(arch, args, path, prediction, name, tuple(shape), float(rng), num_classes, default_w,
                     model_id, header)


def _check_tensors(info: ModelInfo, tensors: dict[str, Tensor]) -> None:
    """Every tensor the header's network needs, with the right shape, and nothing else."""
    with torch.device("meta"):
        expected = build_network(info.arch, **info.arch_args).state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing:
        raise _bad(f"weights for {info.arch!r} {info.arch_args} are missing tensor(s) {missing[:3]}")
    if extra:
        raise _bad(f"unexpected tensor(s) {extra[:3]} for architecture {info.arch!r}")
    for k, e in expected.items():
        if tuple(tensors[k].shape) != tuple(e.shape):
            raise _bad(f"tensor {k!r} has shape {tuple(tensors[k].shape)} but {info.arch!r} "
                       f"{info.arch_args} needs {tuple(e.shape)}")
        if tensors[k].is_floating_point() != e.is_floating_point():
            raise _bad(f"tensor {k!r} has dtype {tensors[k].dtype}, expected {e.dtype}")


PROBE_TIMES = (0.0, T_EDGE, 0.25, 0.5, 0.75, 1.0 - T_EDGE, 1.0)


def _check_weights(tensors: dict[str, Tensor]) -> None:
    """Every floating tensor finite and within MAX_WEIGHT_ABS (one weight of 3e38 is refused)."""
    for k, t in tensors.items():
        if t.is_floating_point():
            if not torch.isfinite(t).all():
                raise _bad(f"weight tensor {k!r} is not finite (it holds NaN or inf)")
            big = float(t.abs().max()) if t.numel() else 0.0
            if big > MAX_WEIGHT_ABS:
                raise _bad(f"weight tensor {k!r} holds a value of magnitude {big:.3g}, over the limit of "
                           f"{MAX_WEIGHT_ABS:g} (core/limits.py)")


def _probe(net: nn.Module, info: ModelInfo) -> None:
    """Run the network on seeded noise at several times (PROBE_TIMES) and, for a conditional
    model, for EVERY class and the null class: the right output shape, finite values of a sane
    magnitude (MAX_PROBE_ABS). A NaN in one class embedding is caught here, not in a solver."""
    p = next(net.parameters())
    labels = torch.arange(info.num_classes + 1, device=p.device) if info.num_classes else None
    rows = labels.numel() if labels is not None else 2
    x = torch.randn((rows, *info.data_shape), generator=torch.Generator().manual_seed(0)).to(p)
    with torch.no_grad():
        for t in PROBE_TIMES:
            out = net(torch.full((rows,), t, device=p.device, dtype=p.dtype), x, labels)
            if tuple(out.shape) != tuple(x.shape):
                raise _bad(f"the network maps {tuple(x.shape)} to {tuple(out.shape)}")
            bad = ~torch.isfinite(out).reshape(rows, -1).all(1)
            if labels is not None and bad.any():
                raise _bad(f"the network's output is not finite at t = {t:g} for class(es) "
                           f"{labels[bad].tolist()[:10]} ({info.num_classes} = unconditional)")
            if bad.any():
                raise _bad(f"the network's output is not finite at t = {t:g} (NaN or inf weights?)")
            big = float(out.abs().max())
            if big > MAX_PROBE_ABS:
                raise _bad(f"the network's output reaches {big:.3g} at t = {t:g}, over the limit of "
                           f"{MAX_PROBE_ABS:g} (core/limits.py): not a usable model")


def load_network(src, device=None, dtype: Optional[torch.dtype] = None) -> tuple[nn.Module, ModelInfo]:
    """The network of a model checkpoint (eval mode, no grad on its weights) and its header."""
    tensors, header = load_checkpoint(src, kind=KIND)
    try:
        info = check_header(header)
    except (TypeError, KeyError, AttributeError) as e:  # a value of an unexpected JSON type deep inside
        raise _bad(f"malformed header ({type(e).__name__}: {e})") from None
    _check_tensors(info, tensors)
    _check_weights(tensors)
    net = build_network(info.arch, **info.arch_args)
    if tuple(net.data_shape) != info.data_shape:
        raise _bad(f"the header's data shape {list(info.data_shape)} does not match architecture "
                   f"{info.arch!r} {info.arch_args}, which maps shape {list(net.data_shape)}")
    if getattr(net, "num_classes", 0) != info.num_classes:
        raise _bad(f"the header's conditioning ({info.num_classes} classes) does not match the network's "
                   f"{getattr(net, 'num_classes', 0)} classes")
    net.load_state_dict(tensors, strict=True)
    net = net.to(device=device or "cpu", dtype=dtype or torch.float32).eval().requires_grad_(False)
    _probe(net, info)
    return net, info


# --------------------------------------------------------------------------------------
# The velocity field
# --------------------------------------------------------------------------------------

def _labels_for(labels: Tensor, batch: int, device) -> Tensor:
    """Row i gets labels[i % L]: (L,) -> (batch,)."""
    idx = torch.arange(batch, device=labels.device) % labels.shape[0]
    return labels[idx].to(device)


def _network_fn(net: nn.Module, num_classes: int, w: Optional[float], labels: Optional[Tensor]):
    """f(t, x): the network's prediction, guided with scale w for conditional nets."""

    def f(t: Tensor, x: Tensor) -> Tensor:
        p = next(net.parameters())
        xin = x.to(device=p.device, dtype=p.dtype)
        t = torch.as_tensor(t).to(device=p.device, dtype=p.dtype)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if num_classes == 0:
            out = net(t, xin)
        else:
            B = x.shape[0]
            y = _labels_for(labels, B, p.device)
            null = torch.full_like(y, num_classes)
            if w == 1.0:
                out = net(t, xin, y)
            elif w == 0.0:
                out = net(t, xin, null)
            else:  # one batched pass over [conditional; unconditional] = one NFE
                both = net(torch.cat([t, t]), torch.cat([xin, xin]), torch.cat([y, null]))  # (2B, *D)
                f_c, f_u = both[:B], both[B:]
                out = f_u + w * (f_c - f_u)
        return out.to(device=x.device, dtype=x.dtype)

    return f


def _check_labels(labels, num_classes: int) -> Tensor:
    if num_classes == 0:
        raise ValueError("this model is unconditional; it takes no class labels")
    t = torch.as_tensor(labels)
    if t.dim() == 0:
        t = t.reshape(1)
    if t.dim() != 1 or t.numel() == 0 or t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"labels must be an integer or a non-empty 1-D integer tensor, got {labels!r}")
    if t.min() < 0 or t.max() > num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes} ({num_classes} = unconditional), "
                         f"got values {t.min().item()}..{t.max().item()}")
    return t.to(torch.long)


@dataclass
class ModelField(VelocityField):
    """A VelocityField backed by a checkpoint's network (`module`); conditional models also
    carry `labels` (L,) (row i of a batch gets labels[i % L]) and `num_classes`."""

    labels: Optional[Tensor] = None
    num_classes: int = 0
    prediction: str = "velocity"

    def with_labels(self, labels) -> "ModelField":
        """The same model and guidance with other class labels: an int (every sample) or (L,)."""
        return _make_field(self.module, self, _check_labels(labels, self.num_classes), self.guidance_scale)

    def for_rows(self, idx) -> "ModelField":
        """The field as seen by rows `idx` (a 1-D index tensor or slice) of a larger batch: row i
        of the new field's batch gets the label that row idx[i] had. Code that evaluates u on a
        subset or a reordering of a batch (mini-batches of a GT pool, a validation split) uses
        this so each sample keeps its class; unconditional fields are returned unchanged."""
        if self.labels is None:
            return self
        if isinstance(idx, slice):
            if idx.stop is None or idx.stop < 0:
                raise ValueError(f"for_rows needs a slice with a non-negative stop, got {idx}")
            idx = torch.arange(*idx.indices(idx.stop))
        idx = torch.as_tensor(idx, dtype=torch.long).flatten().cpu()
        if idx.numel() == 0 or (idx < 0).any():
            raise ValueError("for_rows needs a non-empty index of non-negative rows")
        return _make_field(self.module, self, self.labels[idx % self.labels.shape[0]], self.guidance_scale)

    def with_guidance(self, guidance_scale: float) -> "ModelField":
        """The same model and labels with another classifier-free guidance scale."""
        return _make_field(self.module, self, self.labels, _check_guidance(guidance_scale, self.num_classes))


def _check_guidance(w, num_classes: int) -> Optional[float]:
    if w is None:
        return None
    if num_classes == 0:
        raise ValueError(f"guidance scale {w!r} given, but this model is unconditional (no classifier-free guidance)")
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
        raise ValueError(f"guidance scale must be a finite number, got {w!r}")
    return float(w)


def _clamped_time(u, lo: float, hi: float):
    def u_clamped(t: Tensor, x: Tensor) -> Tensor:
        return u(torch.as_tensor(t, dtype=x.dtype, device=x.device).clamp(lo, hi), x)

    return u_clamped


def _make_field(net: nn.Module, base: ModelField, labels: Optional[Tensor], w: Optional[float]) -> ModelField:
    f = _network_fn(net, base.num_classes, w, labels)
    u = velocity_from_prediction(f, base.path, base.prediction)
    meta = {**base.meta, "guidance_scale": w,
            "labels": None if labels is None else labels.tolist()[:64]}
    if base.prediction != "velocity":
        # The eps / x1 -> velocity conversion divides by alpha_t or sigma_t, and eps-VP's sigma'_t
        # is infinite at t = 1: a network error e becomes ~ e / sigma_t there (u(1, x) ~ 1e7 for a
        # trained model, and dopri5 then spends tens of thousands of NFE). The field holds its
        # value over the last (first) 1e-5 of time instead, like the usual diffusion-time
        # epsilon of VP models; meta["t_clamp"] records it.
        u = _clamped_time(u, T_EDGE, 1 - T_EDGE)
        meta["t_clamp"] = [T_EDGE, 1 - T_EDGE]
    return replace(base, fn=u, labels=labels, guidance_scale=w, meta=meta)


def load_model(src, guidance_scale: Optional[float] = None, device=None, dtype: Optional[torch.dtype] = None,
               labels=None) -> ModelField:
    """Load any model checkpoint as a velocity field u(t, x), whatever the network predicts.

    guidance_scale: classifier-free guidance scale w for class-conditional models (default: the
      checkpoint's recommended scale); must be None for unconditional models.
    labels: class labels for conditional models: an int or (L,) (row i gets labels[i % L]);
      default 0, 1, ..., num_classes - 1 (a batch cycles through the classes).
    device, dtype: where the network runs and in which precision (default cpu, float32); inputs
      of another dtype or device are converted and the output returned like the input.
    Raises CheckpointError (one line) for a file that is not a usable model, ValueError for a
    guidance scale or labels that do not fit the model.

    A folder is read as a diffusers pipeline saved with save_pretrained (model_index.json, unet/
    or transformer/, scheduler/): see core.integrations.diffusers.field_from_pipeline.
    """
    if isinstance(src, (str, os.PathLike)) and os.path.isdir(src):
        from .integrations.diffusers import field_from_pipeline, is_pipeline_folder
        if not is_pipeline_folder(src):
            raise CheckpointError(f"{os.fspath(src)!r} is a folder, not a file, and has no model_index.json: not a "
                                  f"model checkpoint nor a diffusers pipeline folder")
        return field_from_pipeline(src, guidance_scale=guidance_scale, device=device, dtype=dtype, labels=labels)
    net, info = load_network(src, device=device, dtype=dtype)
    w = _check_guidance(guidance_scale, info.num_classes)
    if info.num_classes:
        w = info.default_guidance if w is None else w
        labels = _check_labels(torch.arange(info.num_classes) if labels is None else labels, info.num_classes)
    elif labels is not None:
        _check_labels(labels, 0)
    meta: dict[str, Any] = {k: v for k, v in info.header.items() if k not in ("format", "version", "kind")}
    if isinstance(src, (str, os.PathLike)):
        meta["file"] = os.fspath(src)
    base = ModelField(fn=lambda t, x: x, data_shape=info.data_shape, path=info.path, data_range=info.data_range,
                      model_id=info.model_id, guidance_scale=None, meta=meta, module=net, labels=None,
                      num_classes=info.num_classes, prediction=info.prediction)
    return _make_field(net, base, labels, w)
