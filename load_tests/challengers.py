"""Challengers for the benchmark's shadow-mode targets, set up in a copy of the demo registry.

- ``shadowing(registry)``: the demo's own challenger, mirrored (the "everything
  on" target).
- ``slowed(registry, width)``: the demo champion with an input-dependent dense
  branch added (two ``width``-wide layers whose result, times zero, is added
  to the probabilities): the same answers, as slow as ``width`` makes it.
- ``hung(registry)``: the champion after a loop of ~1e12 steps on any row
  outside its training data, so it pushes and warms up as usual and hangs
  on every mirrored request (held-out rows) until the shadow timeout.
- ``raising(registry)``: the champion plus a lookup that ONNX Runtime
  refuses (index out of bounds) on any row outside its training data.
- ``failing(registry)``: a model trained without one of the features, so
  every request the gateway mirrors to it fails validation against its
  schema, in the shadow thread.

The bad ones are pushed as version 3 and made the challenger; the routing is
set to shadow. ``inference_ms`` times a version on one row in-process, to report
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
from registry.manifest import Manifest
from registry.store import Registry


def shadowing(registry: Registry) -> None:
    """Not a bad one: the demo's own challenger (gradient boosting), mirrored in shadow mode."""
    registry.set_routing(DEMO_MODEL, RoutingPolicy(mode="shadow"), reason="bench", actor="bench")


def slowed(registry: Registry, width: int) -> None:
    """The champion plus a dense branch of ``width`` units that changes no answer."""
    features = breast_cancer()[0].shape[1]
    rng = np.random.default_rng(0)
    branched = _branched(
        registry,
        [numpy_helper.from_array(rng.normal(size=(features, width)).astype(np.float32), "slow_w1"),
         numpy_helper.from_array(rng.normal(size=(width, width)).astype(np.float32) / width, "slow_w2")],
        [helper.make_node("MatMul", [INPUT, "slow_w1"], ["slow_h1"]),
         helper.make_node("Relu", ["slow_h1"], ["slow_r1"]),
         helper.make_node("MatMul", ["slow_r1", "slow_w2"], ["slow_h2"]),
         helper.make_node("ReduceMax", ["slow_h2"], ["slow_top"], axes=[1], keepdims=1),  # opset 17
         helper.make_node("Mul", ["slow_top", "branch_zero"], [NOTHING])],
    )  # fmt: skip
    _push(registry, branched, f"the champion slowed by a {width}-wide dense branch")


def hung(registry: Registry) -> None:
    """The champion, after a loop of about 1e12 empty steps on any row outside its training data:
    it pushes and warms up (on training rows) at the champion's speed, and hangs on live traffic."""
    _push(registry, hung_model(registry), "the champion, hung on rows outside its training data")


def hung_model(registry: Registry) -> bytes:
    """The ONNX file ``hung`` pushes."""
    initializers, nodes = _unseen(scale=1e12)
    return _branched(
        registry,
        initializers,
        [*nodes, helper.make_node("Loop", ["unseen_count", "", "branch_zero"], [NOTHING], body=_EMPTY_STEP)],
    )


def raising(registry: Registry) -> None:
    """The champion plus a lookup out of bounds on any row outside its training data: ONNX Runtime
    raises on live traffic, after the model pushed and warmed up (on training rows) as usual."""
    _push(registry, raising_model(registry), "the champion, raising on rows outside its training data")


def raising_model(registry: Registry) -> bytes:
    """The ONNX file ``raising`` pushes."""
    initializers, nodes = _unseen(scale=1e6)
    return _branched(
        registry,
        initializers,
        [*nodes, helper.make_node("Gather", ["branch_zero", "unseen_count"], [NOTHING], axis=0)],
    )


#: the champion's input, and what a branch computes: a zero added to the probabilities, so the
#: answers stay the champion's
INPUT, NOTHING = "X", "branch_nothing"

#: a Loop body that carries its one value through unchanged
_EMPTY_STEP = helper.make_graph(
    [helper.make_node("Identity", ["going"], ["still_going"]),
     helper.make_node("Identity", ["carried"], ["carried_on"])],
    "empty_step",
    [helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
     helper.make_tensor_value_info("going", onnx.TensorProto.BOOL, []),
     helper.make_tensor_value_info("carried", onnx.TensorProto.FLOAT, [1])],
    [helper.make_tensor_value_info("still_going", onnx.TensorProto.BOOL, []),
     helper.make_tensor_value_info("carried_on", onnx.TensorProto.FLOAT, [1])],
)  # fmt: skip


def _unseen(scale: float) -> tuple[list[onnx.TensorProto], list[onnx.NodeProto]]:
    """``unseen_count`` (INT64): ``scale`` times how far (L1, less a tolerance of 1e-3, at least 0)
    the batch's farthest row lies from the nearest training row; 0 when all its rows are training
    rows (the reference, the warm-up sample), large on held-out rows."""
    x_train = breast_cancer()[0].to_numpy(dtype=np.float32)
    return (
        [numpy_helper.from_array(np.array([1], dtype=np.int64), "unseen_axis"),
         numpy_helper.from_array(x_train, "unseen_training"),
         numpy_helper.from_array(np.array(1e-3, dtype=np.float32), "unseen_tolerance"),
         numpy_helper.from_array(np.array(scale, dtype=np.float32), "unseen_scale")],
        [helper.make_node("Unsqueeze", [INPUT, "unseen_axis"], ["unseen_rows"]),
         helper.make_node("Sub", ["unseen_rows", "unseen_training"], ["unseen_offsets"]),
         helper.make_node("ReduceL1", ["unseen_offsets"], ["unseen_distances"], axes=[2], keepdims=0),
         helper.make_node("ReduceMin", ["unseen_distances"], ["unseen_nearest"], axes=[1], keepdims=0),
         helper.make_node("ReduceMax", ["unseen_nearest"], ["unseen_farthest"], keepdims=0),
         helper.make_node("Sub", ["unseen_farthest", "unseen_tolerance"], ["unseen_beyond"]),
         helper.make_node("Relu", ["unseen_beyond"], ["unseen"]),
         helper.make_node("Mul", ["unseen", "unseen_scale"], ["unseen_scaled"]),
         helper.make_node("Cast", ["unseen_scaled"], ["unseen_count"], to=onnx.TensorProto.INT64)],
    )  # fmt: skip


def champion(registry: Registry) -> tuple[Manifest, bytes]:
    """The demo champion's manifest and ONNX file."""
    return registry.read_model(DEMO_MODEL, registry.resolve(DEMO_MODEL))


def _branched(registry: Registry, initializers: list[onnx.TensorProto], nodes: list[onnx.NodeProto]) -> bytes:
    """The champion with a branch added (it reads ``INPUT``, writes ``NOTHING``)."""
    manifest, data = champion(registry)
    model = onnx.load_from_string(data)
    graph = model.graph
    assert graph.input[0].name == INPUT
    probabilities = manifest.output.probability_output
    assert probabilities is not None
    for node in graph.node:  # the champion's probabilities now come out under another name
        node.output[:] = [f"{o}_unchanged" if o == probabilities else o for o in node.output]
    graph.initializer.extend(
        [*initializers, numpy_helper.from_array(np.zeros(1, dtype=np.float32), "branch_zero")]
    )
    graph.node.extend(
        [*nodes, helper.make_node("Add", [f"{probabilities}_unchanged", NOTHING], [probabilities])]
    )
    return model.SerializeToString()


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
        # no reference attributions: explaining runs a model on rows mixing reference values,
        # which the hung and raising challengers hang or fail on by design
        manifest = registry.push(
            model_file, DEMO_MODEL, reference_file, description=description, actor="bench", attributions=False
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
