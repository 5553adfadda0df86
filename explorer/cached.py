"""st.cache_data wrappers of explorer/compute.py. Tensors and modules cannot be hashed, so
each takes the model key and solver digests as the cache key and the objects as `_`-prefixed
(unhashed) arguments. Results are numpy / dataclasses of numpy (pickled per hit: small)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import streamlit as st

from . import compute

Runs = list[tuple[str, object, Optional[int]]]  # (label, solver, nfe)


@st.cache_data(max_entries=32, show_spinner="Solving the ground truth (adaptive dopri5)...")
def gt_samples(model_key: str, n: int, seed: int, _field) -> np.ndarray:
    return compute.compare_samples(_field, [], n, seed)[0].x


@st.cache_data(max_entries=32, show_spinner="Sampling with every solver from the same noise...")
def samples(model_key: str, run_keys: tuple, n: int, seed: int, _field, _runs: Runs) -> list[compute.Run]:
    return compute.compare_samples(_field, _runs, n, seed)


@st.cache_data(max_entries=32, show_spinner="Recording the sampling paths...")
def paths(model_key: str, run_keys: tuple, n: int, seed: int, _field, _runs: Runs) -> compute.PathsBundle:
    return compute.compare_paths(_field, _runs, n, seed)


@st.cache_data(max_entries=32, show_spinner="Running every solver at every NFE...")
def benchmark(model_key: str, names: tuple, nfes: tuple, learned_keys: tuple, n: int, seed: int, _field,
              _learned: list) -> list[dict]:
    return compute.benchmark(_field, list(names), list(nfes), _learned, n, seed)
