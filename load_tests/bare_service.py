"""The baseline of the benchmark: a bare BentoML service serving one ONNX model, nothing else.

What a team would write without a gateway: one ``@bentoml.api`` taking the same
``/predict`` body as the gateway (``{"model": ..., "inputs": [{feature: value}, ...]}``),
one ONNX Runtime session, labels and probabilities back. No validation beyond
BentoML's own, no logging, no monitoring, access log off (the gateway's is off
too). ``bench.py`` starts it with::

    BARE_MODEL=model.onnx BARE_FEATURES=a,b,c BARE_WORKERS=1 BARE_THREADS=1 \
        bentoml serve load_tests.bare_service:Bare --port 3000

``BARE_THREADS``: the session's intra-op threads, as the gateway's sessions get.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import onnxruntime as ort


@bentoml.service(
    name="bare",
    workers=int(os.environ.get("BARE_WORKERS", "1")),
    traffic={"timeout": 60},
    logging={"access": {"enabled": False}},
)
class Bare:
    def __init__(self) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("BARE_THREADS", "1"))
        self.session = ort.InferenceSession(
            Path(os.environ["BARE_MODEL"]).read_bytes(), options, providers=["CPUExecutionProvider"]
        )
        self.input = self.session.get_inputs()[0].name
        self.features = os.environ["BARE_FEATURES"].split(",")

    @bentoml.api
    async def predict(self, model: str, inputs: list[dict[str, float]]) -> dict[str, Any]:
        matrix = np.array([[row[f] for f in self.features] for row in inputs], dtype=np.float32)
        labels, probabilities = self.session.run(None, {self.input: matrix})
        outputs = {"label": labels.tolist(), "probabilities": probabilities.tolist()}
        return {"model": model, "outputs": outputs}
