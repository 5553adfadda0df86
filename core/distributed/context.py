"""The process group as the training loop sees it: `DistContext`, made by `from_env()`.

Data-parallel training of a learned solver (core.train.fit with dist=...): every rank holds the
same solver and draws the same batch indices (same seed), computes the per-sample losses of its
own rows only (sharding.local_rows, set on the objective as `objective.rows`), and

    loss = sum of its per-sample losses / global batch size,

so the all-reduced SUM of the ranks' gradients is exactly the gradient of the global batch mean.
Every rank then takes the same Adam step and the solvers stay equal. Rank 0 validates and
broadcasts the metrics, so best-iteration choices (and the final solver) agree on every rank.
The gradient is tiny (< 200 numbers for BNS), so one flat all-reduce per iteration.

`from_env()` joins the group torchrun describes in the environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT): nccl when the device is CUDA (one GPU per process,
cuda:LOCAL_RANK), gloo on CPU. With no torchrun, or WORLD_SIZE = 1, it returns None and the
caller runs as one plain process.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Callable, Iterable, Optional

import torch
import torch.distributed as td
from torch import Tensor, nn


class DistContext:
    """rank / world of an initialised process group and the collective steps training needs."""

    def __init__(self, rank: int, world: int, device: torch.device, owns_group: bool = False):
        self.rank, self.world, self.device = int(rank), int(world), torch.device(device)
        self.owns_group = owns_group  # from_env made the group: close() destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __repr__(self) -> str:
        return f"DistContext(rank={self.rank}, world={self.world}, device={self.device}, backend={td.get_backend()})"

    # -- training --------------------------------------------------------------------------
    def attach(self, objective) -> None:
        """Make `objective.loss` compute only this rank's rows of every batch."""
        objective.rows = (self.rank, self.world)

    def batch_mean(self, per_sample: Tensor) -> Tensor:
        """The mean over the GLOBAL batch: its value is the same on every rank, its gradient is
        this rank's share (sum of own per-sample losses / global batch size)."""
        stats = torch.stack([per_sample.detach().sum(), per_sample.new_tensor(float(per_sample.numel()))])
        stats = stats.to(self.device, torch.float64)
        td.all_reduce(stats)
        total, count = stats[0].to(per_sample.dtype), stats[1].to(per_sample.dtype)
        own = per_sample.sum() / count
        return own + (total / count - own).detach()

    def reduce_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Sum every parameter's gradient over the ranks (one flat all-reduce)."""
        params = [p for p in params if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1).to(torch.float64) for p in params]).to(self.device)
        td.all_reduce(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset:offset + n].reshape(p.shape).to(p.grad))
            offset += n

    def validated(self, validate: Callable[..., dict]) -> Callable[..., dict]:
        """validate(solver) run on rank 0 only; every rank gets rank 0's metrics."""

        def run(solver) -> dict:
            box = [validate(solver) if self.is_main else None]
            td.broadcast_object_list(box, src=0, device=self._object_device())
            return box[0]

        return run

    # -- anything ------------------------------------------------------------------------
    def barrier(self) -> None:
        if self._object_device().type == "cuda":
            td.barrier(device_ids=[self.device.index or 0])
        else:
            td.barrier()

    def broadcast(self, obj, src: int = 0):
        """A picklable object from rank `src` to every rank (small metadata only)."""
        box = [obj if self.rank == src else None]
        td.broadcast_object_list(box, src=src, device=self._object_device())
        return box[0]

    def gather(self, obj) -> Optional[list]:
        """Every rank's picklable `obj`, as a list on rank 0 (None elsewhere)."""
        out = [None] * self.world
        td.all_gather_object(out, obj)
        return out if self.is_main else None

    def close(self) -> None:
        if self.owns_group and td.is_initialized():
            td.destroy_process_group()

    def _object_device(self) -> torch.device:
        return self.device if td.get_backend() == "nccl" else torch.device("cpu")


def torchrun_world() -> int:
    """WORLD_SIZE as torchrun set it (1 outside torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None


def from_env(device: str = "auto", timeout_s: float = 1800.0) -> Optional[DistContext]:
    """Join the process group torchrun describes (None outside torchrun or with one process).

    device "auto" / "cuda": CUDA (cuda:LOCAL_RANK, nccl) when available, else CPU (gloo);
    "cpu": gloo. A device with an explicit index ("cuda:1") is refused: each rank takes its own.
    """
    world = torchrun_world()
    if world <= 1:
        return None
    for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise ValueError(f"WORLD_SIZE={world} but {key} is not set: start the processes with torchrun")
    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    want = str(device)
    if want not in ("auto", "cpu", "cuda"):
        raise ValueError(f"under torchrun the device must be auto, cpu or cuda (each process takes "
                         f"cuda:LOCAL_RANK), got {device!r}")
    use_cuda = want == "cuda" or (want == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for, but CUDA is not available here")
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) on this node; "
                             f"use --nproc_per_node <= {torch.cuda.device_count()}")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not td.is_initialized():
        td.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
        owns = True
    else:
        owns = False
    return DistContext(rank, world, dev, owns_group=owns)
