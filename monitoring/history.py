"""A report in brief: what the pages draw over time, kept one a minute (``ReportStore.history``)."""

from __future__ import annotations

from monitoring.report import EvidencePoint, HistoryPoint, Report, VersionPoint, metric_value

#: segments kept a version: the first ones the report lists (a point stays a few hundred bytes)
MAX_SEGMENTS = 8


def point_of(report: Report) -> HistoryPoint:
    """The report's drift verdict, traffic, quality per version and segment, estimate and evidence."""
    quality = []
    for measured in report["quality"]:
        metric: str = "accuracy" if "accuracy" in measured else "mae"
        if metric not in measured:
            continue
        quality.append(
            VersionPoint(
                version=measured["version"],
                samples=measured["samples"],
                metric="accuracy" if metric == "accuracy" else "mae",
                value=metric_value(measured, metric),
                segments={
                    f"{s['feature']} {s['segment']}": metric_value(s, metric)
                    for s in measured["segments"][:MAX_SEGMENTS]
                },
            )
        )
    estimate = report["estimated_quality"]
    comparison = report["comparison"]
    evidence = comparison["evidence"] if comparison else None
    return HistoryPoint(
        ts=report["computed_at"],
        version=report["version"],
        status=report["status"],
        drifted=report["drifted_features"],
        alerting=report.get("alerting_features"),
        requests=report["traffic"]["requests"],
        error_rate=report["traffic"]["error_rate"],
        estimated=[estimate["accuracy"], estimate["low"], estimate["high"]] if estimate else None,
        quality=quality,
        evidence=EvidencePoint(
            champion=evidence["e_value"]["champion"],
            challenger=evidence["e_value"]["challenger"],
            threshold=evidence["threshold"],
        )
        if evidence
        else None,
    )
