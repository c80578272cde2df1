"""The MLServer peer: a custom runtime serving the ONNX file over the v2 protocol, decoding and
encoding tensors with MLServer's own NumPy codec, as MLServer's documentation shows for custom
runtimes. ``bench.py`` writes ``settings.json`` and ``model-settings.json`` beside a copy of it."""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("PEER_THREADS", "1"))
        self.session = ort.InferenceSession(Path(os.environ["PEER_MODEL"]).read_bytes(), options,
                                            providers=["CPUExecutionProvider"])  # fmt: skip
        self.input = self.session.get_inputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        matrix = NumpyCodec.decode_input(payload.inputs[0]).astype("float32")
        labels, probabilities = self.session.run(None, {self.input: matrix})
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output("label", labels),
                NumpyCodec.encode_output("probabilities", probabilities),
            ],
        )
