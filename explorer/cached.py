"""st.cache_data wrappers of explorer/compute.py. Tensors and modules cannot be hashed, so
each takes the model key and solver digests as the cache key and the objects as `_`-prefixed
(unhashed) arguments. Results are numpy / dataclasses of numpy (pickled per hit: small)."""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import streamlit as st

from . import compute

Runs = list[tuple[str, object, Optional[int]]]  # (label, solver, nfe)


@st.cache_data(max_entries=32, show_spinner="Solving the ground truth (adaptive dopri5)...")
def gt_samples(model_key: str, n: int, seed: int, _field) -> compute.GTSamples:
    """GT samples of noise(n, seed): solved once per model and noise set, shared by the pages,
    and kept on disk between server starts (explorer/gtcache.py)."""
    return compute.gt_samples(_field, n, seed, disk=True)


@st.cache_data(max_entries=32, show_spinner="Sampling the training data to compare...")
def data_comparison(model_key: str, n: int, seed: int, _field) -> Optional[dict]:
    return compute.data_comparison(_field, gt_samples(model_key, n, seed, _field))


@st.cache_data(max_entries=32, show_spinner="Sampling with every solver from the same noise...")
def _samples(model_key: str, run_keys: tuple, n: int, seed: int, _field, _runs: Runs) -> list[compute.Run]:
    return compute.compare_samples(_field, _runs, n, seed, gt=gt_samples(model_key, n, seed, _field))


def samples(model_key: str, run_keys: tuple, n: int, seed: int, _field, _runs: Runs) -> list[compute.Run]:
    """GT and each run's samples and errors; cached by what is computed (run_keys), so pages that
    label the same runs differently share it: the labels are the caller's."""
    res = _samples(model_key, run_keys, n, seed, _field, _runs)
    return [res[0]] + [dataclasses.replace(r, label=label) for r, (label, _, _) in zip(res[1:], _runs)]


@st.cache_data(max_entries=32, show_spinner="Recording the sampling paths...")
def paths(model_key: str, run_keys: tuple, n: int, seed: int, _field, _runs: Runs,
          pool: Optional[int] = None) -> compute.PathsBundle:
    return compute.compare_paths(_field, _runs, n, seed, pool=pool)


@st.cache_data(max_entries=32, show_spinner="Running every solver at every NFE...")
def benchmark(model_key: str, names: tuple, nfes: tuple, learned_keys: tuple, n: int, seed: int, _field,
              _learned: list) -> list[dict]:
    return compute.benchmark(_field, list(names), list(nfes), _learned, n, seed,
                             gt=gt_samples(model_key, n, seed, _field))
