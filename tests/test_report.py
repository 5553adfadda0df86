"""NFE sweeps on an analytic field (exact mixture VF, the 8-Gaussians data), tiny budgets."""
import json

import pytest
import torch

from core.analytic import mixture_field
from core.data import GAUSSIANS_MEANS, GAUSSIANS_STD, gaussians
from core.paths import get_path
from core.report import SweepConfig, SweepResult, distance_metrics, sweep, valid_nfe, write_outputs
from core.solvers.registry import get_solver


@pytest.fixture(scope="module")
def field():
    return mixture_field(get_path("fm-ot"), GAUSSIANS_MEANS, GAUSSIANS_STD)


@pytest.fixture(scope="module")
def reference():
    return gaussians(300, torch.Generator().manual_seed(11)).float()


@pytest.fixture(scope="module")
def result(field, reference):
    cfg = SweepConfig(solvers=("euler", "midpoint", "rk4", "edm"), nfes=(2, 4, 8), n_samples=300,
                      n_projections=64, device="cpu")
    return sweep(field, cfg, reference)


def test_sweep_rows_and_gt(result):
    assert result.gt["nfe"] > 20 and set(result.distances) == {"sw", "energy"}
    assert {r["solver"] for r in result.rows} == {"euler", "midpoint", "rk4", "edm"}
    # rk4 cannot run below 4 NFE: no cell at 2; at 8 it runs at 8.
    assert result.cell("rk4", 2) is None and result.cell("rk4", 8)["nfe"] == 8
    assert result.cell("edm", 4)["nfe"] == 3  # edm needs an odd NFE: the largest one <= 4
    rm = [result.cell("midpoint", n)["rmse"] for n in (2, 4, 8)]
    assert rm[0] > rm[1] > rm[2]  # consistent: error falls with NFE


def test_distances_rank_broken_below_gt(result):
    crude = result.cell("euler", 2)
    assert crude["pct_sw"] > 100 and crude["pct_energy"] > 100
    assert crude["energy"] > result.gt["energy"]
    assert result.cell("midpoint", 8)["energy"] < crude["energy"]


def test_markdown_json_roundtrip(result, tmp_path):
    md = result.to_markdown()
    assert "| edm |" in md and "(@3)" in md and "GT (NFE" in md and "%" in md
    back = SweepResult.from_dict(json.loads(result.to_json()))
    assert back.to_markdown() == md
    paths = write_outputs(result, tmp_path, stem="s", plot="svg")
    assert (tmp_path / "s.json").exists() and (tmp_path / "s_rmse.svg").read_text().startswith("<svg")
    assert len(paths) == 2 + 4
    html = write_outputs(result, tmp_path / "h", stem="s", plot="html")
    assert html[-1].suffix == ".html" and "plotly" in html[-1].read_text()


def test_learned_solver_trained_per_nfe_beats_its_base(field, reference):
    cfg = SweepConfig(solvers=("euler",), learned=("rk1-bespoke",), nfes=(4,), n_samples=300, n_projections=16,
                      train_iters=40, train_n=256, device="cpu")
    res = sweep(field, cfg, reference)
    learned, base = res.cell("rk1-bespoke", 4), res.cell("euler", 4)
    assert learned["kind"] == "learned" and learned["train_iters"] == 40 and learned["train_seconds"] > 0
    assert learned["rmse"] < base["rmse"]
    assert "rk1-bespoke" in res.training_markdown()


def test_time_budget_stops_training(field, reference):
    cfg = SweepConfig(solvers=(), learned=("rk1-bespoke",), nfes=(2,), n_samples=50, n_projections=8,
                      train_iters=3000, train_seconds=0.05, train_n=64, device="cpu")
    res = sweep(field, cfg, reference)
    # 3000 iterations take seconds; the 0.05 s budget (GT included) ends training long before
    # (were the budget ignored, the run would reach 3000 and this would fail).
    assert res.rows[0]["train_iters"] < 3000


def test_valid_nfe_and_config_errors(field):
    assert valid_nfe(get_solver("rk4", field), 7) == 4
    assert valid_nfe(get_solver("rk4", field), 7, nearest=False) is None
    assert valid_nfe(get_solver("rk4", field), 3) is None
    with pytest.raises(ValueError, match="'rk3-bespoke'"):
        SweepConfig(learned=("rk3-bespoke",))
    with pytest.raises(ValueError, match="0"):
        SweepConfig(nfes=(4, 0))
    assert set(distance_metrics((1, 8, 8))) == {"fd"}


def _load_script(rel):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / rel
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_time_to_fraction():
    bench = _load_script("bench/bench_perf.py")
    hist = [{"elapsed": 0.0, "rmse": 1.0}, {"elapsed": 1.0}, {"elapsed": 2.0, "rmse": 0.5},
            {"elapsed": 3.0, "rmse": 0.14}, {"elapsed": 4.0, "rmse": 0.1}]
    assert bench.time_to_fraction(hist, "rmse", higher=False) == 3.0  # 0.86 >= 0.9 * 0.9 of the gain
    assert bench.time_to_fraction([{"elapsed": 0, "psnr": 20}, {"elapsed": 1, "psnr": 19}], "psnr", True) is None
    assert "| sample | m |" in bench.table([{"what": "sample", "model": "m", "value": 12345.0}])


def test_report_sentences_follow_the_numbers(result):
    mk = _load_script("scripts/make_report.py")
    text = mk.rmse_sentences(result)
    best8 = min((r for r in result.rows if r["nfe_target"] == 8), key=lambda r: r["rmse"])
    assert f"{mk._n(best8['solver'])} ({mk._v(best8['rmse'])}) at NFE 8" in text
    dist = mk.distance_sentences(result, "energy")
    assert f"{mk._v(result.gt['energy'])}" in dist
    assert mk.claims_markdown({"mix": result}).startswith("| claim (docs/MATH.md §5) | mix |")


def _row(solver, nfe, rmse, kind="builtin", psnr=None):
    return {"solver": solver, "kind": kind, "nfe_target": nfe, "nfe": nfe, "rmse": rmse, "psnr": psnr,
            "train_seconds": 1.0, "gt_seconds": 1.0}


def test_claim_verdicts_from_numbers():
    mk = _load_script("scripts/make_report.py")
    base = dict(model={"train_seconds": 100.0}, config={}, gt={"nfe": 90}, distances=())
    wide = SweepResult(rows=[_row("midpoint", 4, 0.3), _row("rk2-bespoke", 4, 0.1, "learned"),
                             _row("midpoint", 8, 0.1), _row("rk2-bespoke", 8, 0.04, "learned")], **base)
    verdicts = {c: v for c, v, _ in mk.claims(wide)}
    assert verdicts["RK2-Bespoke beats RK2 (midpoint) at equal NFE by a wide margin"] == "agrees"
    assert verdicts["RK2-Bespoke is consistent (error falls as NFE grows)"] == "agrees"
    assert verdicts["A learned solver costs about 1-4 % of the model's training time"] == "agrees"  # 2 %
    narrow = SweepResult(rows=[_row("midpoint", 4, 0.3), _row("rk2-bespoke", 4, 0.1, "learned"),
                               _row("midpoint", 8, 0.1), _row("rk2-bespoke", 8, 0.2, "learned")], **base)
    verdicts = {c: v for c, v, _ in mk.claims(narrow)}
    assert verdicts["RK2-Bespoke beats RK2 (midpoint) at equal NFE by a wide margin"] == "partly"
    assert verdicts["RK2-Bespoke is consistent (error falls as NFE grows)"] == "differs"
    md = mk.claims_markdown({"narrow": narrow})
    assert "| narrow | RK2-Bespoke beats RK2 (midpoint) at equal NFE by a wide margin | partly |" in md
    assert "Where we differ, and why" in md


def test_cli_evaluate_sweep_mode(tmp_path, capsys):
    from core.cli import main
    from core.model_io import save_model
    from core.models import build_network

    torch.manual_seed(0)
    net = build_network("time-mlp", dim=2, hidden=16, layers=2)
    header = {"arch": "time-mlp", "arch_args": {"dim": 2, "hidden": 16, "layers": 2}, "path": {"name": "fm-ot"},
              "prediction": "velocity", "data": {"name": "gaussians", "shape": [2], "range": 4.0},
              "conditioning": None, "seed": 0, "training": {"seconds": 100.0}}
    model = tmp_path / "tiny.safetensors"
    save_model(model, net, header)
    out = tmp_path / "eval"
    code = main(["evaluate", "--model", str(model), "--solver", "euler", "midpoint", "--nfe", "2", "4", "--n", "60",
                 "--device", "cpu", "--out-dir", str(out), "--plot", "svg", "--json", str(tmp_path / "s.json")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| midpoint |" in printed and "energy distance" in printed
    data = json.loads((tmp_path / "s.json").read_text())
    assert {(r["solver"], r["nfe"]) for r in data["rows"]} == {("euler", 2), ("euler", 4), ("midpoint", 2), ("midpoint", 4)}
    assert (out / "sweep.md").exists() and (out / "sweep_sw.svg").exists()
    # a user error in sweep mode is one line and exit status 2
    assert main(["evaluate", "--model", str(model), "--solver", "all", "--nfe", "4", "--train-learned", "rk9"]) == 2
    assert "rk9" in capsys.readouterr().err


def test_score_survives_non_finite_samples():
    from core.metrics import energy_distance
    from core.report import _score
    g = torch.Generator().manual_seed(3)
    gt = torch.randn(20, 2, generator=g)
    x = gt + 0.1
    x[0, 0] = float("nan")
    row = _score(x, gt, torch.randn(30, 2, generator=g).double(), {"energy": energy_distance},
                 2.0, {"energy": 0.5})
    assert row["rmse"] is None and row["non_finite"] == 1 and row["energy"] > 0 and "pct_energy" in row
    json.dumps(row, allow_nan=False)
