"""The prediction log as a pandas table for analysts: one row per predicted row."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from monitoring.records import Feedback, LoggedRequest

if TYPE_CHECKING:
    import pandas as pd

DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w`` in seconds."""
    match = DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30m, 24h or 7d")
    return float(match.group(1)) * SECONDS[match.group(2)]


def parse_since(text: str, now: float) -> float:
    """A point in time: a duration back from ``now`` (``24h``) or an ISO date/time (UTC if no zone)."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration (24h, 7d) nor an ISO date/time") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def prediction_table(
    records: Iterable[LoggedRequest],
    feedback: Mapping[str, Feedback],
    classes: Callable[[str, int], tuple[str, ...]],
) -> pd.DataFrame:
    """Requests exploded to rows: request fields, one column a feature (for a tensor model, a
    summary of its inputs), ``prediction`` (label or value) or ``embedding`` (a vector),
    ``probability_<class>`` for classifiers, and ``ground_truth`` once feedback arrived.
    A refused request is one row with its ``error`` and no features."""
    import pandas as pd  # here: the monitor process imports this module and exports only on a trigger

    rows: list[dict[str, Any]] = []
    for record in records:
        base = {
            "request_id": record.request_id,
            "time": record.ts,
            "model": record.model,
            "version": record.version,
            "arm": record.arm,
            "route": record.route,
            "status": record.status,
            "latency_ms": record.latency_ms,
            "error": record.error,
        }
        if record.inputs is None or record.outputs is None or record.model is None or record.version is None:
            rows.append({**base, "row": None})
            continue
        truth = feedback.get(record.request_id)
        outputs = record.outputs
        names = classes(record.model, record.version) if "probabilities" in outputs else ()
        for i in range(record.rows):
            row = {**base, "row": i, **{feature: values[i] for feature, values in record.inputs.items()}}
            if "value" in outputs:
                row["prediction"] = outputs["value"][i]
            elif "embedding" in outputs:
                row["embedding"] = outputs["embedding"][i]
            else:
                row["prediction"] = outputs["label"][i]
                row.update(zip((f"probability_{c}" for c in names), outputs["probabilities"][i], strict=True))
            row["ground_truth"] = truth.ground_truth[i] if truth is not None and truth.ground_truth else None
            rows.append(row)
    table = pd.DataFrame.from_records(rows)
    if not table.empty:
        table["time"] = pd.to_datetime(table["time"], unit="s", utc=True)
        table["row"] = table["row"].astype("Int64")
        table["version"] = table["version"].astype("Int64")
    return table
