"""Logging, and later the prediction log, drift, plausibility, metrics and alerts.

Plain Python: never imports ``service`` or BentoML.
"""
