"""The hand-written peer: FastAPI on uvicorn (uvloop + httptools), one ONNX Runtime session, the v2
JSON infer route and nothing else: no validation beyond the tensor's shape, no logging, no
monitoring. What a team would write in an afternoon; the floor of a Python HTTP server.

    PEER_MODEL=model.onnx PEER_THREADS=2 python fastapi_app.py --port 3000
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

options = ort.SessionOptions()
options.intra_op_num_threads = int(os.environ.get("PEER_THREADS", "1"))
session = ort.InferenceSession(Path(os.environ["PEER_MODEL"]).read_bytes(), options,
                               providers=["CPUExecutionProvider"])  # fmt: skip
INPUT = session.get_inputs()[0].name
app = FastAPI()


@app.get("/v2/health/ready")
async def ready() -> Response:
    return Response(status_code=200)


@app.post("/v2/models/{name}/infer")
async def infer(name: str, request: Request) -> Response:
    tensor = orjson.loads(await request.body())["inputs"][0]
    matrix = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    labels, probabilities = session.run(None, {INPUT: matrix})
    answer = orjson.dumps({
        "model_name": name,
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [len(labels)], "data": labels.tolist()},
            {"name": "probabilities", "datatype": "FP64", "shape": list(probabilities.shape),
             "data": probabilities.ravel().tolist()},
        ],
    })  # fmt: skip
    return Response(answer, media_type="application/json")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=3000)
    port = parser.parse_args().port
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", access_log=False,
                log_level="warning")  # fmt: skip
