"""The Open Inference Protocol's binary tensor data extension, both ways.

A request whose ``Inference-Header-Content-Length`` header says N starts with
N bytes of JSON; the raw data of each input whose ``parameters`` carry a
``binary_data_size`` follows, in the order of those inputs: little-endian,
row-major, and for ``BYTES`` each element as a 4-byte little-endian length
then its bytes. An answer is binary the same way for each output asked for
with ``parameters.binary_data`` (or for all, with the request's
``parameters.binary_data_output``). ``tritonclient.http`` sends and asks for
binary tensors by default.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

from service.errors import InvalidInput, MalformedRequest, decimal, quoted
from service.serving.datatypes import FIXED
from service.serving.tensors import Strings

HEADER = "inference-header-content-length"

_LENGTH = struct.Struct("<I")


def header_length(raw: str, body_size: int) -> int:
    """The JSON header's length from the ``Inference-Header-Content-Length`` header, checked."""
    length = decimal(raw)
    if length is None or length > body_size:
        raise MalformedRequest(
            f"Inference-Header-Content-Length: expected the JSON header's length in bytes "
            f"(0 to the body's {body_size}), got {quoted(raw)}",
            field="Inference-Header-Content-Length",
        )
    return length


def _binary_size(tensor: Any, index: int) -> int | None:
    parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is None:
        return None
    where = f"inputs[{index}].parameters.binary_data_size"
    if type(size) is not int or size < 0:
        got = quoted(str(size))
        raise MalformedRequest(f"{where}: expected a non-negative integer, got {got}", field=where)
    if "data" in tensor:
        raise MalformedRequest(
            f"inputs[{index}]: has both data and a binary_data_size; send one", field=f"inputs[{index}]"
        )
    return size


def attach_inputs(body: dict[str, Any], data: bytes, offset: int) -> None:
    """Put each binary input's data, decoded to an array, where its JSON ``data`` would be."""
    inputs = body.get("inputs")
    if not isinstance(inputs, list):
        return  # validation names the problem
    view = memoryview(data)
    for index, tensor in enumerate(inputs):
        size = _binary_size(tensor, index)
        if size is None:
            continue
        where = f"inputs[{index}]"
        if offset + size > len(data):
            raise MalformedRequest(
                f"{where}.parameters.binary_data_size: {size} bytes, but only {len(data) - offset} "
                f"follow the JSON header there",
                field=f"{where}.parameters.binary_data_size",
            )
        chunk, offset = view[offset : offset + size], offset + size
        datatype = tensor.get("datatype")
        if datatype == "BYTES":
            tensor["data"] = Strings(chunk, where)
        elif isinstance(datatype, str) and datatype in FIXED:
            itemsize = FIXED[datatype].itemsize
            if size % itemsize:
                raise InvalidInput(
                    f"{where}.parameters.binary_data_size: {size} bytes is not a whole number of "
                    f"{datatype} values ({itemsize} bytes each)",
                    field=f"{where}.parameters.binary_data_size",
                )
            tensor["data"] = np.frombuffer(chunk, dtype=FIXED[datatype])
        else:
            raise InvalidInput(
                f"{where}.datatype: {quoted(datatype)} is not an Open Inference Protocol datatype",
                field=f"{where}.datatype",
            )
    if offset != len(data):
        raise MalformedRequest(
            f"the body has {len(data) - offset} bytes after the JSON header and the binary inputs "
            f"it announces (binary_data_size)",
        )


def tensor_bytes(datatype: str, data: Any) -> bytes:
    """One output tensor's data in the extension's binary form."""
    if datatype == "BYTES":
        encoded = [str(value).encode() for value in data]
        return b"".join(_LENGTH.pack(len(value)) + value for value in encoded)
    return np.ascontiguousarray(data, dtype=FIXED[datatype]).tobytes()


def encode(answer: dict[str, Any], binary: set[str]) -> tuple[bytes, int]:
    """The answer with the outputs named in ``binary`` moved behind its JSON header; the body and
    the header's length (the answer's ``Inference-Header-Content-Length``)."""
    blobs = []
    for tensor in answer["outputs"]:
        if tensor["name"] in binary:
            blob = tensor_bytes(tensor["datatype"], tensor.pop("data"))
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
    header = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    return b"".join([header, *blobs]), len(header)
