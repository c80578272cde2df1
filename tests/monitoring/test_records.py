"""A request's inputs in the log: the same JSON whatever the matrix's shape, type or feature names."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from monitoring.records import matrix_json

NAMES = ("radius", 'say "hi"', "100%", "d,[e]")


@pytest.mark.parametrize("rows", [0, 1, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_matrix_json_is_the_feature_columns_by_name(rows, dtype):
    matrix = (np.arange(rows * len(NAMES)).reshape(rows, len(NAMES)) * 1.5 - 2).astype(dtype)
    decoded = orjson.loads(matrix_json(matrix, NAMES))
    assert list(decoded) == list(NAMES)
    assert decoded == {name: matrix[:, i].tolist() for i, name in enumerate(NAMES)}


def test_a_missing_value_is_null_and_small_and_large_numbers_survive():
    matrix = np.array([[np.nan, 1e-7], [3.5e20, -0.0]], dtype=np.float64)
    assert orjson.loads(matrix_json(matrix, ("a", "b"))) == {"a": [None, 3.5e20], "b": [1e-7, -0.0]}
