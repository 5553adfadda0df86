"""Networks by name: a checkpoint names its architecture as a string plus JSON arguments, never
code. Arguments are checked (names, integer types, ranges) before anything is allocated, so a
hostile header cannot ask for a gigantic network."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .mlp import TimeMLP
from .resmlp import CondResMLP


@dataclass(frozen=True)
class ArchSpec:
    """A network class and, for each constructor argument, its allowed integer range."""

    cls: type
    args: dict[str, tuple[int, int]]  # name -> (min, max), inclusive
    description: str


ARCHITECTURES: dict[str, ArchSpec] = {
    "time-mlp": ArchSpec(TimeMLP, {"dim": (1, 4096), "hidden": (1, 4096), "layers": (1, 32), "n_freq": (0, 16),
                                      "x_freq": (0, 16)},
                         "time-conditioned MLP for flat (2-D) data"),
    "cond-resmlp": ArchSpec(CondResMLP, {"channels": (1, 4), "size": (1, 64), "hidden": (1, 4096),
                                         "blocks": (1, 32), "num_classes": (0, 1000), "n_freq": (0, 16)},
                            "class-conditional residual MLP for small images (null class for CFG)"),
}


def check_arch_args(arch: str, args: dict) -> dict:
    """Validate `args` for `arch`; returns them as plain ints. ValueError names the bad value."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    if not isinstance(args, dict):
        raise ValueError(f"architecture arguments must be a JSON object, got {type(args).__name__}")
    spec = ARCHITECTURES[arch]
    out = {}
    for name, value in args.items():
        if name not in spec.args:
            raise ValueError(f"unknown argument {name!r} for architecture {arch!r}; known: {sorted(spec.args)}")
        lo, hi = spec.args[name]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"argument {name}={value!r} of architecture {arch!r} must be an integer in [{lo}, {hi}]")
        out[name] = int(value)
    return out


def build_network(arch: str, **kwargs) -> nn.Module:
    """The network `arch` built with the (validated) arguments `kwargs`."""
    args = check_arch_args(arch, kwargs)
    return ARCHITECTURES[arch].cls(**args)
