"""Turn decoded JSON inputs into typed arrays that fit a model's schema, or say exactly what is wrong.

The fast path checks a whole batch at once (one ``set(map(type, ...))`` and one
numpy conversion); only a batch that fails it is walked row by row, to name
the offending fields.
"""

from __future__ import annotations

import collections
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from registry.manifest import MISSING_STRING, NUMPY_DTYPE, FeatureDType, FeatureSpec, InputSchema
from service.errors import QUOTED_CHARS, FieldError, InvalidInput, PayloadTooLarge, clipped
from service.serving import datatypes

#: details listed in one error answer; the rest are counted
MAX_DETAILS = 20

_ACCEPTED: dict[FeatureDType, frozenset[type]] = {
    "float32": frozenset({float, int}),
    "float64": frozenset({float, int}),
    "int64": frozenset({int}),
    "string": frozenset({str}),
}
_EXPECTED: dict[FeatureDType, str] = {
    "float32": "a number",
    "float64": "a number",
    "int64": "an integer",
    "string": "a string",
}
_JSON_TYPE: dict[type, str] = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    list: "array",
    dict: "object",
    type(None): "null",
}


@dataclass(frozen=True)
class Batch:
    """Validated inputs: ``matrix`` (rows x features) for matrix-layout models, else ``columns``;
    for tensor models, ``tensors`` (one array an input) and ``columns`` their per-sample summaries."""

    rows: int
    matrix: np.ndarray | None = None
    columns: dict[str, np.ndarray] | None = None
    tensors: dict[str, np.ndarray] | None = None

    def head(self, rows: int) -> Batch:
        """The first ``rows`` rows."""
        return Batch(
            rows=min(rows, self.rows),
            matrix=self.matrix[:rows] if self.matrix is not None else None,
            columns={k: v[:rows] for k, v in self.columns.items()} if self.columns is not None else None,
            tensors={k: v[:rows] for k, v in self.tensors.items()} if self.tensors is not None else None,
        )


#: JSON separators a prediction body may hold for each value its rows need: a record's key and value,
#: with room for brackets; and for the request's other fields
SEPARATORS_PER_VALUE = 2
SEPARATORS_SPARE = 1_000


def values_per_row(schema: InputSchema) -> int:
    """The JSON values one row of ``schema`` takes: its features, or its tensors' elements a sample
    (a free dimension counted at four times the reference sample's)."""
    if schema.layout != "tensor":
        return len(schema.features)
    return sum(
        math.prod(d or 4 * max(s, 1) for d, s in zip(t.shape[1:], t.sample_shape, strict=True))
        for t in schema.tensors
    )


def separators_allowed(values_a_row: int, max_rows: int) -> int:
    """The JSON separators (commas) a body of ``max_rows`` rows of that many values needs, at most.

    Why: parsing holds the event loop, and a body within the byte limit can still be millions of
    tiny keys (2.3 million in 29 MB: a second's parse and 250 MB); counting commas first is a scan
    at memory speed, and bounds the parse by what the model could use.
    """
    return max_rows * values_a_row * SEPARATORS_PER_VALUE + SEPARATORS_SPARE


def describe(value: Any) -> str:
    text = repr(value)
    return f"{_JSON_TYPE.get(type(value), type(value).__name__)} {text[:40]}{'...' if len(text) > 40 else ''}"


def feature_list(schema: InputSchema) -> str:
    names = schema.names
    return ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")


def _raise(errors: list[FieldError]) -> NoReturn:
    assert errors, "a batch that failed the fast path has at least one diagnosable problem"
    first = errors[0]
    # the diagnosis stops past MAX_DETAILS problems: a count there is a floor
    at_least = "at least " if len(errors) > MAX_DETAILS else ""
    more = f" (and {at_least}{len(errors) - 1} more problems)" if len(errors) > 1 else ""
    raise InvalidInput(
        f"{first.field}: {first.message}{more}", field=first.field, details=errors[:MAX_DETAILS]
    )


def _tabular(schema: InputSchema, field: str) -> None:
    """Refuse rows of features for a tensor model, saying what it takes and where to send it."""
    if schema.layout == "tensor":
        takes = ", ".join(f"{t.name} {datatypes.OF_TENSOR[t.dtype]} {t.shown()}" for t in schema.tensors)
        raise InvalidInput(
            f"{field}: this model takes tensors ({takes}), not rows of features: send them as Open "
            "Inference Protocol input tensors to /v2/models/{name}/infer (JSON or binary)",
            field=field,
        )


def check_rows(rows: int, max_rows: int, field: str) -> None:
    if rows == 0:
        raise InvalidInput(f"{field}: the batch is empty; send at least one row", field=field)
    if rows > max_rows:
        raise PayloadTooLarge(
            f"{field}: {rows} rows exceed the limit of {max_rows} rows a request", field=field
        )


def _value_error(spec: FeatureSpec, value: Any) -> str | None:
    """Why ``value`` does not fit ``spec``, or None when it does."""
    if value is None:
        if spec.allow_missing:
            return None
        return "null is not accepted: this feature had no missing values in the reference data"
    kind = type(value)
    if kind not in _ACCEPTED[spec.dtype]:
        return f"expected {_EXPECTED[spec.dtype]}, got {describe(value)}"
    if kind is float and not math.isfinite(value):
        return f"{value} is not a finite number"
    if kind is int and spec.dtype == "int64" and not -(2**63) <= value < 2**63:
        return f"{value} is outside the int64 range"
    return None


def _diagnose(records: list[Any], schema: InputSchema, field: str) -> list[FieldError]:
    """Walk the records and name every problem, up to a bound."""
    errors: list[FieldError] = []
    known = set(schema.names)
    for index, record in enumerate(records):
        where = f"{field}[{index}]"
        if not isinstance(record, dict):
            errors.append(FieldError(where, f"expected an object of feature: value, got {describe(record)}"))
        else:
            # lazily, up to the bound: a record of millions of keys is not walked whole
            unknown = itertools.islice((key for key in record if key not in known), MAX_DETAILS + 1)
            expected = f"unknown feature; expected: {feature_list(schema)}"
            errors += [FieldError(f"{where}.{clipped(key, QUOTED_CHARS)}", expected) for key in unknown]
            if len(errors) > MAX_DETAILS:
                break
            for spec in schema.features:
                if spec.name not in record:
                    errors.append(FieldError(f"{where}.{spec.name}", "missing"))
                    continue
                problem = _value_error(spec, record[spec.name])
                if problem:
                    errors.append(FieldError(f"{where}.{spec.name}", problem))
        if len(errors) > MAX_DETAILS:
            break
    return errors


def _cast(values: list[Any], dtype: FeatureDType) -> np.ndarray:
    if dtype == "string":
        return np.array(values, dtype=object)
    # None becomes NaN for float dtypes; the caller has checked it is allowed
    return np.array(values, dtype=np.float64 if dtype != "int64" else np.int64)


def narrow(array: np.ndarray, dtype: FeatureDType) -> np.ndarray:
    """``array`` in the model's dtype; values too big become inf, which every caller checks for."""
    with np.errstate(over="ignore"):
        return array.astype(NUMPY_DTYPE[dtype], copy=False)


def _overflow_errors(
    array: np.ndarray, cast: np.ndarray, where: str, specs: tuple[FeatureSpec, ...]
) -> list[FieldError]:
    """Values finite in JSON that overflow a float32 input (e.g. 1e39); ``where`` names the field
    from ``{row}`` and ``{name}``."""
    bad = np.argwhere(np.isinf(cast) & ~np.isinf(array))
    return [
        FieldError(
            where.format(row=row, name=specs[col].name), f"{float(array[row, col])!r} overflows float32"
        )
        for row, col in bad[:MAX_DETAILS]
    ]


def _typed(
    values: list[Any],
    specs: tuple[FeatureSpec, ...],
    dtype: FeatureDType,
    rows: int,
    diagnose: Callable[[], list[FieldError]],
    where: str,
    by_column: bool = False,
) -> np.ndarray:
    """``values`` (rows x ``specs``; row after row, or with ``by_column`` column after column) as a
    rows x specs array of ``dtype``, checked in one pass over their types; any problem is named
    by ``diagnose``, a value overflowing float32 by ``where`` (``{row}`` and ``{name}`` filled in)."""
    nullable = dtype != "int64" and any(spec.allow_missing for spec in specs)
    types = set(map(type, values))
    if not types <= _ACCEPTED[dtype] | ({type(None)} if nullable else set()):
        _raise(diagnose())

    def shaped(flat: np.ndarray) -> np.ndarray:
        return flat.reshape(len(specs), rows).T if by_column else flat.reshape(rows, len(specs))

    allowed = np.array([spec.allow_missing for spec in specs])
    if dtype == "string":
        array = shaped(_cast(values, dtype))
        if type(None) in types:
            missing = array == np.array(None, dtype=object)
            if (missing & ~allowed).any():
                _raise(diagnose())
            array[missing] = MISSING_STRING
        return np.ascontiguousarray(array)
    try:
        array = shaped(_cast(values, dtype))
    except OverflowError:
        _raise(diagnose())
    if dtype == "int64":
        return np.ascontiguousarray(array)
    if (type(None) in types and (np.isnan(array) & ~allowed).any()) or np.isinf(array).any():
        _raise(diagnose())
    narrowed = np.ascontiguousarray(narrow(array, dtype))
    if np.isinf(narrowed).any():
        _raise(_overflow_errors(array, narrowed, where, specs))
    return narrowed


def records_to_batch(records: Any, schema: InputSchema, max_rows: int, field: str = "inputs") -> Batch:
    """A list of ``{feature: value}`` records into a batch for ``schema``."""
    _tabular(schema, field)
    if not isinstance(records, list):
        raise InvalidInput(
            f"{field}: expected a list of records (objects of feature: value), got {describe(records)}",
            field=field,
        )
    rows = len(records)
    check_rows(rows, max_rows, field)
    names = schema.names
    width = len(names)

    def diagnose() -> list[FieldError]:
        return _diagnose(records, schema, field)

    try:
        if any(len(record) != width for record in records):
            _raise(diagnose())
        values = [record[name] for record in records for name in names]
    except (KeyError, TypeError, IndexError):
        _raise(diagnose())

    if schema.layout == "matrix":
        assert schema.tensor_dtype is not None
        matrix = _typed(values, schema.features, schema.tensor_dtype, rows, diagnose,
                        f"{field}[{{row}}].{{name}}")  # fmt: skip
        return Batch(rows=rows, matrix=matrix)
    columns = {}
    for offset, spec in enumerate(schema.features):
        column = _typed(values[offset::width], (spec,), spec.dtype, rows, diagnose,
                        f"{field}[{{row}}].{{name}}")  # fmt: skip
        columns[spec.name] = column.reshape(-1)
    return Batch(rows=rows, columns=columns)


def _diagnose_columns(columns: dict[str, list[Any]], schema: InputSchema, field: str) -> list[FieldError]:
    errors: list[FieldError] = []
    for spec in schema.features:
        for index, value in enumerate(columns[spec.name]):
            problem = _value_error(spec, value)
            if problem:
                errors.append(FieldError(f"{field}.{spec.name}[{index}]", problem))
                if len(errors) > MAX_DETAILS:
                    return errors
    return errors


def columns_to_batch(columns: Any, schema: InputSchema, max_rows: int, field: str = "inputs") -> Batch:
    """An object of ``{feature: [value, ...]}``, one list a feature, into a batch for ``schema``."""
    _tabular(schema, field)
    if not isinstance(columns, dict):
        raise InvalidInput(
            f"{field}: expected an object of feature: list of values, got {describe(columns)}", field=field
        )
    names = schema.names
    known = set(names)
    unknown = itertools.islice((key for key in columns if key not in known), MAX_DETAILS + 1)
    expected = f"unknown feature; expected: {feature_list(schema)}"
    problems = [FieldError(f"{field}.{clipped(key, QUOTED_CHARS)}", expected) for key in unknown]
    problems += [FieldError(f"{field}.{name}", "missing") for name in names if name not in columns]
    problems += [FieldError(f"{field}.{name}", f"expected a list of values, got {describe(columns[name])}")
                 for name in names if name in columns and not isinstance(columns[name], list)]  # fmt: skip
    if problems:
        _raise(problems)
    lengths = collections.Counter(len(columns[name]) for name in names)
    rows = lengths.most_common(1)[0][0]
    if len(lengths) > 1:
        uneven = next(name for name in names if len(columns[name]) != rows)
        raise InvalidInput(
            f"{field}.{uneven}: {len(columns[uneven])} values, but the other features have {rows}",
            field=f"{field}.{uneven}",
        )
    check_rows(rows, max_rows, field)

    def diagnose() -> list[FieldError]:
        return _diagnose_columns(columns, schema, field)

    if schema.layout == "matrix":
        assert schema.tensor_dtype is not None
        values = [value for name in names for value in columns[name]]
        matrix = _typed(values, schema.features, schema.tensor_dtype, rows, diagnose,
                        f"{field}.{{name}}[{{row}}]", by_column=True)  # fmt: skip
        return Batch(rows=rows, matrix=matrix)
    typed = {}
    for spec in schema.features:
        column = _typed(columns[spec.name], (spec,), spec.dtype, rows, diagnose,
                        f"{field}.{{name}}[{{row}}]")  # fmt: skip
        typed[spec.name] = column.reshape(-1)
    return Batch(rows=rows, columns=typed)


def rows_to_batch(
    rows: list[Any], schema: InputSchema, max_rows: int, field: str, names: tuple[str, ...] | None = None
) -> Batch:
    """Rows of values, each a list in the order of ``names`` (the schema's features by default),
    into a batch: the row form of KServe v1 ``instances`` and MLflow's ``dataframe_split``."""
    _tabular(schema, field)
    names = names or schema.names
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(names):
            raise InvalidInput(
                f"{field}[{index}]: expected a list of {len(names)} values (one per feature: "
                f"{', '.join(names[:10])}{', ...' if len(names) > 10 else ''}), got {describe(row)}",
                field=f"{field}[{index}]",
            )
    if len(set(names)) != len(names):
        raise InvalidInput(f"{field}: column names repeat: {list(names)}", field=field)
    check_rows(len(rows), max_rows, field)

    def columns() -> dict[str, list[Any]]:
        return dict(zip(names, map(list, zip(*rows, strict=True)), strict=True))

    if schema.layout == "matrix" and names == schema.names:
        # already the matrix's order: typed row after row, no columns built unless a value is wrong
        assert schema.tensor_dtype is not None
        values = [value for row in rows for value in row]
        matrix = _typed(values, schema.features, schema.tensor_dtype, len(rows),
                        lambda: _diagnose_columns(columns(), schema, field),
                        f"{field}.{{name}}[{{row}}]")  # fmt: skip
        return Batch(rows=len(rows), matrix=matrix)
    return columns_to_batch(columns(), schema, max_rows, field)


def instances_to_batch(instances: Any, schema: InputSchema, max_rows: int, field: str = "inputs") -> Batch:
    """The many shapes apps send rows in: a list of records, a list of value lists, or an object
    of one list a feature."""
    if isinstance(instances, dict):
        return columns_to_batch(instances, schema, max_rows, field)
    if isinstance(instances, list) and instances and isinstance(instances[0], list):
        return rows_to_batch(instances, schema, max_rows, field)
    if isinstance(instances, list):
        return records_to_batch(instances, schema, max_rows, field)
    raise InvalidInput(
        f"{field}: expected a list of records, a list of value lists, or an object of feature: "
        f"list of values; got {describe(instances)}",
        field=field,
    )
