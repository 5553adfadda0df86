"""diffusers in and out (core.integrations.diffusers): tiny random models built here, CPU, seconds."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

import core  # noqa: E402
from core.analytic import gaussian_data_field  # noqa: E402
from core.checkpoint import CheckpointError  # noqa: E402
from core.cli import main  # noqa: E402
from core.integrations import diffusers as dif  # noqa: E402
from core.paths import CondOTPath, DiscreteVPPath  # noqa: E402
from core.solvers.bespoke import bespoke_from_family  # noqa: E402
from core.solvers.bns import BNSSolver  # noqa: E402
from core.solvers.dedicated import ddim_sample, dpmpp2m_sample  # noqa: E402
from core.solvers.learned import save_solver  # noqa: E402

from diffusers import (DDIMScheduler, DDPMPipeline, DDPMScheduler, DPMSolverMultistepScheduler,  # noqa: E402
                       FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, UNet2DModel)

REL = 2e-5  # float32 equality: max |a - b| / max |b|


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convolutions: one thread is 100x faster than two on a loaded 2-core machine (measured)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _unet(seed: int = 0, **kw) -> UNet2DModel:
    torch.manual_seed(seed)
    net = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
                      layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                      up_block_types=("UpBlock2D", "UpBlock2D"), **kw)
    with torch.no_grad():  # moderate outputs
        net.conv_out.weight.mul_(0.05)
    return net.eval().requires_grad_(False)


def _sd3(seed: int = 0) -> SD3Transformer2DModel:
    torch.manual_seed(seed)
    return SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
                                 num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
                                 pooled_projection_dim=8, out_channels=4).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def ddpm_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddpm")
    DDPMPipeline(unet=_unet(), scheduler=DDPMScheduler()).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def ddpm_field(ddpm_folder):
    return core.load_model(ddpm_folder)


def _rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _bns(field, n: int, seed: int = 0) -> BNSSolver:
    """A BNS solver started from DPM-Solver++(2M), then moved off it (as training would)."""
    s = BNSSolver(n, path=field.path, guidance_scale=field.guidance_scale).init_from("dpm++2m", field)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in s.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return s


def _rk2(nfe: int, seed: int = 0):
    s = bespoke_from_family("rk2-bespoke", nfe)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in s.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return s


def _stock_loop(scheduler, unet, x, nfe):
    scheduler.set_timesteps(nfe)
    for t in scheduler.timesteps:
        out = unet(x, t).sample
        x = scheduler.step(out, t, x).prev_sample
    return x


# --------------------------------------------------------------------------------------
# In: conventions, against exact Gaussian-data fields
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [{}, {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
                                {"beta_schedule": "squaredcos_cap_v2"}])
def test_vp_discrete_path_is_diffusers_table(kw):
    path, ref = DiscreteVPPath(**kw), DDPMScheduler(**kw)
    tau = torch.arange(1000, dtype=torch.float64)
    c = path(path.t_of_timestep(tau))
    assert torch.allclose(c.alpha**2, ref.alphas_cumprod.double(), rtol=0, atol=1e-12)
    end = path(torch.tensor(1.0, dtype=torch.float64))
    assert float(end.alpha) == 1.0 and float(end.sigma) == 0.0
    t = torch.rand(500, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    h = 1e-7
    cp, cm, c0 = path(t + h), path(t - h), path(t)
    assert torch.allclose((cp.alpha - cm.alpha) / (2 * h), c0.d_alpha, atol=1e-5)
    assert torch.allclose((cp.sigma - cm.sigma) / (2 * h), c0.d_sigma, atol=1e-5)
    assert torch.allclose(path.snr_inverse(c0.alpha / c0.sigma), t, atol=1e-12)


def _gaussian_model(kind: str, pred: str, acp: torch.Tensor, m: torch.Tensor, c: float):
    """A 'network' giving the exact prediction for data N(m, c^2 I), in diffusers' own terms:
    VP: x = sqrt(acp[tau]) x_data + sqrt(1 - acp[tau]) noise, at integer timesteps tau;
    flow: x = (1 - s) x_data + s noise, s = timestep / 1000, output E[noise - x_data | x]."""

    def model(x, timestep):
        tau = torch.as_tensor(timestep, dtype=torch.float64).reshape(-1, *([1] * (x.dim() - 1)))
        if kind == "flow":
            a, s = 1 - tau / 1000, tau / 1000
        else:
            assert torch.allclose(tau, tau.round()), "the exact model is known at integer timesteps only"
            ab = acp[tau.round().long()]
            a, s = ab.sqrt(), (1 - ab).sqrt()
        x1 = m + a * c**2 / (a * a * c**2 + s * s) * (x - a * m)  # E[x_data | x]
        eps = (x - a * x1) / s
        return {"epsilon": eps, "sample": x1, "v_prediction": a * eps - s * x1, "flow": eps - x1}[pred]

    return model


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction", "sample"])
def test_vp_predictions_match_exact_gaussian_field(pred):
    sched = DDPMScheduler(prediction_type=pred)
    m, c = torch.tensor([0.4, -0.7, 0.1], dtype=torch.float64), 0.3
    model = _gaussian_model("vp", pred, sched.alphas_cumprod.double(), m, c)
    field = dif.as_velocity_field(model, sched, (3,))
    exact = gaussian_data_field(field.path, m, c)
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for tau in (999, 700, 250, 40, 3):
        t = field.path.t_of_timestep(torch.tensor(float(tau)))
        assert torch.allclose(field(t, x), exact(t, x), rtol=1e-9, atol=1e-9), (pred, tau)


def test_flow_sign_and_timestep_convention():
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    m, c = torch.tensor([0.4, -0.7], dtype=torch.float64), 0.5
    field = dif.as_velocity_field(_gaussian_model("flow", "flow", None, m, c), sched, (2,))
    assert isinstance(field.path, CondOTPath)
    exact = gaussian_data_field(CondOTPath(), m, c)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for t in (0.0, 0.123, 0.5, 0.97):
        assert torch.allclose(field(torch.tensor(t), x), exact(torch.tensor(t), x), atol=1e-10)


# --------------------------------------------------------------------------------------
# Our dedicated solvers on an adapted DDPM model against diffusers' own schedulers
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ddim", "dpm++2m"])
def test_our_dedicated_solvers_match_diffusers(ddpm_field, name):
    unet, path = ddpm_field.module, ddpm_field.path
    if name == "ddim":
        s = DDIMScheduler.from_config(DDPMScheduler().config, timestep_spacing="trailing", set_alpha_to_one=True,
                                      clip_sample=False)
        ours = ddim_sample
    else:
        s = DPMSolverMultistepScheduler.from_config(DDPMScheduler().config, timestep_spacing="trailing",
                                                    final_sigmas_type="zero")
        ours = dpmpp2m_sample
    x0 = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    theirs = _stock_loop(s, unet, x0.clone(), 10)
    grid = torch.cat([path.t_of_timestep(s.timesteps.double()), torch.ones(1, dtype=torch.float64)])
    with torch.no_grad():
        mine = ours(ddpm_field, x0, grid).x
    assert _rel(theirs, mine) < REL


# --------------------------------------------------------------------------------------
# Out: the exported scheduler equals core's own solve
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["bns", "rk2-bespoke"])
def test_exported_scheduler_in_stock_loop_equals_core(ddpm_field, tmp_path, family):
    nfe = 6
    solver = _bns(ddpm_field, nfe) if family == "bns" else _rk2(nfe)
    dif.export_scheduler(ddpm_field, solver, tmp_path / "sched")
    s = dif.BespokeScheduler.from_pretrained(tmp_path / "sched")
    x0 = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        mine = solver.solve(ddpm_field, x0).x
    theirs = _stock_loop(s, ddpm_field.module, x0.clone(), nfe)
    assert len(s.timesteps) == nfe
    assert _rel(theirs, mine) < REL
    # ... and inside the stock DDPMPipeline (it passes generator= to step and num_inference_steps)
    pipe = DDPMPipeline(unet=ddpm_field.module, scheduler=s)
    pipe.set_progress_bar_config(disable=True)
    img = pipe(batch_size=2, generator=torch.Generator().manual_seed(5), num_inference_steps=nfe,
               output_type="pt").images
    with torch.no_grad():
        ref = solver.solve(ddpm_field, torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(5))).x
    assert (img - (ref / 2 + 0.5).clamp(0, 1)).abs().max() < 1e-5


def test_sd3_style_text_conditioned_recipe(tmp_path):
    """A tiny random SD3 transformer with pre-computed conditioning and classifier-free guidance:
    the exported scheduler in SD3's own loop (batched CFG, timestep expanded) equals core's solve."""
    tr, sched = _sd3(), FlowMatchEulerDiscreteScheduler(shift=3.0)
    g = torch.Generator().manual_seed(0)
    cond = {"encoder_hidden_states": torch.randn(1, 5, 16, generator=g), "pooled_projections": torch.randn(1, 8, generator=g)}
    uncond = {k: torch.zeros_like(v) for k, v in cond.items()}
    field = dif.as_velocity_field(tr, sched, (4, 8, 8), cond=cond, uncond=uncond, guidance_scale=3.0)
    nfe = 5
    solver = _bns(field, nfe, seed=1)
    dif.export_scheduler(field, solver, tmp_path)
    s = dif.BespokeScheduler.from_pretrained(tmp_path)
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        mine = solver.solve(field, x0).x
    s.set_timesteps(nfe, mu=0.7)  # flux-style pipelines always pass mu
    s.set_begin_index(0)
    x = x0.clone()
    e = torch.cat([uncond["encoder_hidden_states"], cond["encoder_hidden_states"]]).repeat_interleave(2, 0)
    p = torch.cat([uncond["pooled_projections"], cond["pooled_projections"]]).repeat_interleave(2, 0)
    for t in s.timesteps:  # StableDiffusion3Pipeline's loop
        inp = torch.cat([x] * 2)
        out = tr(hidden_states=inp, timestep=t.expand(inp.shape[0]), encoder_hidden_states=e, pooled_projections=p).sample
        u, c = out.chunk(2)
        x = s.step(u + 3.0 * (c - u), t, x, return_dict=False)[0]
    assert _rel(x, mine) < REL
    s.check_model(field)
    with pytest.raises(dif.SchedulerRefusal, match="guidance scale 3.0"):
        s.check_model(tr, guidance_scale=5.0)


def test_save_pretrained_round_trip(ddpm_field, tmp_path):
    s1 = dif.export_scheduler(ddpm_field, _bns(ddpm_field, 4), tmp_path / "a")
    s2 = dif.BespokeScheduler.from_pretrained(tmp_path / "a")
    s2.save_pretrained(tmp_path / "b")
    s3 = dif.BespokeScheduler.from_pretrained(tmp_path / "b")
    for s in (s1, s2, s3):
        s.set_timesteps(4)
    def public(c):
        return {k: v for k, v in c.items() if not k.startswith("_")}

    assert public(s1.config) == public(s3.config)
    assert torch.equal(s1.timesteps, s3.timesteps)
    assert torch.equal(s1.scheme.B, s3.scheme.B) and torch.equal(s1.scheme.t, s3.scheme.t)
    cfg = json.loads((tmp_path / "b" / "scheduler_config.json").read_text())
    assert cfg["_class_name"] == "BespokeScheduler" and cfg["model_id"] == ddpm_field.model_id


# --------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------

def test_refusals(ddpm_field, ddpm_folder, tmp_path):
    s = dif.export_scheduler(ddpm_field, _bns(ddpm_field, 4), tmp_path / "s")
    with pytest.raises(dif.SchedulerRefusal, match="trained for NFE 4; it cannot run num_inference_steps=1000"):
        s.set_timesteps(1000)
    with pytest.raises(dif.SchedulerRefusal, match="custom sigmas"):
        s.set_timesteps(sigmas=[1.0, 0.5, 0.2, 0.1])
    s.set_timesteps(4)
    with pytest.raises(dif.SchedulerRefusal, match="strength < 1"):
        s.set_begin_index(2)
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(dif.SchedulerRefusal, match="strength < 1"):
        s.add_noise(x, x, s.timesteps[2:3])
    assert torch.equal(s.add_noise(x, x + 1, s.timesteps[:1]), x + float(ddpm_field.path(0.0).sigma))
    with pytest.raises(dif.SchedulerRefusal, match="trained for model"):
        s.check_model(_unet(seed=1))
    s.check_model(ddpm_field.module)
    with pytest.raises(dif.SchedulerRefusal, match="guidance"):
        s.check_model(ddpm_field.module, guidance_scale=2.0)
    with pytest.raises(ValueError, match="expects timestep"):
        s.step(x, 123.0, x)
    own = core.load_model("assets/checkerboard_fm-ot.safetensors")
    with pytest.raises(ValueError, match="python -m core sample"):
        dif.export_scheduler(own, BNSSolver(4, path=own.path), tmp_path / "own")
    with pytest.raises(ValueError, match="zero terminal SNR"):
        dif.convention_from_scheduler(DDPMScheduler(rescale_betas_zero_snr=True))
    with pytest.raises(ValueError, match="prediction_type"):
        dif.convention_from_scheduler({"_class_name": "DDPMScheduler", "beta_schedule": "linear",
                                       "prediction_type": "x_start"})


def test_pipeline_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="model_index.json"):
        core.load_model(tmp_path / "empty")
    d = tmp_path / "nounet"
    d.mkdir()
    (d / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline", "scheduler": ["diffusers", "DDPMScheduler"]}))
    with pytest.raises(ValueError, match="must name a 'unet' or 'transformer'"):
        core.load_model(d)
    sd3 = tmp_path / "sd3"
    (sd3 / "transformer").mkdir(parents=True)
    FlowMatchEulerDiscreteScheduler().save_pretrained(sd3 / "scheduler")
    (sd3 / "model_index.json").write_text(json.dumps({"transformer": ["diffusers", "SD3Transformer2DModel"],
                                                      "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}))
    with pytest.raises(ValueError, match="text-conditioned SD3Transformer2DModel.*as_velocity_field"):
        core.load_model(sd3)


# --------------------------------------------------------------------------------------
# Sigmas, the flow-shift trap, the CLI, lazy import
# --------------------------------------------------------------------------------------

def _flow_field(**cfg):
    return dif.as_velocity_field(_gaussian_model("flow", "flow", None, torch.zeros(2), 0.5),
                                 FlowMatchEulerDiscreteScheduler(**cfg), (2,))


def test_sigmas_flow_shift_pre_inverted():
    field = _flow_field(shift=3.0)
    solver = _bns(field, 6)
    grid = dif.export_sigmas(field, solver)
    t = solver.scheme().t.detach()
    assert grid["sigmas"][-1] == 0.0 and len(grid["sigmas"]) == 7
    stock = FlowMatchEulerDiscreteScheduler(shift=3.0)
    stock.set_timesteps(sigmas=grid["diffusers"]["sigmas"])  # the stock scheduler re-applies its shift ...
    assert torch.allclose(stock.sigmas.double(), 1 - t, atol=1e-6)  # ... and lands on the learned grid
    plain = FlowMatchEulerDiscreteScheduler(shift=3.0)
    plain.set_timesteps(sigmas=grid["comfyui"]["sigmas"][:-1])  # the trap: un-inverted sigmas get shifted
    assert (plain.sigmas.double() - (1 - t)).abs().max() > 0.1  # 0.26 here
    dyn = dif.export_sigmas(_flow_field(use_dynamic_shifting=True), _bns(_flow_field(use_dynamic_shifting=True), 6))
    assert "use_dynamic_shifting=False" in dyn["diffusers"]["refused_preshift"]
    assert "loses" in grid["note"]


def test_cli_export(ddpm_folder, ddpm_field, tmp_path, capsys):
    sol = tmp_path / "bns4.safetensors"
    save_solver(_bns(ddpm_field, 4), sol, ddpm_field)
    assert main(["export", "--model", str(ddpm_folder), "--solver", str(sol), "--format", "diffusers",
                 "--out", str(tmp_path / "sched")]) == 0
    s = dif.BespokeScheduler.from_pretrained(tmp_path / "sched")
    assert s.nfe == 4 and s.config.model_id == ddpm_field.model_id
    assert main(["export", "--model", str(ddpm_folder), "--solver", str(sol), "--format", "sigmas",
                 "--out", str(tmp_path / "g.json")]) == 0
    g = json.loads((tmp_path / "g.json").read_text())
    assert len(g["timesteps"]) == 4 and g["timesteps"][0] == 999.0 and g["sigmas"][-1] == 0.0
    assert main(["export", "--model", str(ddpm_folder), "--solver", str(sol), "--nfe", "6", "--format", "sigmas",
                 "--out", str(tmp_path / "h.json")]) == 2
    assert "NFE 4" in capsys.readouterr().err
    assert main(["export", "--model", "assets/checkerboard_fm-ot.safetensors", "--solver", "midpoint", "--nfe", "4",
                 "--format", "diffusers", "--out", str(tmp_path / "x")]) == 2
    assert "diffusers model" in capsys.readouterr().err
    # every --model accepts the folder: sample with a built-in solver
    assert main(["sample", "--model", str(ddpm_folder), "--solver", "ddim", "--nfe", "3", "--n", "2",
                 "--out", str(tmp_path / "s.npy")]) == 0


def test_import_core_does_not_import_diffusers():
    code = "import sys, core, core.cli, core.integrations.diffusers; print(any(m.split('.')[0] == 'diffusers' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------------
# The stock SD3 and FLUX pipelines (they need transformers only to import; no text encoder runs:
# the conditioning is pre-computed, the VAE is skipped with output_type="latent")
# --------------------------------------------------------------------------------------

def test_stock_sd3_pipeline_runs_the_learned_solver():
    pytest.importorskip("transformers")
    from diffusers import StableDiffusion3Pipeline
    tr, sched = _sd3(), FlowMatchEulerDiscreteScheduler(shift=3.0)
    g = torch.Generator().manual_seed(0)
    cond = {"encoder_hidden_states": torch.randn(1, 5, 16, generator=g), "pooled_projections": torch.randn(1, 8, generator=g)}
    uncond = {k: torch.zeros_like(v) for k, v in cond.items()}
    field = dif.as_velocity_field(tr, sched, (4, 8, 8), cond=cond, uncond=uncond, guidance_scale=3.0)
    solver = _bns(field, 5, seed=1)
    pipe = StableDiffusion3Pipeline(transformer=tr, scheduler=sched, vae=None, text_encoder=None, tokenizer=None,
                                    text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    s = dif.scheduler_for(field, solver)
    with pytest.raises(dif.SchedulerRefusal, match="guidance"):
        s.attach(pipe, guidance_scale=7.0)
    s.attach(pipe, guidance_scale=3.0)

    def two(v):
        return v.repeat(2, *([1] * (v.dim() - 1)))

    kw = dict(prompt_embeds=two(cond["encoder_hidden_states"]), pooled_prompt_embeds=two(cond["pooled_projections"]),
              negative_prompt_embeds=two(uncond["encoder_hidden_states"]),
              negative_pooled_prompt_embeds=two(uncond["pooled_projections"]), guidance_scale=3.0,
              height=8 * pipe.vae_scale_factor, width=8 * pipe.vae_scale_factor, output_type="latent")
    out = pipe(num_inference_steps=5, generator=torch.Generator().manual_seed(7), **kw).images
    with torch.no_grad():
        ref = solver.solve(field, torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(7))).x
    assert _rel(out, ref) < REL
    with pytest.raises(dif.SchedulerRefusal, match="num_inference_steps=28"):
        pipe(num_inference_steps=28, **kw)


def test_stock_flux_pipeline_runs_the_learned_solver():
    pytest.importorskip("transformers")
    from diffusers import FluxPipeline, FluxTransformer2DModel
    torch.manual_seed(0)
    tr = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
                                num_attention_heads=2, joint_attention_dim=16, pooled_projection_dim=8,
                                guidance_embeds=True, axes_dims_rope=(2, 2, 4)).eval().requires_grad_(False)
    sched = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, shift=3.0)
    g = torch.Generator().manual_seed(0)
    emb, pooled = torch.randn(1, 5, 16, generator=g), torch.randn(1, 8, generator=g)
    txt_ids, img_ids = torch.zeros(5, 3), FluxPipeline._prepare_latent_image_ids(1, 2, 2, "cpu", torch.float32)
    w = 3.5  # FLUX-dev style distilled guidance: an input of the transformer, bound in the field

    def flux(x, timestep, encoder_hidden_states, pooled_projections):  # what FluxPipeline calls
        return tr(hidden_states=x, timestep=timestep / 1000, guidance=torch.full((x.shape[0],), w),
                  encoder_hidden_states=encoder_hidden_states, pooled_projections=pooled_projections,
                  txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]

    field = dif.as_velocity_field(flux, sched, (4, 16), cond={"encoder_hidden_states": emb, "pooled_projections": pooled})
    solver = _bns(field, 4, seed=2)
    pipe = FluxPipeline(scheduler=sched, vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None,
                        tokenizer_2=None, transformer=tr)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = dif.scheduler_for(field, solver)  # use_flow_sigmas: FLUX passes no sigmas; its mu is ignored
    out = pipe(prompt_embeds=emb.repeat(2, 1, 1), pooled_prompt_embeds=pooled.repeat(2, 1), guidance_scale=w,
               num_inference_steps=4, height=32, width=32, output_type="latent",
               generator=torch.Generator().manual_seed(7)).images
    x0 = FluxPipeline._pack_latents(torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(7)), 2, 4, 4, 4)
    with torch.no_grad():
        ref = solver.solve(field, x0).x
    assert _rel(out, ref) < REL


# --------------------------------------------------------------------------------------
# The app: the Model page opens a local pipeline folder, and the other pages work on it
# --------------------------------------------------------------------------------------

def test_app_model_page_opens_a_pipeline_folder(ddpm_folder, tmp_path):
    import os

    from streamlit.testing.v1 import AppTest

    from explorer import state
    app = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "streamlit_app.py")
    at = AppTest.from_file(app, default_timeout=180).run()
    assert not at.exception, at.exception
    before = at.session_state[state.MODEL_KEY]

    def open_folder(path):
        at.text_input(key="model.folder").set_value(str(path))
        next(b for b in at.button if b.label == "Open folder").click().run()
        assert not at.exception, at.exception

    open_folder(tmp_path)  # a folder, but no pipeline: a message, the model unchanged
    assert any("no model_index.json" in e.value for e in at.error), [e.value for e in at.error]
    assert at.session_state[state.MODEL_KEY] == before
    open_folder(ddpm_folder)
    assert at.session_state[state.MODEL_KEY].startswith("folder:")
    info = dict(zip(at.table[0].value.iloc[:, 0], at.table[0].value.iloc[:, 1]))
    assert info["Gaussian path"] == "vp-discrete" and info["sample shape"] == "1 x 8 x 8", info
    assert not at.error, [e.value for e in at.error]
    at.switch_page("pages/samples.py").run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])


def test_readme_diffusers_example_runs(tmp_path, monkeypatch):
    """The README's first diffusers example as written, on a tiny pipeline saved where it looks, with
    a training budget small enough for a test."""
    import re
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("### diffusers")
    code = re.search(r"```python\n(.*?)```", readme[start:], re.S).group(1)
    big = "TrainConfig(gt_atol=1e-6, gt_rtol=1e-6)"  # core.train's default budget
    assert big in code
    code = code.replace(big, "TrainConfig(iters=3, n_train=32, n_val=16, batch_size=16, val_every=3)")
    monkeypatch.chdir(tmp_path)
    DDPMPipeline(unet=_unet(), scheduler=DDPMScheduler()).save_pretrained("my_ddpm_pipeline")
    ns = {}
    exec(compile(code, "README-diffusers", "exec"), ns)
    assert len(ns["images"]) == 1 and ns["images"][0].size == (8, 8)
    assert isinstance(ns["pipe"].scheduler, dif.BespokeScheduler) and ns["pipe"].scheduler.nfe == 8
