"""A pipeline folder's bespoke.json (core.integrations.diffusers.pipeline_facts): the defaults
load_model takes from it, the data set it names, and refusals of bad files."""
import json

import pytest
import torch

import core
from core.integrations.diffusers import pipeline_facts


def _folder(tmp_path, facts=None, classes: int = 3):
    from diffusers import DDPMPipeline, FlowMatchEulerDiscreteScheduler, UNet2DModel
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, norm_num_groups=4,
                       block_out_channels=(4, 8), down_block_types=("DownBlock2D",) * 2,
                       up_block_types=("UpBlock2D",) * 2, num_class_embeds=classes + 1 if classes else None)
    DDPMPipeline(unet=unet, scheduler=FlowMatchEulerDiscreteScheduler()).save_pretrained(tmp_path)
    if facts is not None:
        (tmp_path / "bespoke.json").write_text(json.dumps(facts) if isinstance(facts, dict) else facts)
    return tmp_path


def test_defaults_come_from_the_folder(tmp_path):
    folder = _folder(tmp_path, {"name": "digits_fm-ot", "guidance_scale": 3.0, "data_range": 4.0,
                                "train_seconds": 12.5, "parameters": 99})
    u = core.load_model(folder)
    assert u.guidance_scale == 3.0 and u.data_range == 4.0
    assert u.meta["data"]["name"] == "digits"  # <data>_<path>: a data set of core.data with this shape
    assert u.meta["training"]["seconds"] == 12.5 and u.meta["bespoke"]["parameters"] == 99
    assert core.load_model(folder, guidance_scale=1.5).guidance_scale == 1.5


def test_without_facts_nothing_changes(tmp_path):
    u = core.load_model(_folder(tmp_path))
    assert u.guidance_scale is None and u.data_range == 2.0 and u.meta["data"]["name"] == tmp_path.name
    assert pipeline_facts(tmp_path) == {}


def test_a_data_name_of_another_shape_is_not_taken(tmp_path):
    u = core.load_model(_folder(tmp_path, {"name": "mnist_fm-ot"}))  # mnist is 28x28, this model 8x8
    assert u.meta["data"]["name"] == tmp_path.name


@pytest.mark.parametrize("facts, match", [
    ('{"guidance_scale": "big"}', "guidance_scale must be a number"),
    ('{"data_range": -1}', "data_range must be a number"),
    ('{"guidance_scale": NaN}', "guidance_scale must be a number"),
    ("[1]", "JSON object"),
    ("{", "cannot read"),
])
def test_bad_facts_are_refused_with_one_line(tmp_path, facts, match):
    folder = _folder(tmp_path, facts)
    with pytest.raises(ValueError, match=match) as e:
        core.load_model(folder)
    assert "\n" not in str(e.value)
