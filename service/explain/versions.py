"""The explainer of each served version, built the first time it is asked for (reading the graph's
trees and counting covers over the reference sample takes a while, and most versions are never
explained), and the requested method and space checked against what it offers."""

from __future__ import annotations

import threading
from typing import Literal

import numpy as np

from registry.explain.explainers import (
    BACKGROUND_ROWS,
    LOOP_PERMUTATIONS,
    Explanation,
    LoopExplainer,
    SamplingShap,
    Space,
    TreeShap,
    Unexplainable,
    predictor,
)
from registry.explain.trees import read_trees
from registry.profile import sample_columns
from registry.store import Registry
from service.serving.pool import ServedVersion
from service.serving.validation import Batch

Method = Literal["tree", "sampling"]
METHODS: tuple[Method, ...] = ("tree", "sampling")


class VersionExplainer:
    """Explains one version: exact TreeSHAP where its graph is a tree ensemble over its features,
    else (or when asked) sampling."""

    def __init__(self, served: ServedVersion, model_bytes: bytes) -> None:
        manifest = served.manifest
        if manifest.inputs.layout == "tensor":
            raise Unexplainable(
                "attributions are for tabular models; this version takes tensors, whose per-element "
                "attributions are not offered"
            )
        if manifest.output.kind == "embedding":
            raise Unexplainable("an embedding model has no scalar output to attribute")
        self.served = served
        self.features = manifest.inputs.names
        self.outputs = manifest.output.classes or ("value",)
        reference = sample_columns(manifest.inputs, manifest.reference, manifest.reference.sample_rows)
        predict = predictor(served.model)
        trees = read_trees(model_bytes, manifest.inputs, manifest.output)
        self.tree: TreeShap | None = None
        #: why the version has no exact explainer
        self.no_tree = trees if isinstance(trees, str) else ""
        if not isinstance(trees, str):
            matrix = np.column_stack([reference[name] for name in self.features]).astype(np.float32)
            self.tree = TreeShap(trees, matrix, self.features, manifest.output.classes)
        background = {name: column[:BACKGROUND_ROWS] for name, column in reference.items()}
        space: Space = "probability" if manifest.output.classes else "value"
        self.sampling = SamplingShap(predict, background, self.features, self.outputs, space)
        #: explanations in the loop, as the version's reference attributions were computed at push
        self.loop = LoopExplainer(
            self.tree if self.tree is not None
            else SamplingShap(predict, background, self.features, self.outputs, space, LOOP_PERMUTATIONS)
        )  # fmt: skip

    def offers(self) -> dict[str, list[Space]]:
        """Each method this version can be explained by, and its spaces (the first the default)."""
        offered: dict[str, list[Space]] = {"sampling": list(self.sampling.spaces)}
        if self.tree is not None:
            offered = {"tree": list(self.tree.spaces), **offered}
        return offered

    def explain(self, batch: Batch, method: Method | None, space: Space | None) -> Explanation:
        """Raise ``Unexplainable`` naming what is offered when ``method`` or ``space`` is not."""
        if method is None:
            method = "tree" if self.tree is not None else "sampling"
        if method == "tree" and self.tree is None:
            raise Unexplainable(f"method tree: not offered for this version: {self.no_tree}", "method")
        spaces = self.tree.spaces if method == "tree" and self.tree is not None else self.sampling.spaces
        if space is None:
            space = spaces[0]
        elif space not in spaces:
            raise Unexplainable(
                f"space {space}: method {method} explains {' or '.join(spaces)} for this version", "space"
            )
        columns = columns_of(self.served, batch)
        if method == "tree" and self.tree is not None:
            matrix = np.column_stack([columns[name] for name in self.features])
            return self.tree.explain(matrix, space)
        return self.sampling.explain(columns, batch.rows)


def columns_of(served: ServedVersion, batch: Batch) -> dict[str, np.ndarray]:
    if batch.matrix is not None:
        return {name: batch.matrix[:, j] for j, name in enumerate(served.feature_names)}
    assert batch.columns is not None
    return batch.columns


class Explainers:
    """Each version's explainer, built once per process (in a thread: it reads the graph)."""

    def __init__(self, registry: Registry, cached: int = 8) -> None:
        self.registry = registry
        self.cached = cached
        self._built: dict[tuple[str, int], VersionExplainer] = {}
        self._lock = threading.Lock()

    def of(self, served: ServedVersion) -> VersionExplainer:
        key = (served.name, served.version)
        with self._lock:
            explainer = self._built.get(key)
            if explainer is None or explainer.served is not served:
                explainer = VersionExplainer(served, self.registry.read_model(*key)[1])
                while len(self._built) >= self.cached:
                    self._built.pop(next(iter(self._built)))
                self._built[key] = explainer
            return explainer
