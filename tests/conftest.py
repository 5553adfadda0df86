import os
import sys

import tempfile

import pytest
import torch

# Runs that the app autosaves go to a throwaway folder during tests (the browser test's server
# inherits this), never into the user's ~/.cache.
os.environ["BESPOKE_RUNS_DIR"] = tempfile.mkdtemp(prefix="bespoke-runs-test-")
# The app's on-disk caches (GT samples, the live chart's files) too.
os.environ["BESPOKE_CACHE_DIR"] = tempfile.mkdtemp(prefix="bespoke-cache-test-")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def f64():
    """Run a test with float64 as the default dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def mixture_ot():
    """A non-linear analytic FM-OT velocity field: 5-component Gaussian mixture in 2-D."""
    from core.analytic import mixture_field
    from core.paths import CondOTPath
    means = torch.tensor([[-1.5, -1.5], [1.5, 1.5], [-1.5, 1.5], [1.5, -1.5], [0.0, 0.0]], dtype=torch.float64)
    return mixture_field(CondOTPath(), means, 0.15)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same global RNG state, whatever ran before it."""
    torch.manual_seed(0)
    yield
