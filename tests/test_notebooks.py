"""The lesson notebooks (docs/notebooks/) are executed by the test command itself (nbmake,
configured in pytest.ini); here: they are stored without outputs, so nothing stale can disagree
with the code, and every one of them is collected."""
import json
from pathlib import Path

import pytest

NB_DIR = Path(__file__).resolve().parents[1] / "docs" / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))


def test_notebooks_exist():
    names = [p.name for p in NOTEBOOKS]
    assert len(names) >= 3, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_no_stored_outputs(path):
    nb = json.loads(path.read_text())
    for k, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        assert cell.get("outputs", []) == [], f"{path.name} cell {k} stores outputs: clear them before committing"
        assert cell.get("execution_count") is None, f"{path.name} cell {k} stores an execution count"


def test_pytest_runs_the_notebooks():
    ini = (NB_DIR.parents[1] / "pytest.ini").read_text()
    assert "--nbmake" in ini and "docs/notebooks" in ini
