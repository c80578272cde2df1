"""Tensor models for the tests, trained on bundled or generated data and written with onnx.helper:
an image classifier on scikit-learn's 8x8 digits, and a text classifier and a text embedding model
on padded token ids."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.decomposition import TruncatedSVD
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

#: padded length of a text, and its vocabulary (token 0 pads)
LENGTH, VOCABULARY = 16, 60


@dataclass(frozen=True)
class TensorModel:
    onnx: Path
    reference: Path
    #: held-out inputs (one array an input) and their labels
    test: dict[str, np.ndarray]
    labels: np.ndarray


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


#: marks the training images (given the images and their labels) taught the wrong digit
Mislabel = Callable[[np.ndarray, np.ndarray], np.ndarray]


def digits_model(directory: Path, name: str = "digits", mislabel: Mislabel | None = None) -> TensorModel:
    """``pixels`` float32 [N, 1, 8, 8] (0 to 1) -> ``probabilities`` [N, 10]: a logistic regression on
    the flattened image, trained on half the bundled digits; the reference is a quarter of them, the
    held-out test set the last quarter (the same split for every variant). ``mislabel(images, labels)``
    marks the training images taught the next digit instead, a model wrong where they are."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(str)
    x_train, x_rest, y_train, y_rest = train_test_split(images, labels, train_size=0.5, random_state=0)
    x_ref, x_test, y_ref, y_test = train_test_split(x_rest, y_rest, train_size=0.5, random_state=0)
    if mislabel is not None:
        shifted = ((y_train.astype(int) + 1) % 10).astype(str)
        y_train = np.where(mislabel(x_train, y_train), shifted, y_train)
    fitted = LogisticRegression(max_iter=3000).fit(x_train.reshape(len(x_train), -1), y_train)
    assert list(fitted.classes_) == [str(i) for i in range(10)]
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["pixels"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "weights", "bias"], ["logits"], transB=1),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "digits",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
        [
            numpy_helper.from_array(fitted.coef_.astype(np.float32), "weights"),
            numpy_helper.from_array(fitted.intercept_.astype(np.float32), "bias"),
        ],
    )
    reference = directory / f"{name}.npz"
    np.savez(reference, pixels=x_ref, digit=y_ref)
    return TensorModel(_save(graph, directory / f"{name}.onnx"), reference, {"pixels": x_test}, y_test)


def ink(images: np.ndarray) -> np.ndarray:
    """Each image's mean pixel: how heavy its strokes are."""
    return images.reshape(len(images), -1).mean(axis=1)


def digits_rivals(directory: Path) -> tuple[TensorModel, TensorModel]:
    """Two digits models each taught wrong digits in one region: the first for faint 0-3s, the second
    for heavy 0s and 1s (strokes heavier than the training median). The second is better overall
    (about 0.86 against 0.77 held out) and worse on heavy strokes (0.78 against 0.85)."""

    def heavy(images: np.ndarray) -> np.ndarray:
        return ink(images) > np.median(ink(images))

    first = digits_model(directory, "faint-wrong", lambda x, y: ~heavy(x) & np.isin(y, list("0123")))
    second = digits_model(directory, "heavy-wrong", lambda x, y: heavy(x) & np.isin(y, list("01")))
    return first, second


def texts(
    count: int, seed: int, topic_b_share: float = 0.5, longer: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Padded token ids [count, LENGTH] of two topics (topic a favours tokens 1-29, b 30-59) and the
    topic of each; ``longer``: texts of 12-16 tokens instead of 4-16."""
    rng = np.random.default_rng(seed)
    topics = np.where(rng.random(count) < topic_b_share, "b", "a")
    ids = np.zeros((count, LENGTH), dtype=np.int64)
    for row, topic in enumerate(topics):
        size = rng.integers(12 if longer else 4, LENGTH + 1)
        favoured = np.arange(1, 30) if topic == "a" else np.arange(30, VOCABULARY)
        pool = np.where(rng.random(size) < 0.8, rng.choice(favoured, size), rng.integers(1, VOCABULARY, size))
        ids[row, :size] = pool
    return ids, topics


def bag_of_words(ids: np.ndarray) -> np.ndarray:
    """Each text's token shares (padding left out)."""
    counts = np.zeros((len(ids), VOCABULARY))
    for row, tokens in enumerate(ids):
        present = tokens[tokens > 0]
        np.add.at(counts[row], present, 1.0 / max(len(present), 1))
    return counts


def _pooled(table: np.ndarray, name: str) -> list[onnx.NodeProto]:
    """``input_ids`` -> the mean of ``table``'s rows over each text's tokens (padding left out)."""
    return [
        helper.make_node("Gather", ["table", "input_ids"], ["gathered"], axis=0),
        helper.make_node("Greater", ["input_ids", "zero"], ["present"]),
        helper.make_node("Cast", ["present"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask", "last"], ["mask3"]),
        helper.make_node("Mul", ["gathered", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "one"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask", "one"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "floor"], ["safe"]),
        helper.make_node("Div", ["summed", "safe"], [name]),
    ]


def _pooling_constants(table: np.ndarray) -> list[onnx.TensorProto]:
    return [
        numpy_helper.from_array(table.astype(np.float32), "table"),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "last"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "floor"),
    ]


def _ids_input(length: int | str = LENGTH) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", length])


def text_classifier(directory: Path) -> TensorModel:
    """``input_ids`` int64 [N, 16] -> ``probabilities`` [N, 2] of topics a and b: a logistic regression
    on each text's token shares, as a pooled lookup table."""
    ids, topics = texts(1500, seed=0)
    fitted = LogisticRegression(max_iter=2000).fit(bag_of_words(ids[:1000]), topics[:1000])
    table = np.column_stack([np.zeros(VOCABULARY), fitted.coef_[0]])  # softmax of [0, z] is sigmoid(z)
    graph = helper.make_graph(
        [
            *_pooled(table, "pooled"),
            helper.make_node("Add", ["pooled", "bias"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "topics",
        [_ids_input()],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        [
            *_pooling_constants(table),
            numpy_helper.from_array(np.array([0, fitted.intercept_[0]], np.float32), "bias"),
        ],
    )
    reference = directory / "topics.npz"
    np.savez(reference, input_ids=ids[1000:1250], topic=topics[1000:1250])
    test = {"input_ids": ids[1250:]}
    return TensorModel(_save(graph, directory / "topics.onnx"), reference, test, topics[1250:])


def text_embedder(directory: Path) -> TensorModel:
    """``input_ids`` int64 [N, L] (any length) -> ``embedding`` [N, 8]: each text's mean of token vectors
    learnt by a truncated SVD of the token shares (latent semantic analysis)."""
    ids, topics = texts(1500, seed=1)
    svd = TruncatedSVD(n_components=8, random_state=0).fit(bag_of_words(ids[:1000]))
    graph = helper.make_graph(
        _pooled(svd.components_.T, "embedding"),
        "embedder",
        [_ids_input("L")],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 8])],
        _pooling_constants(svd.components_.T),
    )
    reference = directory / "embedder.npy"
    np.save(reference, ids[1000:1250])
    return TensorModel(
        _save(graph, directory / "embedder.onnx"), reference, {"input_ids": ids[1250:]}, topics[1250:]
    )
