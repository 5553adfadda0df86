"""pytest (with the nbmake plugin) executes the notebooks in this folder top to bottom.

Under the test suite they run the reduced budget (BESPOKE_NOTEBOOK_BUDGET=small, well under a
minute each on CPU); opened in Jupyter they run the full budget written in each cell. The kernel
inherits this environment, so setting the variable here is enough."""
import os

os.environ.setdefault("BESPOKE_NOTEBOOK_BUDGET", "small")
