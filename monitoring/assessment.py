"""The report on one model version's window: drift of every input and output against the version's
reference, plausibility, live quality once labelled, and the label-free quality estimate."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import numpy as np

from monitoring.baseline import Reference, reference
from monitoring.drift import decide, drift_of
from monitoring.estimate import expected_accuracy
from monitoring.mmd import embedding_drift
from monitoring.plausibility import Flag
from monitoring.quality import classification_quality, regression_quality, segment_of
from monitoring.records import LoggedRequest
from monitoring.report import (
    AttributionReport,
    DriftStatistic,
    EstimatedQuality,
    PlausibilityEntry,
    Quality,
    SegmentQuality,
    VersionReport,
)
from monitoring.windows import Labelled, Window, WindowSettings, column, flag_totals, outputs
from registry.aliases import LogPolicy
from registry.manifest import EmbeddingProfile, HourDistribution, Manifest


def quality(manifest: Manifest, window: Window[Labelled], segments: tuple[str, ...] = ()) -> Quality:
    """Live quality of one version over the labelled window: overall, and per segment of each of
    ``segments`` (input features) the version has."""
    requests = [entry.request for entry in window.requests]
    truth = np.concatenate([np.asarray(entry.truth, dtype=object) for entry in window.requests])
    classification = manifest.output.kind == "classification"
    if classification:
        labels, probabilities = outputs(requests, "label"), outputs(requests, "probabilities")
        classes = manifest.output.classes
        measured = classification_quality(truth, labels, probabilities, classes)
    else:
        values = outputs(requests, "value")
        measured = regression_quality(truth, values)
    by_segment: list[SegmentQuality] = []
    for feature in segments:
        # a feature the log does not hold for every request (a log policy dropped it, or kept no
        # payload for some) cannot split them
        if feature not in manifest.reference.features or any(
            feature not in (r.inputs or {}) for r in requests
        ):
            continue
        names = segment_of(manifest.reference.features[feature], column(requests, feature, numeric=False))
        for name in dict.fromkeys(names):  # in order of first appearance
            rows = names == name
            part = (
                classification_quality(truth[rows], labels[rows], probabilities[rows], classes)
                if classification
                else regression_quality(truth[rows], values[rows])
            )
            by_segment.append({"feature": feature, "segment": str(name), **part})
    return {**measured, "segments": sorted(by_segment, key=lambda s: (s["feature"], s["segment"]))}


def estimated_quality(manifest: Manifest, window: Window[LoggedRequest]) -> EstimatedQuality | None:
    """A classifier's accuracy on the window as its calibrated probabilities predict it, before any
    ground truth (see ``monitoring.estimate``); None for a regressor or an empty window."""
    if manifest.output.kind != "classification":
        return None
    probabilities = outputs(window.requests, "probabilities")
    if not probabilities.size:
        return None
    labels = outputs(window.requests, "label").astype(str)
    measured = expected_accuracy(labels, probabilities, manifest.output.classes, manifest.calibration)
    return {"version": manifest.version, "method": "cbpe", **measured}


def references(manifest: Manifest) -> dict[str, Reference]:
    """What each input feature (at the dtype its model receives) and prediction output is tested
    against, with its hours of the day where the reference had a time column; built once per version."""
    by_hour = manifest.reference.by_hour

    def hours(name: str) -> dict[str, HourDistribution]:
        return {hour: slices[name] for hour, slices in by_hour.items() if name in slices}

    found = {
        spec.name: reference(manifest.reference.features[spec.name], spec.dtype, hours(spec.name))
        for spec in manifest.inputs.features
    }
    return found | {
        name: reference(profile, by_hour=hours(name))
        for name, profile in manifest.reference.predictions.items()
        if not isinstance(profile, EmbeddingProfile)  # tested as a whole, see monitoring.mmd
    }


def row_times(requests: list[LoggedRequest]) -> np.ndarray:
    """When each row of the requests was sent."""
    return np.repeat(np.array([r.ts for r in requests], dtype=np.float64), [r.rows for r in requests])


def drift_statistics(
    manifest: Manifest,
    window: Window[LoggedRequest],
    settings: WindowSettings,
    refs: dict[str, Reference],
    unlogged: frozenset[str] = frozenset(),
) -> list[DriftStatistic]:
    """Every input feature and prediction output of the window against the version's reference
    (``refs``: its :func:`references`), but the features the log policy keeps out (``unlogged``)."""
    statistics: list[DriftStatistic] = []
    seasonal = bool(manifest.reference.by_hour)  # each row's time, to compare it with the same hours
    with_inputs = [r for r in window.requests if r.inputs]
    times = row_times(with_inputs) if seasonal else None
    for spec in manifest.inputs.features:
        if spec.name in unlogged:
            continue
        values = column(window.requests, spec.name, numeric=spec.dtype != "string")
        statistics += drift_of(spec.name, "feature", refs[spec.name], values, settings.min_rows, times)
    if manifest.output.kind == "classification":
        labels = outputs(window.requests, "label").astype(str).astype(object)
        statistics += drift_of("label", "prediction", refs["label"], labels, settings.min_rows)
        probabilities = outputs(window.requests, "probabilities")
        if probabilities.size:
            answered = [r for r in window.requests if r.outputs and "probabilities" in r.outputs]
            times = row_times(answered) if seasonal else None
            for index, cls in enumerate(manifest.output.classes):
                name = f"probability:{cls}"
                values = probabilities[:, index]
                statistics += drift_of(name, "prediction", refs[name], values, settings.min_rows, times)
    elif manifest.output.kind == "embedding":
        vectors = outputs(window.requests, "embedding").astype(np.float64)
        profile = manifest.reference.predictions["embedding"]
        assert isinstance(profile, EmbeddingProfile)
        if vectors.size:
            found = embedding_drift(
                "embedding", "prediction", np.array(profile.sample), vectors, settings.min_rows
            )
            statistics += [found] if found is not None else []
            norms = np.linalg.norm(vectors, axis=1)
            statistics += drift_of(
                "embedding_norm", "prediction", refs["embedding_norm"], norms, settings.min_rows
            )
    else:
        values = outputs(window.requests, "value")
        answered = [r for r in window.requests if r.outputs and "value" in r.outputs]
        times = row_times(answered) if seasonal else None
        statistics += drift_of("value", "prediction", refs["value"], values, settings.min_rows, times)
    return decide(statistics, settings.alpha, settings.min_effect)


def too_few(window: Window[LoggedRequest], settings: WindowSettings) -> str:
    """Why a window is not tested, and what to do about it."""
    return (
        f"{window.rows} rows in the window (the last {settings.max_age_seconds:g} s, sampled to at most "
        f"{settings.max_rows} rows); drift is tested from {settings.min_rows} rows. With little traffic, "
        "a longer MODELGATE_WINDOW_SECONDS gathers enough rows"
    )


def report(
    manifest: Manifest,
    window: Window[LoggedRequest],
    settings: WindowSettings,
    now: float,
    refs: dict[str, Reference],
    policy: LogPolicy | None = None,
) -> VersionReport:
    """The JSON-ready report on one model version's window; ``policy``: what the log keeps of its
    requests (a feature hashed or dropped is not tested for drift: the log holds no values of it
    to compare with the reference; plausibility is checked on the values as sent all the same)."""
    enough = window.rows >= settings.min_rows
    unlogged = policy.governed("hash") | policy.governed("drop") if policy is not None else frozenset()
    statistics = drift_statistics(manifest, window, settings, refs, unlogged) if enough else []
    plausibility: list[PlausibilityEntry] = []
    for key, violations in sorted(flag_totals(window.requests).items()):
        rule, feature = Flag.parse(key)
        entry: PlausibilityEntry = {
            "rule": rule,
            "feature": feature or None,
            "violations": violations,
            "rate": violations / max(window.rows, 1),
        }
        if rule == "input_missing":
            limit = manifest.plausibility.inputs[feature].max_missing_rate
            entry.update({"limit": limit, "breached": entry["rate"] > limit})
        plausibility.append(entry)
    return {
        "model": manifest.name,
        "version": manifest.version,
        "computed_at": now,
        "status": "ok" if enough else "insufficient_data",
        "reason": None if enough else too_few(window, settings),
        "window": {
            "rows": window.rows,
            "seen_rows": window.seen_rows,
            "requests": len(window.requests),
            "max_rows": settings.max_rows,
            "max_age_seconds": settings.max_age_seconds,
            "oldest": window.requests[0].ts if window.requests else None,
            "newest": window.last_seen or None,
        },
        "alerting_features": sum(s["drifted"] and s["p_adjusted"] < settings.alert_alpha for s in statistics),
        "thresholds": {
            "alpha": settings.alpha,
            "alert_alpha": settings.alert_alpha,
            "min_effect": settings.min_effect,
            "min_rows": settings.min_rows,
            "correction": "benjamini-hochberg",
        },
        "estimated_quality": estimated_quality(manifest, window),
        "drifted_features": sum(s["drifted"] for s in statistics),
        "features": statistics,
        "plausibility": plausibility,
        "not_logged": {name: policy.fields[name] for name in sorted(unlogged)} if policy is not None else {},
    }


def importances(records: Iterable[LoggedRequest], feature: str) -> np.ndarray:
    """One feature's importance over explanation records (decoded), row after row."""
    parts = [r.outputs["attributions"][feature] for r in records if r.outputs and "attributions" in r.outputs]
    return np.asarray(list(itertools.chain.from_iterable(parts)), dtype=np.float64)


def attributions(
    manifest: Manifest, window: Window[LoggedRequest], settings: WindowSettings, now: float
) -> AttributionReport | None:
    """The window of the version's explanations against its reference attributions (None: no
    explanation in the window). Tested like the inputs (``drift_of``), in a family of their own."""
    window.trim(now)
    if not window.requests:
        return None
    records = [r.decoded() for r in window.requests]
    refs = manifest.reference.attributions
    values = {name: importances(records, name) for name in manifest.inputs.names}
    statistics: list[DriftStatistic] = []
    if refs and window.rows >= settings.min_rows:
        for name, found in values.items():
            if name in refs:
                statistics += drift_of(name, "attribution", reference(refs[name]), found, settings.min_rows)
        statistics = decide(statistics, settings.alpha, settings.min_effect)
    return {
        "method": manifest.reference.attribution_method,
        "rows": window.rows,
        "mean_importance": {name: float(v.mean()) if v.size else 0.0 for name, v in values.items()},
        "reference_mean_importance": {name: float(p.mean or 0.0) for name, p in refs.items()},
        "features": statistics,
        "drifted_features": sum(s["drifted"] for s in statistics),
        "alerting_features": sum(s["drifted"] and s["p_adjusted"] < settings.alert_alpha for s in statistics),
    }
