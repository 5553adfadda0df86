"""Activation checkpointing through unrolled solver steps, for bounded memory on big models.

Training a BNS solver (or a Bespoke solver on the final-RMSE loss) back-propagates through every
step of the solve, so autograd keeps the network's activations of all n evaluations: n times a
forward pass's activations. `checkpointed(field)` wraps u(t, x) in
torch.utils.checkpoint.checkpoint: only each evaluation's inputs (t, x) are kept, and the
network's forward is run again during backward, one evaluation at a time. Memory then grows with
n * |x| instead of n * |activations|, for one extra forward per evaluation. The gradients are the
same (the recomputation is the same computation).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint


class CheckpointedField:
    """u(t, x) of `field`, recomputed in backward instead of storing its activations. Every other
    attribute (path, data_shape, guidance_scale, labels, model_id, ...) is the wrapped field's."""

    def __init__(self, field):
        self.field = field

    def __call__(self, t, x: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if not torch.is_grad_enabled():  # inference (validation, sampling): nothing to save
            return self.field(t, x)
        return checkpoint(self.field, t, x, use_reentrant=False)

    def __getattr__(self, name: str):
        if name == "field":  # not set yet (unpickling / copying): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self.field, name)


def checkpointed(field) -> CheckpointedField:
    """`field` with activation checkpointing (idempotent)."""
    return field if isinstance(field, CheckpointedField) else CheckpointedField(field)
