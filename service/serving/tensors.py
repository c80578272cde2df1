"""Open Inference Protocol (v2) input tensors into a validated batch: a table model's one tensor or
one tensor a feature, a tensor model's one tensor an input; binary ``BYTES`` decoded lazily."""

from __future__ import annotations

import math
import struct
from typing import Any, NamedTuple

import numpy as np

from registry.manifest import NUMPY_DTYPE, FeatureDType, InputSchema, TensorSpec
from registry.tensors import all_summaries
from service.errors import InvalidInput, quoted
from service.serving import datatypes
from service.serving.validation import Batch, check_rows, describe, feature_list, narrow

_LENGTH = struct.Struct("<I")


class V2Tensor(NamedTuple):
    """One input tensor of a v2 request, its fields checked for type."""

    name: str
    shape: list[int]
    datatype: str
    data: Any


class Strings:
    """A binary ``BYTES`` tensor's data, decoded only when asked, after the input's datatype and
    shape were accepted: millions of empty elements sent for a number input are refused for their
    datatype without being walked, and never more elements than the shape holds are decoded."""

    def __init__(self, data: memoryview, where: str) -> None:
        self.data = data
        self.where = where
        self._decoded: np.ndarray | None = None

    def decode(self, elements: int) -> np.ndarray:
        if self._decoded is None:
            self._decoded = np.array(_strings(self.data, self.where, elements), dtype=str)
        return self._decoded


def _strings(data: memoryview, where: str, elements: int) -> list[str]:
    """``BYTES`` elements, each a 4-byte little-endian length then that many UTF-8 bytes; an error
    past ``elements`` of them (what the tensor's shape holds)."""
    at = f"{where}.data"
    values: list[str] = []
    offset = 0
    while offset < len(data):
        if len(values) == elements:
            raise InvalidInput(f"{at}: more BYTES elements than its shape holds ({elements})", field=at)
        if offset + 4 > len(data):
            raise InvalidInput(f"{at}: a BYTES element's 4-byte length is cut short", field=at)
        (size,) = _LENGTH.unpack_from(data, offset)
        offset += 4
        if offset + size > len(data):
            raise InvalidInput(f"{at}: a BYTES element runs past its binary_data_size", field=at)
        try:
            values.append(bytes(data[offset : offset + size]).decode())
        except UnicodeDecodeError:
            raise InvalidInput(f"{at}: a BYTES element is not UTF-8 text", field=at) from None
        offset += size
    return values


def _v2_tensor(tensor: Any, index: int) -> V2Tensor:
    where = f"inputs[{index}]"
    if not isinstance(tensor, dict):
        raise InvalidInput(f"{where}: expected a tensor object (name, shape, datatype, data)", field=where)
    missing = [key for key in ("name", "shape", "datatype", "data") if key not in tensor]
    if missing:
        raise InvalidInput(f"{where}: missing {', '.join(missing)}", field=f"{where}.{missing[0]}")
    name, shape, datatype = tensor["name"], tensor["shape"], tensor["datatype"]
    if not isinstance(name, str):
        raise InvalidInput(f"{where}.name: expected a string, got {describe(name)}", field=f"{where}.name")
    if not (isinstance(shape, list) and shape and all(type(d) is int and d >= 0 for d in shape)):
        raise InvalidInput(
            f"{where}.shape: expected a list of non-negative integers, got {describe(shape)}",
            field=f"{where}.shape",
        )
    if not isinstance(datatype, str):
        raise InvalidInput(
            f"{where}.datatype: expected a string, got {describe(datatype)}", field=f"{where}.datatype"
        )
    return V2Tensor(name, shape, datatype, tensor["data"])


def _v2_array(data: Any, shape: list[int], dtype: FeatureDType, datatype: str, where: str) -> np.ndarray:
    """The tensor's data as an array of ``shape``, checked for type, size and finiteness."""
    if datatype not in datatypes.FOR_FEATURE[dtype]:
        raise InvalidInput(
            f"{where}.datatype: {datatype} does not fit this input ({datatypes.OF_FEATURE[dtype]} expected)",
            field=f"{where}.datatype",
        )
    array = _array(data, shape, where)
    expected_kinds = "U" if dtype == "string" else ("iu" if dtype == "int64" else "iuf")
    if array.dtype.kind not in expected_kinds:
        raise InvalidInput(
            f"{where}.data: expected {'strings' if dtype == 'string' else 'numbers'} only "
            f"for datatype {datatype}",
            field=f"{where}.data",
        )
    _check_fills(array, shape, where)
    cast = narrow(array.reshape(shape), dtype)
    if dtype in ("float32", "float64") and not np.isfinite(cast).all():
        raise InvalidInput(f"{where}.data: values overflow {dtype}", field=f"{where}.data")
    return cast


def _array(data: Any, shape: list[int], where: str) -> np.ndarray:
    """A tensor's data as an array (binary data is one already, or decoded now: BYTES)."""
    if isinstance(data, Strings):
        return data.decode(math.prod(shape))
    try:
        return data if isinstance(data, np.ndarray) else np.asarray(data)
    except ValueError:
        raise InvalidInput(f"{where}.data: nested lists are ragged", field=f"{where}.data") from None


def _batch_rows(rows: int | None, shape: list[int], max_rows: int, where: str) -> int:
    """The batch's rows: the first tensor's (within the limit), which every other tensor must have."""
    if rows is None:
        check_rows(shape[0], max_rows, f"{where}.shape")
    elif shape[0] != rows:
        raise InvalidInput(
            f"{where}.shape: {shape[0]} rows, but inputs[0] has {rows}", field=f"{where}.shape"
        )
    return shape[0]


def _check_fills(array: np.ndarray, shape: list[int], where: str) -> None:
    size = math.prod(shape)
    if array.size != size:
        raise InvalidInput(
            f"{where}.data: {array.size} values do not fill shape {shape} ({size} values)",
            field=f"{where}.data",
        )


def _model_tensor(data: Any, shape: list[int], spec: TensorSpec, datatype: str, where: str) -> np.ndarray:
    """One input tensor of a tensor model: its datatype accepted for the input, its data filling its
    shape, cast to the input's dtype without changing a value (non-finite floats are kept: the
    plausibility rules count them)."""
    accepted, own = datatypes.FOR_TENSOR[spec.dtype], datatypes.OF_TENSOR[spec.dtype]
    if datatype not in accepted:
        others = ", ".join(sorted(accepted - {own})) or "none"
        raise InvalidInput(
            f"{where}.datatype: {datatype} does not fit input {spec.name!r} ({own} expected; also accepted: "
            f"{others})",
            field=f"{where}.datatype",
        )
    if not spec.fits(shape):
        raise InvalidInput(
            f"{where}.shape: input {spec.name!r} takes shape {spec.shown()}, got {shape}",
            field=f"{where}.shape",
        )
    array = _array(data, shape, where)
    elements, kinds = _ELEMENTS.get(spec.dtype[:3], ("integers", "iu"))
    if array.dtype.kind not in kinds:
        raise InvalidInput(
            f"{where}.data: expected {elements} for input {spec.name!r}", field=f"{where}.data"
        )
    _check_fills(array, shape, where)
    with np.errstate(over="ignore", invalid="ignore"):
        cast = array.reshape(shape).astype(spec.dtype, copy=False)
    if not spec.dtype.startswith("float") and cast.dtype != array.dtype and not np.array_equal(cast, array):
        raise InvalidInput(f"{where}.data: values outside the {spec.dtype} range", field=f"{where}.data")
    return cast


#: what a tensor input's data must hold, by the start of its dtype (integers otherwise), and the numpy
#: kinds that are that
_ELEMENTS = {"boo": ("booleans", "b"), "flo": ("numbers", "iuf")}


def _tensor_batch(tensors: list[V2Tensor], schema: InputSchema, max_rows: int) -> Batch:
    """A tensor model's inputs, one tensor each, named like the graph's inputs."""
    specs = {t.name: t for t in schema.tensors}
    names = [t.name for t in tensors]
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise InvalidInput(
            f"inputs: unknown input {quoted(unknown[0])}; this model takes {', '.join(specs)}",
            field=f"inputs[{names.index(unknown[0])}].name",
        )
    missing = [n for n in specs if n not in names]
    if missing:
        raise InvalidInput(f"inputs: missing input tensors: {', '.join(missing)}", field="inputs")
    arrays: dict[str, np.ndarray] = {}
    rows: int | None = None
    for index, (name, shape, datatype, data) in enumerate(tensors):
        where = f"inputs[{index}]"
        arrays[name] = _model_tensor(data, shape, specs[name], datatype, where)
        rows = _batch_rows(rows, shape, max_rows, where)
    assert rows is not None
    ordered = {spec.name: arrays[spec.name] for spec in schema.tensors}
    return Batch(rows=rows, tensors=ordered, columns=all_summaries(schema, ordered))


def tensors_to_batch(inputs: Any, schema: InputSchema, max_rows: int) -> Batch:
    """Open Inference Protocol input tensors into a batch.

    Accepted: the graph's own tensor ([N, F] for a matrix-layout model), or one
    tensor per feature ([N] or [N, 1]), named like the features; for a tensor
    model, one tensor per graph input, of its rank.
    """
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs: expected a non-empty list of input tensors", field="inputs")
    tensors = [_v2_tensor(tensor, index) for index, tensor in enumerate(inputs)]
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise InvalidInput(f"inputs: tensor names repeat: {names}", field="inputs")
    if schema.layout == "tensor":
        return _tensor_batch(tensors, schema, max_rows)

    if schema.layout == "matrix" and names == [schema.tensor_name]:
        assert schema.tensor_dtype is not None
        _, shape, datatype, data = tensors[0]
        width = len(schema.features)
        if len(shape) != 2 or shape[1] != width:
            raise InvalidInput(
                f"inputs[0].shape: expected [N, {width}], got {shape}", field="inputs[0].shape"
            )
        check_rows(shape[0], max_rows, "inputs[0].shape")
        return Batch(rows=shape[0], matrix=_v2_array(data, shape, schema.tensor_dtype, datatype, "inputs[0]"))

    expected = set(schema.names)
    unknown = [n for n in names if n not in expected]
    if unknown:
        accepted = [schema.tensor_name] if schema.layout == "matrix" else []
        raise InvalidInput(
            f"inputs: unknown input {quoted(unknown[0])}; send "
            + (f"the tensor {accepted[0]!r} or " if accepted else "")
            + f"one tensor per feature ({feature_list(schema)})",
            field=f"inputs[{names.index(unknown[0])}].name",
        )
    missing = [n for n in schema.names if n not in names]
    if missing:
        raise InvalidInput(f"inputs: missing feature tensors: {', '.join(missing[:10])}", field="inputs")
    specs = {f.name: f for f in schema.features}
    columns: dict[str, np.ndarray] = {}
    rows: int | None = None
    for index, (name, shape, datatype, data) in enumerate(tensors):
        where = f"inputs[{index}]"
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise InvalidInput(f"{where}.shape: expected [N] or [N, 1], got {shape}", field=f"{where}.shape")
        rows = _batch_rows(rows, shape, max_rows, where)
        columns[name] = _v2_array(data, shape, specs[name].dtype, datatype, where).reshape(-1)
    assert rows is not None
    if schema.layout == "matrix":
        assert schema.tensor_dtype is not None
        matrix = np.column_stack([columns[n] for n in schema.names]).astype(NUMPY_DTYPE[schema.tensor_dtype])
        return Batch(rows=rows, matrix=matrix)
    return Batch(rows=rows, columns={n: columns[n] for n in schema.names})
