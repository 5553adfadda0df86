"""Model checkpoints: round trip, the velocity field for every prediction type, guidance and
labels, and hostile files (each must give a one-line CheckpointError, never run code)."""
import json
import os
import pickle
import struct

import pytest
import torch

import core
from core import checkpoint
from core.checkpoint import CheckpointError
from core.field import VelocityField
from core.model_io import load_model, load_network, save_model
from core.paths import get_path, velocity_from_prediction
from core.train_model import ModelTrainConfig, train_model


def _tiny(data="moons", path="fm-ot", **kw):
    cfg = ModelTrainConfig(data=data, path=path, hidden=8, layers=1, steps=2, batch_size=16, device="cpu", **kw)
    return train_model(cfg, progress=False)


@pytest.fixture(scope="module")
def moons_file(tmp_path_factory):
    r = _tiny()
    f = tmp_path_factory.mktemp("m") / "moons.safetensors"
    save_model(f, r.net, r.header)
    return f


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory):
    r = _tiny("digits", guidance_scale=2.5)
    f = tmp_path_factory.mktemp("d") / "digits.safetensors"
    save_model(f, r.net, r.header)
    return f


def _expect(src, match):
    with pytest.raises(CheckpointError, match=match) as e:
        load_model(src)
    assert "\n" not in str(e.value)


def _rewrite(src, tmp_path, header_fn=None, tensors_fn=None, name="bad.safetensors"):
    """A consistent file (a valid content hash) whose header or tensors were changed."""
    tensors, header = checkpoint.load(src)
    for k in ("format", "version", "kind", "content_hash"):
        header.pop(k)
    if header_fn:
        header_fn(header)
    if tensors_fn:
        tensors_fn(tensors)
    out = tmp_path / name
    out.write_bytes(checkpoint.dumps(tensors, header, "model"))
    return out


# ---------------------------------------------------------------- round trip and the field

def test_round_trip_gives_a_velocity_field_with_metadata(moons_file):
    field = core.load_model(moons_file)
    assert isinstance(field, VelocityField)
    assert field.data_shape == (2,) and field.data_range == 4.0 and field.path.name == "fm-ot"
    assert field.model_id == checkpoint.load(moons_file)[1]["content_hash"]
    assert field.guidance_scale is None and field.meta["data"]["name"] == "moons"
    assert field.meta["arch"] == "time-mlp" and field.meta["seed"] == 0
    net, _ = load_network(moons_file)
    x = torch.randn(7, 2)
    assert torch.allclose(field(0.3, x), net(torch.full((7,), 0.3), x))
    assert torch.allclose(field(torch.full((7,), 0.3), x), field(0.3, x))


def test_eps_model_is_converted_to_a_velocity(tmp_path):
    r = _tiny(path="eps-vp")
    f = tmp_path / "vp.safetensors"
    save_model(f, r.net, r.header)
    field = load_model(f)
    net, info = load_network(f)
    assert info.prediction == "eps"
    u_ref = velocity_from_prediction(lambda t, x: net(t, x), get_path("eps-vp"), "eps")
    x, t = torch.randn(5, 2), torch.rand(5) * 0.9
    assert torch.allclose(field(t, x), u_ref(t, x), atol=1e-6)
    assert not torch.allclose(field(t, x), net(t, x))


def test_eps_vp_field_is_finite_at_the_data_end(tmp_path, moons_file):
    """eps-VP's sigma' is infinite at t = 1; the field holds its value over the last 1e-5."""
    r = _tiny(path="eps-vp")
    f = tmp_path / "vp.safetensors"
    save_model(f, r.net, r.header)
    field = load_model(f)
    net, _ = load_network(f)
    raw = velocity_from_prediction(lambda t, x: net(t, x), get_path("eps-vp"), "eps")
    x = torch.randn(5, 2)
    assert raw(torch.tensor(1.0), x).abs().max() > 1e6  # the unclamped conversion blows up
    assert torch.equal(field(1.0, x), field(1 - 1e-5, x))
    assert field(1.0, x).abs().max() < 1e3 and field.meta["t_clamp"] == [1e-5, 1 - 1e-5]
    vel = load_model(moons_file)
    assert not torch.equal(vel(1.0, x), vel(1 - 1e-5, x)) and "t_clamp" not in vel.meta


def test_dtype_and_mixed_precision_inputs(moons_file):
    f64 = load_model(moons_file, dtype=torch.float64)
    x = torch.randn(4, 2, dtype=torch.float64)
    assert f64(0.5, x).dtype == torch.float64
    assert f64(0.5, x.float()).dtype == torch.float32  # output follows the input
    f32 = load_model(moons_file)
    assert torch.allclose(f32(0.5, x.float()), f64(0.5, x).float(), atol=1e-5)


def test_guided_field_is_one_forward_pass_and_the_cfg_formula(digits_file):
    net, _ = load_network(digits_file)
    field = load_model(digits_file)  # the checkpoint's default guidance scale
    assert field.guidance_scale == 2.5 and field.num_classes == 10
    calls = []
    field.module.register_forward_hook(lambda m, i, o: calls.append(i[1].shape[0]))
    x = torch.randn(6, 1, 8, 8)
    u = field(0.4, x)
    assert calls == [12]  # one batched pass over [conditional; unconditional] = one NFE
    y = torch.arange(6) % 10
    u_c = velocity_from_prediction(lambda t, z: net(t, z, y), field.path, "velocity")(torch.tensor(0.4), x)
    u_u = velocity_from_prediction(lambda t, z: net(t, z, None), field.path, "velocity")(torch.tensor(0.4), x)
    assert torch.allclose(u, u_u + 2.5 * (u_c - u_u), atol=1e-5)
    calls.clear()
    cond = field.with_guidance(1.0)
    assert torch.allclose(cond(0.4, x), u_c, atol=1e-6) and calls == [6]  # w = 1: the conditional model
    assert cond.guidance_scale == 1.0 and cond.model_id == field.model_id


def test_labels_go_by_position(digits_file):
    field = load_model(digits_file, guidance_scale=1.0)
    x = torch.randn(4, 1, 8, 8).repeat(2, 1, 1, 1)  # rows i and i + 4 are the same image
    u = field.with_labels(torch.tensor([3, 7]))(0.5, x)
    u3 = field.with_labels(3)(0.5, x)
    u7 = field.with_labels(7)(0.5, x)
    assert torch.allclose(u[0::2], u3[0::2]) and torch.allclose(u[1::2], u7[1::2])
    assert not torch.allclose(u3, u7)
    # The default labels cycle through 0..9.
    assert torch.allclose(load_model(digits_file, guidance_scale=1.0)(0.5, x)[3], field.with_labels(3)(0.5, x)[3])
    with pytest.raises(ValueError, match=r"labels must lie in 0..10"):
        field.with_labels(11)
    with pytest.raises(ValueError, match="integer"):
        field.with_labels(torch.tensor([0.5]))


def test_for_rows_keeps_each_sample_its_class(digits_file, moons_file):
    """Evaluating u on rows idx of a batch (a GT-pool mini-batch) must give those rows' values,
    also when the rows are then flattened (k b) the way solvers batch their steps."""
    field = load_model(digits_file)
    x = torch.randn(12, 1, 8, 8)
    full = field(0.3, x)
    idx = torch.tensor([7, 2, 11, 5])
    sub = field.for_rows(idx)
    assert torch.allclose(sub(0.3, x[idx]), full[idx], atol=1e-6)
    assert not torch.allclose(field(0.3, x[idx]), full[idx], atol=1e-6)  # plain position: wrong classes
    xs = torch.stack([x[idx], x[idx]])  # (K=2, B=4, ...) -> (K B, ...)
    assert torch.allclose(sub(0.3, xs.reshape(8, 1, 8, 8)), full[idx].repeat(2, 1, 1, 1), atol=1e-6)
    assert torch.allclose(field.for_rows(slice(8, 12))(0.3, x[8:]), full[8:], atol=1e-6)
    with pytest.raises(ValueError, match="non-negative stop"):
        field.for_rows(slice(8, None))
    moons = load_model(moons_file)
    assert moons.for_rows(idx) is moons


def test_guidance_and_labels_refused_for_unconditional_models(moons_file):
    with pytest.raises(ValueError, match="unconditional"):
        load_model(moons_file, guidance_scale=2.0)
    with pytest.raises(ValueError, match="unconditional"):
        load_model(moons_file, labels=3)


def test_field_can_be_solved_and_differentiated(moons_file):
    """Solvers differentiate through u with respect to x (learned-solver training)."""
    field = load_model(moons_file)
    x = torch.randn(3, 2, requires_grad=True)
    field(0.2, x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is None for p in field.module.parameters())


# ---------------------------------------------------------------- hostile and broken files

class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    f = tmp_path / "evil.safetensors"
    f.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    _expect(f, "pickle")
    f.write_bytes(pickle.dumps(_Evil(marker), protocol=4))
    _expect(f, "pickle")
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")  # torch.save: a zip of pickles
    _expect(tmp_path / "model.pt", "pickle")
    assert not marker.exists()


def test_truncated_and_corrupted_files(moons_file, tmp_path):
    raw = moons_file.read_bytes()
    for cut in (4, 100, len(raw) // 2, len(raw) - 1):
        (tmp_path / "t.safetensors").write_bytes(raw[:cut])
        _expect(tmp_path / "t.safetensors", "too short|truncated|impossible|hash")
    flipped = bytearray(raw)
    flipped[-10] ^= 0xFF
    (tmp_path / "c.safetensors").write_bytes(bytes(flipped))
    _expect(tmp_path / "c.safetensors", "content hash mismatch")
    (tmp_path / "e.safetensors").write_bytes(b"")
    _expect(tmp_path / "e.safetensors", "too short")
    _expect(tmp_path / "missing.safetensors", "not found")
    _expect(tmp_path, "not a file")


def test_foreign_and_wrong_kind_files(moons_file, tmp_path):
    head = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (tmp_path / "foreign.safetensors").write_bytes(struct.pack("<Q", len(head)) + head + b"\0\0\0\0")
    _expect(tmp_path / "foreign.safetensors", "no Bespoke Explorer metadata")
    solver = tmp_path / "solver.safetensors"
    checkpoint.save(solver, {"theta": torch.zeros(3)}, {"family": "x"}, kind="solver")
    _expect(solver, "expected a model checkpoint")
    (tmp_path / "junk.bin").write_bytes(os.urandom(256))
    _expect(tmp_path / "junk.bin", "impossible|not valid|too short")


def test_wrong_shapes_missing_and_extra_tensors(moons_file, tmp_path):
    def widen(t):
        t["net.0.weight"] = torch.zeros(9, t["net.0.weight"].shape[1])
    _expect(_rewrite(moons_file, tmp_path, tensors_fn=widen), r"tensor 'net.0.weight' has shape \(9, 15\)")
    _expect(_rewrite(moons_file, tmp_path, tensors_fn=lambda t: t.pop("net.0.bias")), "missing tensor")
    _expect(_rewrite(moons_file, tmp_path, tensors_fn=lambda t: t.update(extra=torch.zeros(1))), "unexpected tensor")
    _expect(_rewrite(moons_file, tmp_path, tensors_fn=lambda t: t.update({"net.0.bias": torch.zeros(8, dtype=torch.int64)})),
            "dtype")


@pytest.mark.parametrize("lie,match", [
    (lambda h: h["arch_args"].update(hidden=16), r"has shape .* needs"),
    (lambda h: h["arch_args"].update(hidden=10**9), r"hidden=1000000000 .* must be an integer"),
    (lambda h: h.update(arch="os.system"), "unknown architecture 'os.system'"),
    (lambda h: h.update(arch=["time-mlp"]), "'arch' must be a string"),
    (lambda h: h.update(path={"name": "fm-ot", "evil": 1}), "bad arguments for path"),
    (lambda h: h.update(path="ddpm"), "unknown Gaussian path"),
    (lambda h: h.update(prediction="score"), "unknown prediction type 'score'"),
    (lambda h: h["data"].update(shape=[3]), r"data shape \[3\] does not match"),
    (lambda h: h["data"].update(shape=[10**6, 10**6]), "data shape must be"),
    (lambda h: h["data"].update(range=-2), "data range must be a positive"),
    (lambda h: h.update(conditioning={"num_classes": 10}), "conditioning .*10 classes.* does not match"),
    (lambda h: h.update(conditioning="yes"), "conditioning must be null"),
    (lambda h: h.pop("prediction"), "no 'prediction' entry"),
])
def test_a_header_that_lies_is_refused(moons_file, tmp_path, lie, match):
    _expect(_rewrite(moons_file, tmp_path, header_fn=lie), match)


def test_an_infinite_data_range_is_refused(moons_file, tmp_path):
    """Python's json reads the non-standard token Infinity; the loader must still refuse it."""
    bad = _rewrite(moons_file, tmp_path, header_fn=lambda h: h["data"].update(range=12345.678))
    raw = bad.read_bytes()
    assert raw.count(b"12345.678") == 1
    bad.write_bytes(raw.replace(b"12345.678", b"Infinity "))  # same length: offsets stay valid
    _expect(bad, r"metadata holds the non-finite number Infinity")


def test_non_finite_weights_are_refused(moons_file, tmp_path):
    def poison(t):
        t["net.0.weight"][0, 0] = float("nan")
    _expect(_rewrite(moons_file, tmp_path, tensors_fn=poison), "not finite")


def test_conditional_lies(digits_file, tmp_path):
    _expect(_rewrite(digits_file, tmp_path, header_fn=lambda h: h.update(conditioning=None)),
            r"conditioning \(0 classes\) does not match")
    _expect(_rewrite(digits_file, tmp_path, header_fn=lambda h: h["conditioning"].update(null_class=3)),
            "null_class must be 10")
    _expect(_rewrite(digits_file, tmp_path, header_fn=lambda h: h["conditioning"].update(guidance_scale="big")),
            "guidance_scale must be a finite number")
