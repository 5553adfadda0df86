"""Many processes on torch.distributed (gloo on CPU, nccl on CUDA), started by torchrun.

    context.py        DistContext: rank / world, the batch mean over ranks, the gradient
                      all-reduce, rank-0 validation, barriers; `from_env()` joins torchrun's group
    sharding.py       which rows of a batch and which shards of a data set a rank owns
    checkpointing.py  activation checkpointing of a velocity field through unrolled solver steps

Nothing here starts processes: `torchrun --standalone --nproc_per_node K -m core ...` does.
"""
from .checkpointing import CheckpointedField, checkpointed  # noqa: F401
from .context import DistContext, from_env  # noqa: F401
from .sharding import local_rows, owned_shards  # noqa: F401
