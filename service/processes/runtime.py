"""Process-wide tuning shared by the gateway's worker and its helper processes."""

from __future__ import annotations

import gc

#: allocations before a young collection, and collections before each older one is collected
GC_THRESHOLDS = (20_000, 20, 50)


def tune_garbage_collector() -> None:
    """Freeze what start-up allocated and collect the young generation less often.

    A worker starts with over half a million objects (BentoML, OpenTelemetry,
    scipy, the models); every full collection walked them all, for 100-200 ms
    with the event loop stopped: that, not the model, was the p95 of a
    single-row request. Frozen, they are never walked again. A request makes
    short-lived objects only, freed by reference counting; a larger first
    threshold just lets cycles wait a little longer. The monitor process
    does the same: its windows are long-lived objects too.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
