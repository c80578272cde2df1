"""An ONNX model as the gateway sees it: a session, its input schema, and decoded predictions."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from registry.errors import InvalidModel
from registry.manifest import FeatureDType, InputSchema, OutputSpec
from registry.prediction import Prediction

#: ONNX tensor element types the gateway feeds, mapped to our feature dtypes.
ONNX_TO_DTYPE: dict[str, FeatureDType] = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(string)": "string",
}


@dataclass(frozen=True)
class GraphInput:
    name: str
    dtype: FeatureDType
    shape: tuple[int | str | None, ...]


def threads_per_worker(workers: int) -> int:
    """The machine's cores shared out among ``workers`` processes, at least one each."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def session_options(intra_op_threads: int) -> ort.SessionOptions:
    """Options for a server: a fixed, small thread pool and no busy-waiting.

    Several gateway workers share the machine's cores; ONNX Runtime's default
    (one spinning thread per core, per session) would oversubscribe them and
    burn CPU that the HTTP stack needs.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


#: where sessions run unless told otherwise
CPU = ("CPUExecutionProvider",)


def check_providers(providers: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming what this ONNX Runtime build offers when one of ``providers`` is
    not among them (CUDA needs the onnxruntime-gpu build and a GPU)."""
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if not providers or missing:
        raise ValueError(
            f"execution providers {', '.join(missing) or '(none)'} not available in this ONNX Runtime "
            f"build ({ort.__version__}); available: {', '.join(available)}"
        )


def load_session(
    model_bytes: bytes, intra_op_threads: int, providers: tuple[str, ...] = CPU
) -> ort.InferenceSession:
    """An ONNX Runtime session on ``providers`` (in order of preference; the CPU by default), or
    :class:`InvalidModel` saying why it does not load."""
    try:
        return ort.InferenceSession(
            model_bytes, sess_options=session_options(intra_op_threads), providers=list(providers)
        )
    except Exception as exc:  # ORT raises several unrelated types for bad files
        raise InvalidModel(f"the file does not load in ONNX Runtime: {exc}") from exc


def graph_inputs(session: ort.InferenceSession) -> list[GraphInput]:
    inputs = []
    for node in session.get_inputs():
        dtype = ONNX_TO_DTYPE.get(node.type)
        if dtype is None:
            supported = ", ".join(ONNX_TO_DTYPE)
            raise InvalidModel(f"input {node.name!r} has type {node.type}; supported: {supported}")
        inputs.append(GraphInput(node.name, dtype, tuple(node.shape)))
    return inputs


def class_labels(model_bytes: bytes) -> tuple[str, ...] | None:
    """Class labels declared by the graph's ai.onnx.ml classifier or ZipMap node, in order."""
    graph = onnx.load_from_string(model_bytes).graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.name == "classlabels_strings" and attribute.strings:
                return tuple(s.decode() for s in attribute.strings)
            if attribute.name in ("classlabels_int64s", "classlabels_ints") and attribute.ints:
                return tuple(str(i) for i in attribute.ints)
    return None


def output_spec(session: ort.InferenceSession, model_bytes: bytes) -> OutputSpec:
    """Tell a classifier (label + probabilities) from a regressor (one numeric value per row)."""
    outputs = session.get_outputs()
    probability = next(
        (
            o
            for o in outputs
            if o.type.startswith("seq(map(")
            or (o.type in ("tensor(float)", "tensor(double)") and len(o.shape) == 2 and o.shape[1] != 1)
        ),
        None,
    )
    if probability is not None:
        label = next(
            (
                o
                for o in outputs
                if o.type in ("tensor(int64)", "tensor(string)") and o.name != probability.name
            ),
            None,
        )
        classes = class_labels(model_bytes)
        if classes is None:
            raise InvalidModel(
                "the model outputs class probabilities but declares no class labels "
                "(no classifier or ZipMap node with classlabels_*)"
            )
        return OutputSpec(
            kind="classification",
            classes=classes,
            label_output=label.name if label is not None else None,
            probability_output=probability.name,
            probabilities_as_map=probability.type.startswith("seq(map("),
        )
    numeric = [o for o in outputs if o.type in ("tensor(float)", "tensor(double)")]
    if len(numeric) == 1:
        return OutputSpec(kind="regression", value_output=numeric[0].name)
    described = ", ".join(f"{o.name}: {o.type} {o.shape}" for o in outputs)
    raise InvalidModel(
        "cannot tell the output kind: expected class probabilities (a 2-D float tensor "
        f"or ZipMap) or exactly one numeric output for a regressor; got {described}"
    )


def tensor_output_spec(
    session: ort.InferenceSession, model_bytes: bytes, classes: tuple[str, ...], sample: dict[str, Any]
) -> OutputSpec:
    """A tensor model's output: as :func:`output_spec` says; or, for one 2-D float output and no
    declared class labels, class probabilities when the model's answers on ``sample`` (reference
    feeds) look like them (each in [0, 1], rows summing to 1: a softmax), classes named by
    ``classes`` or by index; else an embedding (one vector a sample)."""
    try:
        found = output_spec(session, model_bytes)
    except InvalidModel:
        found = None
    if found is not None:
        return found
    floats = [
        o for o in session.get_outputs() if o.type in ("tensor(float)", "tensor(double)", "tensor(float16)")
    ]
    if len(floats) != 1 or len(floats[0].shape) != 2:
        described = ", ".join(f"{o.name}: {o.type} {o.shape}" for o in session.get_outputs())
        raise InvalidModel(
            "cannot tell the output kind: a tensor model answers class probabilities or an embedding, "
            f"one 2-D float output [N, K]; got {described}"
        )
    output = floats[0]
    answers = np.asarray(session.run([output.name], sample)[0], dtype=np.float64)
    width = answers.shape[1]
    softmax = bool(
        np.isfinite(answers).all()
        and answers.min() >= 0
        and answers.max() <= 1
        and np.allclose(answers.sum(axis=1), 1, atol=1e-3)
    )
    if softmax:
        names = classes or tuple(str(i) for i in range(width))
        if len(names) != width:
            raise InvalidModel(
                f"{len(names)} classes given for {width} probability columns of {output.name!r}"
            )
        return OutputSpec(kind="classification", classes=names, probability_output=output.name)
    if classes:
        raise InvalidModel(
            f"classes given, but {output.name!r} does not answer probabilities on the reference (values "
            "outside [0, 1] or rows not summing to 1): export the classifier with its softmax"
        )
    return OutputSpec(kind="embedding", value_output=output.name, embedding_dim=width)


class OnnxModel:
    """A loaded session bound to its input schema and output spec; thread-safe for ``predict``."""

    def __init__(self, session: ort.InferenceSession, schema: InputSchema, output: OutputSpec) -> None:
        self.session = session
        self.schema = schema
        self.output = output
        self._graph_inputs = {i.name: i for i in graph_inputs(session)} if schema.layout == "columns" else {}
        self._output_names = [
            name
            for name in (output.label_output, output.probability_output, output.value_output)
            if name is not None
        ]

    def feeds(
        self,
        columns: dict[str, np.ndarray] | None,
        matrix: np.ndarray | None,
        tensors: dict[str, np.ndarray] | None = None,
    ) -> dict[str, Any]:
        """ONNX feeds from validated data: a matrix for ``matrix`` layout, the arrays themselves for
        ``tensor`` layout, else one array a feature."""
        if self.schema.layout == "tensor":
            assert tensors is not None
            return tensors
        if self.schema.layout == "matrix":
            assert matrix is not None and self.schema.tensor_name is not None
            return {self.schema.tensor_name: matrix}
        assert columns is not None
        feeds = {}
        for name, column in columns.items():
            rank = len(self._graph_inputs[name].shape)
            feeds[name] = column.reshape(-1, 1) if rank == 2 else column
        return feeds

    def predict(self, feeds: dict[str, Any], options: ort.RunOptions | None = None) -> Prediction:
        """``options``: ONNX Runtime's run options, e.g. one whose terminate flag another thread may set."""
        outputs = self.session.run(self._output_names, feeds, options)
        raw = dict(zip(self._output_names, outputs, strict=True))
        output = self.output
        if output.kind == "embedding":
            assert output.value_output is not None
            embeddings = np.asarray(raw[output.value_output])
            return Prediction(embeddings=embeddings.reshape(embeddings.shape[0], -1))
        if output.kind == "regression":
            assert output.value_output is not None
            return Prediction(values=np.asarray(raw[output.value_output], dtype=np.float64).reshape(-1))
        assert output.probability_output is not None
        probs = raw[output.probability_output]
        if output.probabilities_as_map:
            keys = list(probs[0].keys()) if len(probs) else []
            probs = np.array([[row[k] for k in keys] for row in probs], dtype=np.float64)
        probabilities = np.asarray(probs, dtype=np.float64).reshape(-1, len(output.classes))
        if output.label_output is not None:
            labels = np.asarray(raw[output.label_output]).reshape(-1)
        else:
            labels = np.asarray(output.classes, dtype=object)[probabilities.argmax(axis=1)]
        return Prediction(labels=labels, probabilities=probabilities)
