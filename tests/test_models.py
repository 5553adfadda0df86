import pytest
import torch

from core.models import ARCHITECTURES, CondResMLP, TimeMLP, build_network, check_arch_args
from core.train_model import ModelTrainConfig, arch_args, train_model, training_target
from core.paths import get_path


def test_time_mlp_shapes_scalar_and_batch_time():
    torch.manual_seed(0)
    net = build_network("time-mlp", dim=2, hidden=32, layers=2, x_freq=2)
    x = torch.randn(5, 2)
    out = net(torch.tensor(0.3), x)
    assert out.shape == (5, 2)
    assert torch.allclose(out, net(torch.full((5,), 0.3), x))
    with pytest.raises(ValueError, match="unconditional"):
        net(torch.tensor(0.3), x, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        net(torch.zeros(3), x)


def test_default_time_mlp_is_the_benchmark_size():
    net = TimeMLP()
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [256, 256, 256, 2]


def test_cond_resmlp_uses_the_label_and_the_null_class():
    torch.manual_seed(0)
    net = CondResMLP(hidden=32, blocks=2)
    x, t = torch.randn(4, 1, 8, 8), torch.rand(4)
    y = torch.tensor([0, 1, 2, 3])
    out = net(t, x, y)
    assert out.shape == x.shape
    assert not torch.allclose(out, net(t, x, y + 1))  # the class matters
    assert torch.equal(net(t, x), net(t, x, torch.full((4,), 10)))  # None = the null class 10


def test_registry_validates_names_and_argument_ranges():
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        build_network("resnet")
    with pytest.raises(ValueError, match="unknown argument 'depth'"):
        check_arch_args("time-mlp", {"depth": 3})
    with pytest.raises(ValueError, match=r"hidden=1000000000 .* must be an integer in \[1, 4096\]"):
        check_arch_args("time-mlp", {"hidden": 10**9})
    with pytest.raises(ValueError, match="hidden=2.5"):
        check_arch_args("time-mlp", {"hidden": 2.5})
    with pytest.raises(ValueError, match="hidden=True"):
        check_arch_args("cond-resmlp", {"hidden": True})
    assert set(ARCHITECTURES) == {"time-mlp", "cond-resmlp"}


@pytest.mark.parametrize("path,prediction", [("fm-ot", "velocity"), ("fm-cs", "velocity"), ("eps-vp", "eps"),
                                             ("fm-ot", "x1")])
def test_training_target_is_the_derivative_of_the_path(path, prediction):
    """The velocity target equals d/dt x_t (finite difference), eps / x1 targets are x0 / x1."""
    p = get_path(path)
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(6, 2, generator=g, dtype=torch.float64), torch.randn(6, 2, generator=g, dtype=torch.float64)
    t = torch.rand(6, generator=g, dtype=torch.float64) * 0.9 + 0.05
    x_t, target = training_target(p, prediction, t, x0, x1)
    c = p(t)
    assert torch.allclose(x_t, c.alpha[:, None] * x1 + c.sigma[:, None] * x0)
    if prediction == "velocity":
        h = 1e-6
        fd = (training_target(p, prediction, t + h, x0, x1)[0] - training_target(p, prediction, t - h, x0, x1)[0]) / (2 * h)
        assert torch.allclose(target, fd, atol=1e-6)
    else:
        assert torch.equal(target, x0 if prediction == "eps" else x1)


def test_auto_config_resolution_and_errors():
    cfg = ModelTrainConfig(data="digits", path="eps-vp", device="cpu").resolved()
    assert (cfg.prediction, cfg.arch) == ("eps", "cond-resmlp")
    assert arch_args(cfg)["num_classes"] == 10
    cfg = ModelTrainConfig(data="moons", device="cpu").resolved()
    assert (cfg.prediction, cfg.arch) == ("velocity", "time-mlp")
    with pytest.raises(ValueError, match="unknown data set"):
        ModelTrainConfig(data="cifar").resolved()
    with pytest.raises(ValueError, match="unknown Gaussian path"):
        ModelTrainConfig(path="ddpm").resolved()
    with pytest.raises(ValueError, match="steps must be >= 1"):
        ModelTrainConfig(steps=0).resolved()
    with pytest.raises(ValueError, match="time-mlp needs flat data"):
        arch_args(ModelTrainConfig(data="digits", arch="time-mlp", device="cpu").resolved())


def test_training_is_deterministic_and_lowers_the_loss():
    cfg = ModelTrainConfig(data="moons", hidden=32, layers=2, steps=80, batch_size=128, lr=3e-3, device="cpu",
                           seed=3)
    a = train_model(cfg, progress=False, log_every=20)
    b = train_model(cfg, progress=False, log_every=20)
    for pa, pb in zip(a.net.parameters(), b.net.parameters()):
        assert torch.equal(pa, pb)
    assert a.history[-1][1] < 0.9 * a.history[0][1]
    assert a.header["seed"] == 3 and a.header["training"]["steps"] == 80
    assert not any(p.requires_grad for p in a.net.parameters())


def test_conditional_training_records_cfg_settings():
    cfg = ModelTrainConfig(data="digits", hidden=16, layers=1, steps=3, batch_size=8, device="cpu", p_uncond=0.2,
                           guidance_scale=1.5)
    r = train_model(cfg, progress=False)
    assert r.header["conditioning"] == {"num_classes": 10, "null_class": 10, "p_uncond": 0.2, "guidance_scale": 1.5}
    assert r.header["data"] == {"name": "digits", "shape": [1, 8, 8], "range": 2.0}
