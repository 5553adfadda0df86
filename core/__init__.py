"""Bespoke Explorer core library: Gaussian paths, solvers (classical, dedicated, ground truth,
learned Bespoke and BNS), losses, training, metrics, models and checkpoints. Never imports
streamlit."""
