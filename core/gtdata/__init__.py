"""Ground truth as a reusable on-disk data set: made once (by many processes if wanted), reused
by every training run, report and ablation of the same model and guidance.

    spec.py      GTSpec: what a data set holds (model, guidance, noise seeds, tolerances, what is
                 stored, grid, dtype) and its shard plan; the size of one path on disk
    manifest.py  manifest.json: the spec, the shards with their seeds, NFE and content hashes
    make.py      make_gt: solve and write the shards this rank owns, resumable, deterministic
    dataset.py   GTDataset: open, check against a model, read the train / validation splits
    cli.py       the `make-gt` command and the `train-solver --gt` options
"""
from .dataset import GTDataset, open_gt  # noqa: F401
from .make import make_gt  # noqa: F401
from .spec import STORE_KINDS, GTSpec, bytes_per_path  # noqa: F401
