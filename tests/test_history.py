"""Training-curve files (core/history.py): round trip, NaN, and refusals with one line."""
import json
import math

import pytest

from core.history import load_history, save_history


def test_roundtrip_keeps_the_curve_and_turns_nan_into_null(tmp_path):
    hist = [{"iteration": 0, "loss": float("nan"), "elapsed": 0.0, "rmse": 0.5, "psnr": 12.0},
            {"iteration": 1, "loss": 0.25, "elapsed": 0.1, "extra": "dropped"}]
    p = tmp_path / "h.history.json"
    save_history(p, hist, {"best": {"rmse": 0.5}, "spec": {"family": "bns"}})
    raw = json.loads(p.read_text())  # strict JSON: no NaN literal
    assert raw["history"][0]["loss"] is None and "extra" not in raw["history"][1]
    rows, summary = load_history(p)
    assert math.isnan(rows[0]["loss"]) and rows[0]["rmse"] == 0.5 and rows[1] == {"iteration": 1, "loss": 0.25,
                                                                                    "elapsed": 0.1}
    assert summary["spec"]["family"] == "bns"


@pytest.mark.parametrize("text, match", [
    ("[1, 2]", "not a training history"),
    ('{"format": "other", "version": 1, "history": []}', "not a training history"),
    ('{"format": "bespoke-history", "version": 1, "history": [{"loss": 1}]}', "integer 'iteration'"),
    ('{"format": "bespoke-history", "version": 1, "history": [{"iteration": 1, "loss": "x"}]}', "non-number loss"),
    ("{not json", "not valid JSON"),
])
def test_bad_files_are_refused_with_one_line(tmp_path, text, match):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        load_history(p)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="cannot read"):
        load_history(tmp_path / "missing.json")
