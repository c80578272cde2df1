"""The pages (``/ui``) and model cards: read-only views of what the gateway keeps, as HTML (a card
also as Markdown). ``service.ui`` renders them; these handlers gather each view's data."""

from __future__ import annotations

import time
from typing import Any

import anyio.to_thread
import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from monitoring.notify import RECENT_SECONDS
from monitoring.store import HISTORY_SECONDS
from registry.aliases import Aliases, AuditEntry, fold
from registry.errors import RegistryError
from registry.manifest import Manifest
from service.api.context import Context
from service.errors import MalformedRequest, from_registry
from service.ui import pages

MARKDOWN = "text/markdown; charset=utf-8"


def _fragment(request: Request) -> bool:
    return request.query_params.get("fragment") == "1"


def _page(request: Request, template: str, **context: Any) -> Response:
    body = pages.render(template, fragment=_fragment(request), now=time.time(), **context)
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})


async def _report(ctx: Context, name: str) -> dict[str, Any] | None:
    saved = await anyio.to_thread.run_sync(ctx.observed.store.reports.latest, name)
    return None if saved is None else dict(orjson.loads(saved[1]))


async def _history(ctx: Context, name: str) -> tuple[list[dict[str, Any]], float, float]:
    """The model's report summaries kept (up to ``HISTORY_SECONDS``), and the time axis: from a
    minute before the first (the last 10 minutes at least, so a young history is not stretched
    across the chart) to now."""
    end = time.time()
    saved = await anyio.to_thread.run_sync(ctx.observed.store.reports.history, name, end - HISTORY_SECONDS)
    points = [orjson.loads(point) for point in saved]
    start = min(points[0]["ts"] - 60, end - 600) if points else end - HISTORY_SECONDS
    return points, start, end


async def models(ctx: Context, request: Request) -> Response:
    """Every model served: its versions, routing, the monitor's window and the alerts firing."""
    alerts = await anyio.to_thread.run_sync(ctx.observed.store.alerts.since, time.time() - RECENT_SECONDS)
    firing = pages.firing_by_model([a.as_json() for a in alerts if a.status == "firing"])
    rows = []
    for name in ctx.pool.names:
        slots = ctx.pool.slots(name)
        report = await _report(ctx, name)
        traffic = (report or {}).get("traffic") or {}
        rows.append(
            pages.ModelRow(
                name=name,
                champion=slots.champion.version if slots.champion else None,
                challenger=slots.challenger.version if slots.challenger else None,
                routing=slots.routing.mode,
                weight=slots.routing.challenger_weight,
                requests=traffic.get("requests"),
                error_rate=traffic.get("error_rate"),
                drifted=report.get("drifted_features") if report else None,
                firing=sorted(firing.get(name, [])),
                errors=list(slots.errors),
            )
        )
    return _page(request, "models.html", rows=rows, model=None, view=None)


async def drift(ctx: Context, request: Request) -> Response:
    """Each input, output and attribution: reference against window, the test and whether flagged."""
    name = request.path_params["name"]
    ctx.pool.slots(name)  # 404 for a model this gateway does not serve
    report = await _report(ctx, name)
    rows = pages.drift_rows(report) if report else []
    points, start, end = await _history(ctx, name)
    return _page(
        request,
        "drift.html",
        model=name,
        view="drift",
        report=report,
        rows=rows,
        points=points,
        start=start,
        end=end,
    )


async def quality(ctx: Context, request: Request) -> Response:
    """Live quality per version and segment, the label-free estimate, the gate's evidence."""
    name = request.path_params["name"]
    ctx.pool.slots(name)
    points, start, end = await _history(ctx, name)
    over_time = pages.quality_charts(points, start, end)
    evidence = pages.evidence_chart(points, start, end)
    report = await _report(ctx, name)
    return _page(
        request,
        "quality.html",
        model=name,
        view="quality",
        report=report,
        over_time=over_time,
        evidence_over_time=evidence,
    )


async def compare(ctx: Context, request: Request) -> Response:
    """Champion against challenger: traffic, errors and latency per arm, agreement, reasoning."""
    name = request.path_params["name"]
    slots = ctx.pool.slots(name)
    report = await _report(ctx, name)
    routing = slots.routing.mode
    return _page(request, "compare.html", model=name, view="compare", report=report, routing=routing)


async def history(ctx: Context, request: Request) -> Response:
    """The model's audit trail as a timeline, newest first."""
    name = request.path_params["name"]
    ctx.pool.slots(name)
    registry = ctx.pool.registry
    try:
        entries = await anyio.to_thread.run_sync(registry.history, name)
    except RegistryError as exc:
        raise from_registry(exc) from None
    return _page(request, "history.html", model=name, view="history", entries=entries[::-1])


async def card(ctx: Context, request: Request) -> Response:
    """A version's model card: HTML, or Markdown with ``?format=markdown`` or ``Accept: text/markdown``."""
    name, ref = request.path_params["name"], request.path_params["version"]
    wanted = request.query_params.get("format", "")
    if wanted not in ("", "html", "markdown"):
        raise MalformedRequest(f"format must be html or markdown, not {wanted!r}", field="format")
    registry = ctx.pool.registry

    def read() -> tuple[Manifest, list[AuditEntry], Aliases]:
        version = registry.resolve(name, int(ref) if ref.isdigit() else ref)
        entries = registry.history(name)  # read once: the aliases are its fold
        return registry.manifest(name, version), entries, fold(entries)

    try:
        manifest, entries, aliases = await anyio.to_thread.run_sync(read)
    except RegistryError as exc:
        raise from_registry(exc, field="version") from None
    context = pages.card_context(
        manifest,
        entries,
        await _report(ctx, name),
        {"champion": aliases.champion, "challenger": aliases.challenger},
    )
    markdown = wanted == "markdown" or (not wanted and "text/markdown" in request.headers.get("accept", ""))
    if markdown:
        return Response(pages.render("card.md", **context, now=time.time()), media_type=MARKDOWN)
    return _page(request, "card.html", model=name, view="card", **context)
