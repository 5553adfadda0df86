"""App uploads and error boxes (issue 10, items 1-3, 6 and 9): hostile model and solver uploads
give one readable line and change nothing; an unexpected error on a page shows its message; the
upload limit is stated in the unit it is checked in."""
import math
import os

import pytest
from streamlit.testing.v1 import AppTest

from bench.bench_hostile import ROOT, hostile_files
from core import checkpoint
from explorer import models, state
from explorer.models import MAX_UPLOAD_MB, UPLOAD_LIMIT_LABEL, ModelLoadError, load_entry

APP = os.path.join(ROOT, "streamlit_app.py")
TIMEOUT = 240


def _digits_with(fn) -> bytes:
    raw = (ROOT / "assets" / "digits_fm-ot.safetensors").read_bytes()
    tensors, header = checkpoint.loads(raw)
    fn(tensors)
    extra = {k: v for k, v in header.items() if k not in ("format", "version", "kind", "content_hash")}
    return checkpoint.dumps(tensors, extra, "model")


def _nan_class(t):
    emb = next(k for k in t if t[k].dim() == 2 and t[k].shape[0] == 11)
    t[emb][4, 0] = math.nan


def _huge_weight(t):
    t[sorted(t)[0]].view(-1)[0] = 3e38


def _model_uploads() -> dict[str, bytes]:
    files = {name: raw for name, (kind, raw) in hostile_files().items() if kind == "model"}
    files["digits: NaN in class 4's embedding"] = _digits_with(_nan_class)
    files["digits: one weight of 3e38"] = _digits_with(_huge_weight)
    return files


@pytest.fixture(scope="module")
def app():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    return at


def _one_line_errors(at) -> list[str]:
    msgs = [e.value for e in at.error]
    assert all("\n" not in m for m in msgs), msgs
    return msgs


def test_hostile_model_uploads_give_one_line_and_change_nothing(app):
    before = app.session_state[state.MODEL_KEY]
    for i, (name, raw) in enumerate(_model_uploads().items()):
        app.file_uploader(key="model.upload").set_value((f"hostile{i}.safetensors", raw,
                                                         "application/octet-stream")).run()
        assert not app.exception, (name, app.exception)
        msgs = _one_line_errors(app)
        assert any(m.startswith(f"Could not open 'hostile{i}.safetensors'") for m in msgs), (name, msgs)
        assert app.session_state[state.MODEL_KEY] == before


def test_hostile_solver_uploads_give_one_line(app):
    app.switch_page("pages/train.py").run()
    assert not app.exception, app.exception
    for i, (name, (kind, raw)) in enumerate(hostile_files().items()):
        if kind != "solver":
            continue
        app.file_uploader(key="train.upload").set_value((f"s{i}.safetensors", raw, "application/octet-stream")).run()
        assert not app.exception, (name, app.exception)
        msgs = _one_line_errors(app)
        assert any(m.startswith(f"Could not use 's{i}.safetensors'") for m in msgs), (name, msgs)
    assert not state_solvers(app)
    app.switch_page("pages/model.py").run()


def state_solvers(at):
    return list(at.session_state[state.SOLVERS]) if state.SOLVERS in at.session_state else []


def test_an_unexpected_page_error_shows_its_one_line_message(monkeypatch):
    """The config shows only an error's type ("message redacted"); the app catches what a page
    raises and shows "This page stopped: <type>: <first line>"."""
    from explorer import figures

    def broken(*a, **k):
        raise RuntimeError("the path figure could not be drawn\nsecond line")
    monkeypatch.setattr(figures, "path_coefficients", broken)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    assert "This page stopped: RuntimeError: the path figure could not be drawn" in _one_line_errors(at)


def test_upload_limit_is_decimal_megabytes_everywhere():
    """Streamlit's browser counts 10**6 bytes per MB: a 63 MiB file is over "64 MB". The label
    says the bytes, and the server-side check uses the same bytes."""
    assert UPLOAD_LIMIT_LABEL == f"at most {MAX_UPLOAD_MB} MB = {MAX_UPLOAD_MB * 10**6:,} bytes"
    with pytest.raises(ModelLoadError, match=r"over the limit \(at most 64 MB = 64,000,000 bytes\)"):
        load_entry("upload:x", b"\0" * (63 << 20))  # 63 MiB = 66.06 MB
    with pytest.raises(ModelLoadError) as e:
        load_entry("upload:x", b"\0" * (MAX_UPLOAD_MB * 10**6))  # exactly the limit: read, then refused as junk
    assert "over the limit" not in str(e.value)


def test_upload_loader_refuses_every_hostile_model_in_one_line():
    for name, raw in _model_uploads().items():
        with pytest.raises(ModelLoadError) as e:
            models.load_entry(models.upload_key(raw), raw)
        assert "\n" not in str(e.value), name
