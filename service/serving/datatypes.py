"""The Open Inference Protocol's (v2) datatypes: each one's wire form, and which of them a model's
input takes (a value is cast to the model's dtype only when the cast keeps it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from registry.manifest import FeatureDType, TensorDType

#: every v2 datatype, with its fixed-size little-endian numpy dtype (None: BYTES, length-prefixed strings)
WIRE: dict[str, np.dtype[Any] | None] = {
    "BOOL": np.dtype("?"), "UINT8": np.dtype("u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": None,
}  # fmt: skip
#: the fixed-size ones
FIXED: dict[str, np.dtype[Any]] = {name: dtype for name, dtype in WIRE.items() if dtype is not None}
NUMERIC = frozenset(name for name, dtype in FIXED.items() if dtype.kind in "iuf")
INTEGERS = frozenset(name for name, dtype in FIXED.items() if dtype.kind in "iu")

#: a table feature's own datatype, and those accepted for it
OF_FEATURE: dict[FeatureDType, str] = {
    "float32": "FP32", "float64": "FP64", "int64": "INT64", "string": "BYTES",
}  # fmt: skip
FOR_FEATURE: dict[FeatureDType, frozenset[str]] = {
    "float32": NUMERIC,
    "float64": NUMERIC,
    "int64": INTEGERS - {"UINT64"},  # a UINT64 may not fit
    "string": frozenset({"BYTES"}),
}
#: a tensor input's own datatype, and those accepted for it
OF_TENSOR: dict[TensorDType, str] = {
    "float16": "FP16", "float32": "FP32", "float64": "FP64", "int8": "INT8", "int16": "INT16",
    "int32": "INT32", "int64": "INT64", "uint8": "UINT8", "bool": "BOOL",
}  # fmt: skip
FOR_TENSOR: dict[TensorDType, frozenset[str]] = {
    **{dtype: NUMERIC for dtype in ("float16", "float32", "float64")},
    **{dtype: INTEGERS for dtype in ("int8", "int16", "int32", "int64", "uint8")},
    "bool": frozenset({"BOOL"}),
}
