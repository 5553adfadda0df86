"""The README's flow_matching and k-diffusion examples run as written, with the user's model
supplied (an exact Gaussian-data model), a training budget small enough for a test and (k-diffusion)
3x4x4 images instead of 3x32x32."""
import re
from pathlib import Path

import pytest
import torch
from flow_matching.utils import ModelWrapper

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL = "TrainConfig(iters=3, n_train=64, n_val=32, batch_size=32, val_every=3, gt_grid=9)"


def _example(heading: str, small: bool = True) -> str:
    text = README.read_text()
    start = text.index(heading)
    block = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert block is not None, f"no python example under {heading!r}"
    code = block.group(1)
    assert "TrainConfig()" in code  # the README trains with core.train's defaults
    return code.replace("TrainConfig()", SMALL).replace("3, 32, 32", "3, 4, 4") if small else code


class MyVelocityModel(ModelWrapper):
    """Exact FM-OT velocity of N(0.5, 0.3^2 I) data, as a flow_matching model."""

    def __init__(self):
        super().__init__(model=torch.nn.Linear(1, 1))  # some weights, so the model has a hash

    def forward(self, x, t, **extras):
        t = t.reshape(-1, *([1] * (x.dim() - 1)))
        c2 = 0.09
        return 0.5 + (t * c2 - (1 - t)) / (t * t * c2 + (1 - t) ** 2) * (x - 0.5 * t)


def denoiser(x, sigma):
    s = sigma.reshape(-1, *([1] * (x.dim() - 1)))
    return 0.5 + (0.09 / (0.09 + s**2)) * (x - 0.5)


def test_flow_matching_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = {"MyVelocityModel": MyVelocityModel}
    exec(compile(_example("### flow_matching (facebookresearch)"), "README-flow_matching", "exec"), ns)
    assert ns["x1"].shape == (1000, 2) and torch.isfinite(ns["x1"]).all()
    assert ns["states"].shape == (9, 10, 2)
    assert (tmp_path / "bns8.safetensors").exists()
    # the samples are close to the data N(0.5, 0.3^2): the solver did its job on the exact model
    assert abs(float(ns["x1"].mean()) - 0.5) < 0.05 and abs(float(ns["x1"].std()) - 0.3) < 0.05


def test_k_diffusion_example_runs():
    ns = {"denoiser": denoiser}
    exec(compile(_example("### k-diffusion-style samplers"), "README-k_diffusion", "exec"), ns)
    assert ns["sigmas"].shape == (11,) and float(ns["sigmas"][-1]) == 0.0 and float(ns["sigmas"][0]) == 80.0
    assert ns["samples"].shape == (16, 3, 4, 4) and torch.isfinite(ns["samples"]).all()
    assert abs(float(ns["samples"].mean()) - 0.5) < 0.05 and abs(float(ns["samples"].std()) - 0.3) < 0.05


@pytest.mark.parametrize("heading", ["### flow_matching (facebookresearch)", "### k-diffusion-style samplers"])
def test_examples_are_about_fifteen_lines(heading):
    assert len(_example(heading, small=False).strip().splitlines()) <= 16
