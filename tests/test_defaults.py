"""One source of truth for training defaults: core.train.TrainConfig / SolverSpec. The CLI, the
evaluate sweep, the app's Train page and the README all read them (or say nothing that can drift)."""
import os
import re

import pytest

from core.cli import build_parser
from core.report import SweepConfig
from core.train import SolverSpec, TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG, SPEC = TrainConfig(), SolverSpec()


def test_cli_train_solver_defaults_are_trainconfig():
    args = build_parser().parse_args(["train-solver", "--model", "m", "--solver", "bns", "--nfe", "8", "--out", "o"])
    assert (args.iters, args.lr, args.batch_size, args.n_train, args.n_val, args.seed) == \
        (CFG.iters, CFG.lr, CFG.batch_size, CFG.n_train, CFG.n_val, CFG.seed)
    assert (args.lipschitz, args.loss, args.init, args.sigma0) == (SPEC.lipschitz, SPEC.loss, SPEC.init, SPEC.sigma0)


def test_evaluate_sweep_defaults_are_trainconfig():
    args = build_parser().parse_args(["evaluate", "--model", "m", "--solver", "all"])
    assert (args.train_iters, args.train_n, args.train_batch) == (CFG.iters, CFG.n_train, CFG.batch_size)
    s = SweepConfig()
    assert (s.train_iters, s.train_n, s.train_batch) == (CFG.iters, CFG.n_train, CFG.batch_size)


def readme_iteration_numbers(text: str) -> list[str]:
    """Iteration counts the README gives as a command-line value or as "the default". Table rows
    and benchmark commands (bench/...) are left out: there a command records the budget a
    measurement ran with."""
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("|") and "bench/" not in line)
    pats = [r"--(?:train-)?iters\s+(\d+)", r"\biters\s*=\s*(\d+)",
            r"default[^.\n|]{0,25}?\b(\d+)\s+(?:Adam\s+)?iterations", r"\b(\d+)\s+(?:Adam\s+)?iterations\s*\(?the\s+default",
            r"iterations[^\n|]{0,60}?the default (\d+)"]
    return [m for p in pats for m in re.findall(p, text)]


def test_readme_states_no_iteration_default_that_can_drift():
    text = open(os.path.join(ROOT, "README.md")).read()
    found = readme_iteration_numbers(text)
    assert all(int(n) == CFG.iters for n in found), f"README numbers {found} vs TrainConfig.iters = {CFG.iters}"
    # The checker catches what it should.
    assert readme_iteration_numbers("--iters 400, TrainConfig(iters=300), with the default 600 iterations") == \
        ["400", "300", "600"]
    assert readme_iteration_numbers("(100 iterations; 2.0x at NFE 8 with the default 600)") == ["600"]
    assert readme_iteration_numbers("| `train-solver --iters 100` | 6.7 s |") == []
    assert readme_iteration_numbers("(`python bench/bench_scale.py memory --iters 3`: ...)") == []


def test_app_train_page_defaults_are_trainconfig():
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(os.path.join(ROOT, "streamlit_app.py"), default_timeout=180).run()
    at.switch_page("pages/train.py").run()
    assert not at.exception, at.exception
    want = {"train.iters": CFG.iters, "train.lr": CFG.lr, "train.batch": CFG.batch_size, "train.n_train": CFG.n_train,
            "train.n_val": CFG.n_val, "train.val_every": CFG.val_every, "train.seed": CFG.seed, "train.nfe": SPEC.nfe,
            "train.lipschitz": SPEC.lipschitz}
    got = {k: at.number_input(key=k).value for k in want}
    assert got == pytest.approx(want)
    assert at.selectbox(key="train.family").value == SPEC.family
