"""Input validation: good batches become typed arrays; every bad input names its field and reason."""

from __future__ import annotations

import math

import numpy as np
import pytest

from registry.manifest import MISSING_STRING, FeatureSpec, InputSchema
from service.errors import InvalidInput, PayloadTooLarge
from service.serving.tensors import tensors_to_batch
from service.serving.validation import records_to_batch

MATRIX = InputSchema(
    layout="matrix",
    tensor_name="X",
    tensor_dtype="float32",
    features=(FeatureSpec(name="a", dtype="float32"), FeatureSpec(name="b", dtype="float32")),
)
NULLABLE = MATRIX.model_copy(
    update={
        "features": (
            FeatureSpec(name="a", dtype="float32", allow_missing=True),
            FeatureSpec(name="b", dtype="float32"),
        )
    }
)
COLUMNS = InputSchema(
    layout="columns",
    features=(
        FeatureSpec(name="color", dtype="string"),
        FeatureSpec(name="size", dtype="float32", allow_missing=True),
        FeatureSpec(name="count", dtype="int64"),
    ),
)


def refused(call, *args):
    with pytest.raises(InvalidInput) as info:
        call(*args)
    return info.value


def test_records_become_a_float32_matrix_in_schema_order():
    batch = records_to_batch([{"b": 2, "a": 1.5}, {"a": -1, "b": 0.25}], MATRIX, 100)
    assert batch.rows == 2 and batch.matrix.dtype == np.float32
    assert batch.matrix.tolist() == [[1.5, 2.0], [-1.0, 0.25]]


def test_records_become_typed_columns():
    batch = records_to_batch([{"color": "red", "size": None, "count": 3}], COLUMNS, 100)
    assert batch.columns["color"].tolist() == ["red"]
    assert math.isnan(batch.columns["size"][0]) and batch.columns["size"].dtype == np.float32
    assert batch.columns["count"].dtype == np.int64


@pytest.mark.parametrize(
    ("records", "field", "message"),
    [
        ([{"a": 1}], "inputs[0].b", "missing"),
        ([{"a": 1, "b": 2, "c": 3}], "inputs[0].c", "unknown feature; expected: a, b"),
        ([{"a": 1, "b": 2}, {"a": "x", "b": 2}], "inputs[1].a", "expected a number, got string 'x'"),
        ([{"a": True, "b": 2}], "inputs[0].a", "expected a number, got boolean True"),
        ([{"a": [1], "b": 2}], "inputs[0].a", "expected a number, got array"),
        ([{"a": None, "b": 2}], "inputs[0].a", "null is not accepted"),
        ([{"a": 1e39, "b": 2}], "inputs[0].a", "overflows float32"),
        ([{"a": float("inf"), "b": 2}], "inputs[0].a", "not a finite number"),
        ([[1, 2]], "inputs[0]", "expected an object of feature: value, got array"),
        ([{"a": 1, "b": 2}, "row"], "inputs[1]", "expected an object"),
    ],
)
def test_bad_records_name_the_field_and_the_reason(records, field, message):
    error = refused(records_to_batch, records, MATRIX, 100)
    assert error.field == field
    assert message in error.message
    assert error.status == 422


def test_every_problem_is_listed_up_to_a_bound():
    error = refused(records_to_batch, [{"a": "x"} for _ in range(50)], MATRIX, 100)
    assert len(error.details) == 20
    assert "more problems" in error.message


def test_a_string_null_reaches_the_model_as_the_missing_string_where_the_reference_had_nulls():
    schema = COLUMNS.model_copy(
        update={
            "features": (FeatureSpec(name="color", dtype="string", allow_missing=True), *COLUMNS.features[1:])
        }
    )
    rows = [{"color": None, "size": 1, "count": 1}, {"color": "red", "size": 2, "count": 1}]
    batch = records_to_batch(rows, schema, 10)
    assert batch.columns is not None and batch.columns["color"].tolist() == [MISSING_STRING, "red"]
    # a string matrix: a null only in the column whose reference had nulls
    features = (
        FeatureSpec(name="a", dtype="string", allow_missing=True),
        FeatureSpec(name="b", dtype="string"),
    )
    matrix = InputSchema(layout="matrix", tensor_name="S", tensor_dtype="string", features=features)
    assert records_to_batch([{"a": None, "b": "x"}], matrix, 10).matrix.tolist() == [[MISSING_STRING, "x"]]
    error = refused(records_to_batch, [{"a": "x", "b": None}], matrix, 10)
    assert error.field == "inputs[0].b" and "null is not accepted" in str(error)


def test_null_is_accepted_only_where_the_reference_had_missing_values():
    batch = records_to_batch([{"a": None, "b": 1}], NULLABLE, 10)
    assert math.isnan(batch.matrix[0, 0])
    error = refused(records_to_batch, [{"a": 1, "b": None}], NULLABLE, 10)
    assert error.field == "inputs[0].b"


@pytest.mark.parametrize(
    ("records", "field", "message"),
    [
        ([{"color": 3, "size": 1, "count": 1}], "inputs[0].color", "expected a string, got integer 3"),
        (
            [{"color": "red", "size": 1, "count": 1.5}],
            "inputs[0].count",
            "expected an integer, got number 1.5",
        ),
        ([{"color": "red", "size": 1, "count": 2**70}], "inputs[0].count", "outside the int64 range"),
        ([{"color": None, "size": 1, "count": 1}], "inputs[0].color", "null is not accepted"),
        ([{"color": "red", "size": 1e39, "count": 1}], "inputs[0].size", "overflows float32"),
    ],
)
def test_bad_column_values_name_the_field(records, field, message):
    error = refused(records_to_batch, records, COLUMNS, 100)
    assert error.field == field and message in error.message


def test_empty_non_list_and_oversized_batches_are_refused():
    assert "batch is empty" in refused(records_to_batch, [], MATRIX, 10).message
    assert "expected a list of records" in refused(records_to_batch, {"a": 1}, MATRIX, 10).message
    with pytest.raises(PayloadTooLarge, match="11 rows exceed the limit of 10"):
        records_to_batch([{"a": 1, "b": 2}] * 11, MATRIX, 10)


def tensor(name="X", shape=(1, 2), datatype="FP32", data=(1.0, 2.0)):
    return {"name": name, "shape": list(shape), "datatype": datatype, "data": list(data)}


def test_v2_matrix_tensor_flat_or_nested():
    flat = tensors_to_batch([tensor(shape=(2, 2), data=(1, 2, 3, 4))], MATRIX, 10)
    nested = tensors_to_batch([{**tensor(shape=(2, 2)), "data": [[1, 2], [3, 4]]}], MATRIX, 10)
    assert flat.matrix.tolist() == nested.matrix.tolist() == [[1, 2], [3, 4]]


def test_v2_one_tensor_per_feature_is_accepted_for_a_matrix_model():
    batch = tensors_to_batch([tensor("b", (2,), data=(3, 4)), tensor("a", (2, 1), data=(1, 2))], MATRIX, 10)
    assert batch.matrix.tolist() == [[1, 3], [2, 4]]


def test_v2_columns_model_takes_bytes_and_numbers():
    batch = tensors_to_batch(
        [
            tensor("color", (2,), "BYTES", ("red", "blue")),
            tensor("size", (2, 1), "FP64", (1.5, 2.5)),
            tensor("count", (2,), "INT32", (1, 2)),
        ],
        COLUMNS,
        10,
    )
    assert batch.columns["color"].tolist() == ["red", "blue"] and batch.columns["count"].tolist() == [1, 2]


@pytest.mark.parametrize(
    ("inputs", "field", "message"),
    [
        ([], "inputs", "non-empty list"),
        ("X", "inputs", "non-empty list"),
        ([tensor(shape=(1, 3), data=(1, 2, 3))], "inputs[0].shape", "expected [N, 2], got [1, 3]"),
        ([tensor(shape=(2, 2))], "inputs[0].data", "2 values do not fill shape [2, 2]"),
        ([tensor(datatype="BYTES")], "inputs[0].datatype", "BYTES does not fit this input (FP32 expected)"),
        ([tensor(data=("1", "2"))], "inputs[0].data", "expected numbers only"),
        ([tensor(data=(True, False))], "inputs[0].data", "expected numbers only"),
        ([{**tensor(), "data": [[1], [2, 3]]}], "inputs[0].data", "ragged"),
        ([tensor(data=(1e39, 1))], "inputs[0].data", "overflow"),
        ([{"name": "X", "shape": [1, 2]}], "inputs[0].datatype", "missing datatype, data"),
        ([tensor(shape=(-1, 2))], "inputs[0].shape", "non-negative integers"),
        ([tensor(name="Y")], "inputs[0].name", "unknown input 'Y'"),
        ([tensor("a", (1,), data=(1,))], "inputs", "missing feature tensors: b"),
        (
            [tensor("a", (1,), data=(1,)), tensor("b", (2,), data=(1, 2))],
            "inputs[1].shape",
            "2 rows, but inputs[0] has 1",
        ),
        ([tensor(), tensor()], "inputs", "names repeat"),
        ([tensor(shape=(0, 2), data=())], "inputs[0].shape", "batch is empty"),
    ],
)
def test_bad_v2_tensors_name_the_field(inputs, field, message):
    error = refused(tensors_to_batch, inputs, MATRIX, 10)
    assert error.field == field
    assert message in error.message


def test_v2_oversized_batch_is_413():
    with pytest.raises(PayloadTooLarge):
        tensors_to_batch([tensor(shape=(11, 2), data=[0] * 22)], MATRIX, 10)
