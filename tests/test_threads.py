"""core.threads: the default thread count never oversubscribes the machine."""
import pytest
import torch

from core.threads import MAX_AUTO_THREADS, auto_threads, set_threads


@pytest.mark.parametrize("cores, load, want", [
    (1, 0.0, 1), (2, 0.0, 1), (2, 7.0, 1),  # a 2-core machine: always 1
    (4, 0.0, 2), (4, 1.5, 2), (4, 2.5, 1),  # half the cores, minus the busy ones
    (8, 0.0, 4), (8, 6.5, 1), (16, 0.0, MAX_AUTO_THREADS), (16, 13.2, 2),
    (16, float("nan"), MAX_AUTO_THREADS),
])
def test_auto_threads(cores, load, want):
    assert auto_threads(cores, load) == want


def test_set_threads():
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 == torch.get_num_threads()
        assert set_threads(None) == auto_threads()
        with pytest.raises(ValueError, match="-2"):
            set_threads(-2)
        with pytest.raises(ValueError, match="1.5"):
            set_threads(1.5)
    finally:
        torch.set_num_threads(before)
