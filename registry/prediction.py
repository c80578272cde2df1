"""A model's decoded outputs for a batch: a plain value type, readable without ONNX Runtime (the log
writer and the monitor read predictions; only the serving process runs models)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """Decoded outputs for a batch: ``labels`` + ``probabilities`` (N x classes), ``values``, or
    ``embeddings`` (N x dim)."""

    labels: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    values: np.ndarray | None = None
    embeddings: np.ndarray | None = None

    @property
    def rows(self) -> int:
        first = next(a for a in (self.values, self.probabilities, self.embeddings) if a is not None)
        return int(first.shape[0])

    @property
    def outputs(self) -> dict[str, np.ndarray]:
        """The outputs set, by the names the log, the v2 answer and the reference profile give them:
        ``label`` and ``probabilities``, ``value``, or ``embedding``."""
        if self.values is not None:
            return {"value": self.values}
        if self.embeddings is not None:
            return {"embedding": self.embeddings}
        assert self.labels is not None and self.probabilities is not None
        return {"label": self.labels, "probabilities": self.probabilities}

    @property
    def answer(self) -> tuple[str, np.ndarray]:
        """One answer a row, by its output's name: the label, the value or the embedding."""
        name, array = next(iter(self.outputs.items()))
        return name, array
