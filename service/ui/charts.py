"""Charts as inline SVG, drawn on the server: a page reads without JavaScript, a chart is an image
with a text alternative, and nothing is fetched to draw it.

Each chart is a few rectangles and lines, not worth a charting library and the JavaScript it would
make every view depend on; ``<title>`` names a chart and every mark carries its figures in words
(its own ``<title>``, which browsers show on hover and screen readers read).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from markupsafe import Markup

from monitoring.report import Histogram

#: the reference's colour and the window's: a blue and an orange that differ for every common colour
#: vision deficiency (the Okabe-Ito palette), each at contrast >= 3:1 on white (graphics, WCAG 1.4.11)
REFERENCE, WINDOW = "#0072B2", "#D55E00"


def _shares(counts: Sequence[float]) -> list[float]:
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def histogram(hist: Histogram, label: str, width: int = 320, height: int = 120) -> Markup:
    """Reference against window, cell by cell, as shares of each side's rows (bars side by side)."""
    reference, window = _shares(hist["reference"]), _shares(hist["window"])
    cells = len(hist["bins"])
    top = max([*reference, *window, 1e-9])
    slot = width / max(cells, 1)
    bar = max(slot / 2 - 1, 1)
    marks = []
    for i, (name, ref, win) in enumerate(zip(hist["bins"], reference, window, strict=True)):
        for j, (share, colour, side) in enumerate(((ref, REFERENCE, "reference"), (win, WINDOW, "window"))):
            h = share / top * (height - 14)
            x = i * slot + j * bar + 0.5
            marks.append(
                f'<rect x="{x:.1f}" y="{height - 12 - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{escape(name)}: {side} {share:.1%}</title></rect>'
            )
    first, last = escape(hist["bins"][0]), escape(hist["bins"][-1])
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(label)}: reference (blue) against window (orange) over {cells} cells">'
        f"<title>{escape(label)}</title>{''.join(marks)}"
        f'<line x1="0" y1="{height - 12}" x2="{width}" y2="{height - 12}" stroke="#555"/>'
        f'<text x="0" y="{height - 1}" class="tick">{first}</text>'
        f'<text x="{width}" y="{height - 1}" class="tick" text-anchor="end">{last}</text></svg>'
    )


def interval(value: float, low: float, high: float, label: str, width: int = 200) -> Markup:
    """A value on [0, 1] with its interval: a line from low to high, a dot at the value."""

    def x(v: float) -> float:
        return 4 + min(max(v, 0.0), 1.0) * (width - 8)

    return Markup(
        f'<svg class="interval" viewBox="0 0 {width} 16" width="{width}" height="16" role="img" '
        f'aria-label="{escape(label)}: {value:.3f} (95% interval {low:.3f} to {high:.3f})">'
        f'<line x1="4" y1="8" x2="{width - 4}" y2="8" stroke="#767676"/>'
        f'<line x1="{x(low):.1f}" y1="8" x2="{x(high):.1f}" y2="8" stroke="{REFERENCE}" stroke-width="5"/>'
        f'<circle cx="{x(value):.1f}" cy="8" r="4" fill="{WINDOW}"/></svg>'
    )


def evidence(e_value: float, threshold: float, label: str, width: int = 200) -> Markup:
    """An e-value against its threshold on a log scale from 1/threshold to threshold (reached: full)."""
    span = math.log(threshold) * 2
    share = 0.0 if e_value <= 0 else min(max((math.log(e_value) + math.log(threshold)) / span, 0.0), 1.0)
    colour = WINDOW if e_value >= threshold else REFERENCE
    return Markup(
        f'<svg class="evidence" viewBox="0 0 {width} 14" width="{width}" height="14" role="img" '
        f'aria-label="{escape(label)}: e-value {e_value:.3g} of {threshold:.3g} needed">'
        f'<rect x="0" y="2" width="{width}" height="10" fill="none" stroke="#767676"/>'
        f'<rect x="0" y="2" width="{share * width:.1f}" height="10" fill="{colour}"/>'
        f'<line x1="{width / 2}" y1="0" x2="{width / 2}" y2="14" stroke="#333"/></svg>'
    )


#: colours of further lines (Okabe-Ito, after the two above), cycled
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
FLAGGED, QUIET, NO_DATA = "#a4000f", "#767676", "#d0d0d0"
#: a line of at most this many points has each marked
MARKED_POINTS = 60


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M")


def strip(points: Sequence[Mapping[str, Any]], start: float, end: float, width: int = 720) -> Markup:
    """Each minute's drift verdict from ``start`` to ``end``: red where something was flagged, grey
    where nothing was, light grey where the window had too few rows to test."""
    span = max(end - start, 60.0)
    cell = max(width * 60 / span, 1.0)
    marks = []
    for point in points:
        x = (point["ts"] - start) / span * (width - cell)
        drifted = point["drifted"]
        colour = NO_DATA if point["status"] != "ok" else FLAGGED if drifted else QUIET
        said = "too few rows" if point["status"] != "ok" else f"{drifted} flagged"
        marks.append(
            f'<rect x="{x:.1f}" y="0" width="{cell:.1f}" height="18" fill="{colour}">'
            f"<title>{_clock(point['ts'])} UTC: {said}</title></rect>"
        )
    flagged = sum(1 for p in points if p["status"] == "ok" and p["drifted"])
    return Markup(
        f'<svg class="strip" viewBox="0 0 {width} 32" width="{width}" height="32" role="img" '
        f'aria-label="Drift by minute, {_clock(start)} to {_clock(end)} UTC: {flagged} of {len(points)} '
        f'minutes with something flagged">{"".join(marks)}'
        f'<text x="0" y="30" class="tick">{_clock(start)}</text>'
        f'<text x="{width}" y="30" class="tick" text-anchor="end">{_clock(end)} UTC</text></svg>'
    )


def series(
    lines: Sequence[tuple[str, Sequence[tuple[float, float]], bool]],
    start: float,
    end: float,
    label: str,
    band: Sequence[tuple[float, float, float]] = (),
    width: int = 720,
    height: int = 200,
) -> Markup:
    """Lines over time (``(name, [(ts, value)], thin)``, a thin one dashed) on a shared value axis,
    and a ``band`` ``[(ts, low, high)]`` shaded behind them; the axis spans the values shown."""
    values = [v for _, line, _ in lines for _, v in line] + [v for _, lo, hi in band for v in (lo, hi)]
    if not values:
        return Markup("")
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 0.05, high + 0.05
    span = max(end - start, 60.0)
    plot = height - 16

    def xy(ts: float, value: float) -> tuple[float, float]:
        return 40 + (ts - start) / span * (width - 44), 4 + (high - value) / (high - low) * (plot - 8)

    def joined(points: Sequence[tuple[float, float]]) -> str:
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)

    parts = []
    if band:
        outline = [xy(ts, hi) for ts, _, hi in band] + [xy(ts, lo) for ts, lo, _ in reversed(band)]
        parts.append(f'<polygon points="{joined(outline)}" fill="#0072B2" fill-opacity="0.18"/>')
    for i, (name, line, thin) in enumerate(lines):
        colour = PALETTE[i % len(PALETTE)]
        dash = ' stroke-dasharray="4 3"' if thin else ""
        points = [xy(ts, v) for ts, v in line]
        last = line[-1][1] if line else None
        said = f"{escape(name)}: latest {last:.3f}" if last is not None else escape(name)
        parts.append(
            f'<polyline points="{joined(points)}" fill="none" stroke="{colour}" '
            f'stroke-width="{1.5 if thin else 2.5}"{dash}><title>{said}</title></polyline>'
        )
        if len(points) <= MARKED_POINTS:  # few minutes yet: each one marked, a lone one visible
            parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in points]
    return Markup(
        f'<svg class="series" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(label)}, {_clock(start)} to {_clock(end)} UTC">'
        f"<title>{escape(label)}</title>"
        f'<line x1="40" y1="{plot}" x2="{width}" y2="{plot}" stroke="#555"/>'
        f'<text x="36" y="10" class="tick" text-anchor="end">{high:.3g}</text>'
        f'<text x="36" y="{plot - 2}" class="tick" text-anchor="end">{low:.3g}</text>'
        f"{''.join(parts)}"
        f'<text x="40" y="{height - 2}" class="tick">{_clock(start)}</text>'
        f'<text x="{width}" y="{height - 2}" class="tick" text-anchor="end">{_clock(end)} UTC</text></svg>'
    )
