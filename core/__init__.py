"""Bespoke Explorer core library: Gaussian paths, solvers (classical, dedicated, ground truth,
learned Bespoke and BNS), losses, training, metrics, models and checkpoints. Never imports
streamlit."""
from .model_io import load_model  # noqa: E402,F401  (core.load_model(path) -> VelocityField)
