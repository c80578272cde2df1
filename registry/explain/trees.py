"""Tree ensembles read from an ONNX graph, in the form shap's ``TreeExplainer`` takes.

skl2onnx, onnxmltools and hummingbird write scikit-learn's, LightGBM's and XGBoost's tree models as
one ``ai.onnx.ml`` ``TreeEnsembleClassifier`` or ``TreeEnsembleRegressor`` node: flat lists of
nodes (tree, node id, feature, threshold, mode, true and false child) and of leaf weights per
output. shap computes exact TreeSHAP over its own dictionary of trees (children, features,
thresholds, values and covers per node) but cannot read ONNX (shap#638); this is the reading.

Two things the graph does not hold are filled in here:

- **covers** (how many training rows reach each node), which path-dependent TreeSHAP weighs the
  branches a feature left out would take by: counted by passing the version's reference sample
  through each tree. A node no reference row reaches gets a vanishing cover split evenly below it,
  so the counts stay additive and no ratio divides by zero.
- **the margin**: the ensemble's raw sum (plus ``base_values``) before its ``post_transform``
  (LOGISTIC for a binary gradient-boosting model, SOFTMAX for a multi-class one); TreeSHAP is exact
  and additive in that space.

A tree ensemble is explainable only when it reads the model's own features: its input must be the
graph's feature matrix (or a ``Concat`` of the per-feature inputs), through nothing but ``Cast``
and ``Identity``. Otherwise (a scaler or an encoder before the trees) ``read_trees`` says why, and
the model is explained by sampling instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from registry.manifest import InputSchema, OutputSpec

ML_DOMAIN = "ai.onnx.ml"
TREE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")
#: nodes a tree's input may pass through from the graph's input and still be the model's features
PASS_THROUGH = ("Cast", "Identity")
#: a node no reference row reaches shares this cover with its sibling subtree (see module doc)
UNREACHED_COVER = 1e-9
#: post-transforms whose margin the ensemble's raw sum is
TRANSFORMS = ("NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO")


@dataclass(frozen=True)
class Trees:
    """An ensemble as shap's ``TreeExplainer`` takes it (``shap_model``), with what it means."""

    #: one dict a tree: children_left/right/default, features, thresholds, values, node_sample_weight
    trees: list[dict[str, np.ndarray]]
    #: added to the trees' sum, one a score column
    base_offset: np.ndarray
    #: the node's ``post_transform``: what turns the margin into the model's output
    post_transform: str
    #: a binary classifier scored by one column (the second class's margin; the first's is its
    #: negation), as ONNX Runtime reads a classifier with two labels and one class id
    single_score: bool

    @property
    def scores(self) -> int:
        return int(self.base_offset.size)

    def shap_model(self, tree_output: str = "raw_value") -> dict[str, Any]:
        return {
            "trees": self.trees,
            "base_offset": self.base_offset if self.scores > 1 else float(self.base_offset[0]),
            "tree_output": tree_output,
            "input_dtype": np.float32,
            "internal_dtype": np.float64,
        }


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        if isinstance(value, onnx.TensorProto):
            value = onnx.numpy_helper.to_array(value)
        values[attribute.name] = value
    return values


def _feature_columns(graph: onnx.GraphProto, name: str, schema: InputSchema) -> list[int] | str:
    """The model feature (index in ``schema.features``) of each column of the tree node's input
    ``name``, or why it is not the model's features."""
    producers = {output: node for node in graph.node for output in node.output}
    names = schema.names

    def source(tensor: str) -> str | None:
        while tensor in producers and producers[tensor].op_type in PASS_THROUGH:
            tensor = producers[tensor].input[0]
        return None if tensor in producers else tensor

    origin = source(name)
    if origin is not None and schema.layout == "matrix" and origin == schema.tensor_name:
        return list(range(len(names)))
    producer = producers.get(name)
    while producer is not None and producer.op_type in PASS_THROUGH:
        producer = producers.get(producer.input[0])
    if schema.layout == "columns" and producer is not None and producer.op_type == "Concat":
        columns = [source(part) for part in producer.input]
        if all(column in names for column in columns):
            return [names.index(str(column)) for column in columns]
    what = producer.op_type if producer is not None else f"input {origin!r}"
    return (
        f"the tree ensemble reads {what}, not the model's features directly (preprocessing in the "
        "graph); its attributions would be of that node's inputs"
    )


def read_trees(model_bytes: bytes, schema: InputSchema, output: OutputSpec) -> Trees | str:
    """The graph's tree ensemble without covers (see ``with_covers``), or why it has none TreeSHAP
    can explain."""
    if schema.layout == "tensor":
        return "a tensor model has no tabular features to attribute to"
    graph = onnx.load_from_string(model_bytes).graph
    nodes = [n for n in graph.node if n.op_type in TREE_OPS and n.domain == ML_DOMAIN]
    if len(nodes) != 1:
        return "the graph has no tree ensemble node" if not nodes else "the graph has several tree ensembles"
    node = nodes[0]
    columns = _feature_columns(graph, node.input[0], schema)
    if isinstance(columns, str):
        return columns
    attrs = _attributes(node)
    transform = attrs.get("post_transform", b"NONE")
    transform = transform.decode() if isinstance(transform, bytes) else str(transform)
    if transform not in TRANSFORMS:
        return f"post_transform {transform} has no margin TreeSHAP is additive in"
    aggregate = attrs.get("aggregate_function", b"SUM")
    aggregate = aggregate.decode() if isinstance(aggregate, bytes) else str(aggregate)
    if aggregate not in ("SUM", "AVERAGE"):
        return f"aggregate_function {aggregate} is not a sum of trees"
    prefix = "class" if node.op_type == "TreeEnsembleClassifier" else "target"
    weights = np.asarray(attrs.get(f"{prefix}_weights", attrs.get(f"{prefix}_weights_as_tensor", [])))
    ids = np.asarray(attrs[f"{prefix}_ids"], dtype=np.int64)
    if node.op_type == "TreeEnsembleClassifier":
        labels = attrs.get("classlabels_strings") or attrs.get("classlabels_int64s") or []
        single_score = len(labels) == 2 and set(ids.tolist()) == {0}
        scores = 1 if single_score else len(labels)
        if not single_score and len(labels) != len(output.classes):
            return "the tree ensemble's classes are not the model's output columns"
    else:
        single_score, scores = False, int(attrs.get("n_targets", 1))
    base = np.asarray(attrs.get("base_values", attrs.get("base_values_as_tensor", [])), dtype=np.float64)
    base_offset = base if base.size == scores else np.zeros(scores)
    leaves = (np.asarray(attrs[f"{prefix}_treeids"]), np.asarray(attrs[f"{prefix}_nodeids"]), ids, weights)
    trees = _trees(attrs, columns, leaves, scores)
    if isinstance(trees, str):
        return trees
    if aggregate == "AVERAGE":
        for tree in trees:
            tree["values"] = tree["values"] / len(trees)
    return Trees(trees, base_offset, transform, single_score)


def _trees(
    attrs: dict[str, Any], columns: list[int], leaves: tuple[np.ndarray, ...], scores: int
) -> list[dict[str, np.ndarray]] | str:
    tree_ids = np.asarray(attrs["nodes_treeids"], dtype=np.int64)
    node_ids = np.asarray(attrs["nodes_nodeids"], dtype=np.int64)
    features = np.asarray(attrs["nodes_featureids"], dtype=np.int64)
    values = attrs.get("nodes_values", attrs.get("nodes_values_as_tensor"))
    thresholds = np.asarray(values, dtype=np.float32)
    modes = [m.decode() if isinstance(m, bytes) else str(m) for m in attrs["nodes_modes"]]
    true_ids = np.asarray(attrs["nodes_truenodeids"], dtype=np.int64)
    false_ids = np.asarray(attrs["nodes_falsenodeids"], dtype=np.int64)
    tracks_true = np.asarray(attrs.get("nodes_missing_value_tracks_true") or [0] * len(modes), dtype=bool)
    unknown = sorted(set(modes) - {"LEAF", "BRANCH_LEQ", "BRANCH_LT", "BRANCH_GT", "BRANCH_GTE"})
    if unknown:
        return f"split modes {', '.join(unknown)} are not thresholds on one feature"
    leaf_trees, leaf_nodes, leaf_ids, leaf_weights = leaves
    trees = []
    for tree in np.unique(tree_ids):
        where = np.flatnonzero(tree_ids == tree)
        position = {int(node_ids[i]): k for k, i in enumerate(where)}
        count = len(where)
        left, right, default = (np.full(count, -1, dtype=np.int32) for _ in range(3))
        feature = np.full(count, -2, dtype=np.int32)
        threshold = np.zeros(count, dtype=np.float64)
        for k, i in enumerate(where):
            mode = modes[i]
            if mode == "LEAF":
                continue
            yes, no = position[int(true_ids[i])], position[int(false_ids[i])]
            below = np.float32(thresholds[i])
            if mode in ("BRANCH_LT", "BRANCH_GTE"):  # x < t  is  x <= the float32 just below t
                below = np.nextafter(below, np.float32(-np.inf))
            left[k], right[k] = (yes, no) if mode in ("BRANCH_LEQ", "BRANCH_LT") else (no, yes)
            default[k] = yes if tracks_true[i] else no
            feature[k] = columns[int(features[i])]
            threshold[k] = float(below)
        value: np.ndarray = np.zeros((count, scores), dtype=np.float64)
        mine = np.flatnonzero(leaf_trees == tree)
        for i in mine:
            value[position[int(leaf_nodes[i])], int(leaf_ids[i])] += float(leaf_weights[i])
        tree_dict: dict[str, np.ndarray] = {"children_left": left, "children_right": right,
                                            "children_default": default, "features": feature,
                                            "thresholds": threshold, "values": value}  # fmt: skip
        trees.append(tree_dict)
    return trees


def with_covers(trees: Trees, sample: np.ndarray) -> Trees:
    """``trees`` with each node's cover counted over ``sample`` (rows x model features, float32),
    and each inner node's value the cover-weighted mean of its leaves' (shap's expected value)."""
    covered = []
    for tree in trees.trees:
        left, right, default = tree["children_left"], tree["children_right"], tree["children_default"]
        feature, threshold = tree["features"], tree["thresholds"]
        counts = np.zeros(left.size, dtype=np.float64)
        at = np.zeros(len(sample), dtype=np.int64)
        active = np.arange(len(sample))
        while active.size:
            np.add.at(counts, at[active], 1.0)
            nodes = at[active]
            inner = left[nodes] >= 0
            active, nodes = active[inner], nodes[inner]
            x = sample[active, feature[nodes]].astype(np.float64)
            at[active] = np.where(np.isnan(x), default[nodes], np.where(x <= threshold[nodes], left[nodes],
                                                                         right[nodes]))  # fmt: skip
        cover = _additive(counts, left, right)
        values = tree["values"].copy()
        for node in _bottom_up(left, right):
            if left[node] >= 0:
                a, b = left[node], right[node]
                values[node] = (values[a] * cover[a] + values[b] * cover[b]) / cover[node]
        covered.append({**tree, "values": values, "node_sample_weight": cover})
    return Trees(covered, trees.base_offset, trees.post_transform, trees.single_score)


def _additive(counts: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The counts, with each subtree no row reached given a vanishing cover halved at each split
    below it (see the module doc)."""
    cover = counts.copy()
    if counts[0] == 0:
        _fill(cover, left, right, 0, UNREACHED_COVER)
        return cover
    for node in np.flatnonzero((left >= 0) & (counts > 0)):
        for child in (left[node], right[node]):
            if counts[child] == 0:
                _fill(cover, left, right, int(child), UNREACHED_COVER)
    return cover


def _fill(cover: np.ndarray, left: np.ndarray, right: np.ndarray, node: int, amount: float) -> None:
    cover[node] = amount
    if left[node] >= 0:
        _fill(cover, left, right, left[node], amount / 2)
        _fill(cover, left, right, right[node], amount / 2)


def _bottom_up(left: np.ndarray, right: np.ndarray) -> list[int]:
    """Nodes in an order where each comes after its children."""
    order, stack = [], [0]
    while stack:
        node = stack.pop()
        order.append(node)
        if left[node] >= 0:
            stack.extend((left[node], right[node]))
    return order[::-1]
