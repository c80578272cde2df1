"""What the gateway learns from its traffic: the prediction log and its stores, drift, plausibility,
live and estimated quality, evaluation before promotion, sequential evidence for the canary and the
promotion gate, metrics, alerts and retraining triggers.

Plain Python: never imports ``service`` or BentoML.
"""
