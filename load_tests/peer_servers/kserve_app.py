"""The KServe peer: a ``kserve.Model`` serving the ONNX file on KServe's model server (one worker),
answering the v1 protocol (``POST /v1/models/bare:predict`` with ``instances``) with labels, as
KServe's scikit-learn server does.

    PEER_MODEL=model.onnx PEER_THREADS=2 python kserve_app.py --http_port 3000
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kserve
import numpy as np
import onnxruntime as ort


class Bare(kserve.Model):
    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("PEER_THREADS", "1"))
        self.session = ort.InferenceSession(Path(os.environ["PEER_MODEL"]).read_bytes(), options,
                                            providers=["CPUExecutionProvider"])  # fmt: skip
        self.input = self.session.get_inputs()[0].name
        self.ready = True
        return self.ready

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        matrix = np.asarray(payload["instances"], dtype=np.float32)
        labels, _ = self.session.run(None, {self.input: matrix})
        return {"predictions": labels.tolist()}


if __name__ == "__main__":
    model = Bare("bare")
    model.load()
    kserve.ModelServer(workers=1, enable_docs_url=False).start([model])
