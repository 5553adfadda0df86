"""scripts/make_report.py: it lists pipeline folders among the shipped models, and a run for some
models keeps the sections of models from earlier runs (rows merge, never overwrite)."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("make_report", ROOT / "scripts" / "make_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shipped_models_include_the_pipeline_folder_not_its_weights():
    models = _script().shipped_models()
    assert ROOT / "assets" / "mnist_fm-ot" in models
    assert ROOT / "assets" / "digits_fm-ot.safetensors" in models
    assert not any("unet" in p.parts or "solvers" in p.parts for p in models)
    assert ROOT / "assets" / "mnist_classifier.safetensors" not in models  # a feature network, not a model


def test_runs_for_different_models_merge(tmp_path):
    mod = _script()
    out = tmp_path / "RESULTS.md"
    common = ["--nfe", "4", "--n-samples", "16", "--learned", "--train-iters", "1", "--threads", "1", "--out", str(out)]
    mod.main(["--models", str(ROOT / "assets" / "moons_fm-ot.safetensors"), *common])
    first = json.loads((tmp_path / "results" / "moons_fm-ot.json").read_text())
    mod.main(["--models", str(ROOT / "assets" / "spirals_fm-ot.safetensors"), *common])
    meta = json.loads((tmp_path / "results" / "meta.json").read_text())
    assert meta["models"] == ["moons_fm-ot", "spirals_fm-ot"] and meta["kept"] == ["moons_fm-ot"]
    text = out.read_text()
    assert "## moons_fm-ot" in text and "## spirals_fm-ot" in text and "come from an earlier run" in text
    assert json.loads((tmp_path / "results" / "moons_fm-ot.json").read_text()) == first  # kept as it was
    mod.main(["--models", str(ROOT / "assets" / "moons_fm-ot.safetensors"), *common])  # redone: not duplicated
    meta = json.loads((tmp_path / "results" / "meta.json").read_text())
    assert meta["models"] == ["spirals_fm-ot", "moons_fm-ot"] and meta["kept"] == ["spirals_fm-ot"]
    assert out.read_text().count("## moons_fm-ot") == 1
