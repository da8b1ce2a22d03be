"""Plotting functions used by the notebooks (one module per topic)."""
