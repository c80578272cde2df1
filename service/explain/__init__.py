"""Explanations of predictions: per-feature attributions of a served version's outputs."""
