"""Bad challengers for the shadow-mode benchmark, pushed to a copy of the demo registry.

- ``slowed(registry, width)``: the demo champion with an input-dependent dense
  branch added (two ``width``-wide layers whose result, times zero, is added
  to the probabilities): the same answers, as slow as ``width`` makes it.
- ``failing(registry)``: a model trained without one of the features, so
  every request the gateway mirrors to it fails validation against its
  schema, in the shadow thread.

Each is pushed as version 3 and made the challenger; the routing is set to
shadow. ``inference_ms`` times a version on one row in-process, to report
how much slower a challenger really is.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from onnx import helper, numpy_helper
from sklearn.linear_model import LogisticRegression

from registry.aliases import RoutingPolicy
from registry.demo import DEMO_MODEL, breast_cancer, to_onnx
from registry.store import Registry


def slowed(registry: Registry, width: int) -> None:
    """The champion plus a dense branch of ``width`` units that changes no answer."""
    manifest, data = registry.read_model(DEMO_MODEL, registry.resolve(DEMO_MODEL))
    model = onnx.load_from_string(data)
    graph = model.graph
    probabilities = manifest.output.probability_output
    assert probabilities is not None
    for node in graph.node:  # the champion's probabilities now come out under another name
        node.output[:] = [f"{o}_unslowed" if o == probabilities else o for o in node.output]
    features = graph.input[0].type.tensor_type.shape.dim[1].dim_value
    rng = np.random.default_rng(0)
    graph.initializer.extend([
        numpy_helper.from_array(rng.normal(size=(features, width)).astype(np.float32), "slow_w1"),
        numpy_helper.from_array(rng.normal(size=(width, width)).astype(np.float32) / width, "slow_w2"),
        numpy_helper.from_array(np.zeros(1, dtype=np.float32), "slow_zero"),
    ])  # fmt: skip
    graph.node.extend([
        helper.make_node("MatMul", [graph.input[0].name, "slow_w1"], ["slow_h1"]),
        helper.make_node("Relu", ["slow_h1"], ["slow_r1"]),
        helper.make_node("MatMul", ["slow_r1", "slow_w2"], ["slow_h2"]),
        helper.make_node("ReduceMax", ["slow_h2"], ["slow_sum"], axes=[1], keepdims=1),  # opset 17
        helper.make_node("Mul", ["slow_sum", "slow_zero"], ["slow_nothing"]),
        helper.make_node("Add", [f"{probabilities}_unslowed", "slow_nothing"], [probabilities]),
    ])  # fmt: skip
    _push(registry, model.SerializeToString(), f"the champion slowed by a {width}-wide dense branch")


def failing(registry: Registry) -> None:
    """A model that does not take one of the features the traffic sends."""
    x_train, _, y_train, _ = breast_cancer()
    reduced = x_train.drop(columns=[x_train.columns[-1]])
    estimator = LogisticRegression(max_iter=5000).fit(reduced.to_numpy(dtype=np.float32), y_train)
    _push(registry, to_onnx(estimator, reduced), "trained without one feature", reduced)


def _push(
    registry: Registry, onnx_bytes: bytes, description: str, reference: pd.DataFrame | None = None
) -> None:
    x_train, _, _, _ = breast_cancer()
    with tempfile.TemporaryDirectory() as tmp:
        model_file, reference_file = Path(tmp) / "model.onnx", Path(tmp) / "reference.csv"
        model_file.write_bytes(onnx_bytes)
        (x_train if reference is None else reference).to_csv(reference_file, index=False)
        manifest = registry.push(
            model_file, DEMO_MODEL, reference_file, description=description, actor="bench"
        )
    registry.promote(DEMO_MODEL, manifest.version, "challenger", reason=description, actor="bench")
    registry.set_routing(DEMO_MODEL, RoutingPolicy(mode="shadow"), reason="bench", actor="bench")


def inference_ms(registry: Registry, version: int, runs: int = 300) -> float:
    """Median milliseconds of one single-row run of a version's ONNX session, in this process."""
    _, data = registry.read_model(DEMO_MODEL, version)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    width = session.get_inputs()[0].shape[1]
    row = np.zeros((1, width), dtype=np.float32)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {name: row})
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)
