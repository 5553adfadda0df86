"""Every size a file or an argument controls, capped in one place.

A checkpoint's header, a command-line option or an app input decides how much memory and time
the code spends (a tensor count, a solver's NFE, a number of samples). Each such size is checked
against the cap below BEFORE anything is allocated; a value over its cap is refused with one line
naming the value and the cap (`check_count`). The caps are far above what the shipped models,
the papers' settings and the app's inputs use; README.md "Safety" lists them.
"""
from __future__ import annotations

# --- checkpoint files (core/checkpoint.py) ------------------------------------------------
MAX_FILE_BYTES = 512 << 20  # a checkpoint file: 512 MiB
MAX_HEADER_BYTES = 1 << 20  # its JSON header: 1 MiB
MAX_JSON_DEPTH = 16  # nesting of JSON objects / arrays in a header (real headers use <= 6)
MAX_TENSORS = 4096  # tensors in one checkpoint
MAX_TENSOR_DIMS = 8  # dimensions of one tensor

# --- models (core/model_io.py) --------------------------------------------------------------
MAX_WEIGHT_ABS = 1e6  # largest |weight| a model may hold (trained models: < 100)
MAX_PROBE_ABS = 1e6  # largest |output| the load-time probe accepts from the network

# --- solvers --------------------------------------------------------------------------------
MAX_NFE = 1000  # network evaluations of one solve, and the NFE of a solver file (BNS at NFE n
#                holds n(n+1)/2 coefficients: 4 MB at the cap; a file claiming 20000 would need GBs)
MAX_TRAIN_NFE = 128  # NFE of a solver to train (train-solver, the app): BNS costs O(NFE^2) per step
MAX_SOLVER_PARAMETERS = 1_000_000  # numbers in a learned-solver checkpoint (8 MB of float64)
MAX_GT_STEPS = 20_000  # accepted dopri5 steps of one GT solve (~6 NFE each; shipped models: < 60)

# --- command line and app inputs ---------------------------------------------------------------
MAX_SAMPLES = 100_000  # --n, and rows of a --noise file
MAX_TRAIN_ITERS = 1_000_000  # --iters (train-solver), --steps (train-model)
MAX_TRAIN_SAMPLES = 50_000  # --n-train, --n-val, --batch-size
MAX_UPLOAD_MB = 64  # an uploaded checkpoint in the app, in decimal MB (10**6 bytes), the unit
#                     Streamlit's browser-side upload check counts in


def check_count(what: str, value, cap: int, low: int = 1) -> int:
    """`value` as an int in [low, cap]; ValueError naming `what`, the value and the cap otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if not low <= value <= cap:
        raise ValueError(f"{what} must be in [{low}, {cap:,}], got {value:,}")
    return value
