"""``POST /feedback``: ground truth for logged requests, checked item by item, stored once.

Body: ``{"request_id": ..., "ground_truth": ..., "reward": ...}`` for one
request, or ``{"feedback": [{...}, ...]}`` for many. ``ground_truth`` is one
value for a one-row request, else a list with one value a row; ``reward``, a
finite number for the whole request (revenue, a click: what A/B and canary
arms can also be compared on); an item has either or both, sent together.
Each item is answered with
its own status: 200 (stored, or the same value again), 404 (no answered
request has that id), 409 (different feedback is already stored), 422
(malformed, wrong row count, unknown class, not a finite number). A single
item's status is the response's; a list answers 200 when every item is 200,
else 207.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import structlog

from monitoring.records import Feedback, FeedbackTarget
from monitoring.store import FeedbackLog, FeedbackOutcome, RequestLog
from registry.manifest import OutputSpec
from service.errors import MalformedRequest, Overloaded, PayloadTooLarge, ServiceError, clipped, quoted
from service.serving.pool import ModelPool

#: How long to wait for log writers before calling an id unknown: feedback can
#: race the request's own record, which is committed a few milliseconds later.
SETTLE_SECONDS = 0.25
#: what a 503 for feedback the store refused asks the client to wait, in seconds
FEEDBACK_RETRY_AFTER_SECONDS = 5

log = structlog.get_logger("modelgate.feedback")


@dataclass
class Item:
    index: int
    field: str
    request_id: str = ""
    ground_truth: Any = None
    reward: float | None = None
    has_truth: bool = False
    status: int = 200
    message: str = ""

    def refuse(self, status: int, message: str) -> None:
        self.status, self.message = status, message

    def answer(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"request_id": self.request_id or None, "status": self.status}
        if self.status == 200:
            answer["outcome"] = self.message
        else:
            answer["error"] = f"{self.field}: {self.message}"
        return answer


def _finite_number(value: Any) -> bool:
    """A JSON number that is finite (a bool is not one)."""
    return type(value) in (int, float) and math.isfinite(value)


def _parse(body: dict[str, Any], max_items: int) -> tuple[list[Item], bool]:
    """Items from either body shape, with shape errors already set on them; ``single`` shape?"""
    if "feedback" in body:
        extra = set(body) - {"feedback"}
        raw = body["feedback"]
        if extra or not isinstance(raw, list) or not raw:
            raise MalformedRequest('expected {"feedback": [items]} with a non-empty list and nothing else')
        if len(raw) > max_items:
            raise PayloadTooLarge(f"feedback: {len(raw)} items exceed the limit of {max_items}")
        fields = [f"feedback[{i}]" for i in range(len(raw))]
        single = False
    else:
        raw, fields, single = [body], ["feedback"], True
    items = []
    for index, (entry, field) in enumerate(zip(raw, fields, strict=True)):
        item = Item(index, field)
        items.append(item)
        if not isinstance(entry, dict):
            item.refuse(422, "expected an object with request_id and ground_truth or reward")
            continue
        unknown = set(entry) - {"request_id", "ground_truth", "reward"}
        reward = entry.get("reward")
        if unknown:
            name = sorted(unknown)[0]
            item.refuse(422, f"unknown field {quoted(name)}; expected request_id, ground_truth and reward")
        elif not isinstance(entry.get("request_id"), str) or not entry["request_id"]:
            item.refuse(422, "request_id: required, a string")
        elif "ground_truth" not in entry and "reward" not in entry:
            item.request_id = entry["request_id"]
            item.refuse(422, "ground_truth or reward: required (either or both)")
        elif "reward" in entry and not _finite_number(reward):
            item.request_id = entry["request_id"]
            item.refuse(422, f"reward: expected a finite number, got {str(reward)[:64]!r}")
        else:
            item.request_id, item.ground_truth = entry["request_id"], entry.get("ground_truth")
            item.reward = None if reward is None else float(reward)
            item.has_truth = "ground_truth" in entry
    return items, single


def _normalise(truth: Any, target: FeedbackTarget, output: OutputSpec) -> tuple[list[Any] | None, str]:
    """Ground truth as one stored value a row, or why it does not fit the request."""
    if output.kind == "embedding":
        return None, (
            f"ground_truth: {target.model} is an embedding model; it has no truth to measure its quality "
            "against (its outputs' drift is monitored)"
        )
    values = truth if isinstance(truth, list) else [truth]
    if len(values) != target.rows:
        return None, f"ground_truth: {len(values)} values for a request of {target.rows} rows"
    if output.kind == "classification":
        labels = []
        for value in values:
            if type(value) not in (str, int) or str(value) not in output.classes:
                shown = quoted(value) if isinstance(value, str) else repr(value)
                classes = ", ".join(output.classes)
                return None, f"ground_truth: {shown} is not a class of {target.model} ({classes})"
            labels.append(str(value))
        return labels, ""
    if not all(_finite_number(v) for v in values):
        return None, "ground_truth: expected finite numbers for a regression model"
    return [float(v) for v in values], ""


class FeedbackDesk:
    def __init__(self, requests: RequestLog, feedback: FeedbackLog, pool: ModelPool, max_items: int) -> None:
        self.requests = requests
        self.feedback = feedback
        self.pool = pool
        self.max_items = max_items

    def _output_spec(self, target: FeedbackTarget) -> OutputSpec:
        try:
            served = self.pool.cached(target.model, target.version)
        except ServiceError:
            served = None
        if served is not None:
            return served.manifest.output
        return self.pool.registry.manifest(target.model, target.version).output

    async def take(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        items, single = _parse(body, self.max_items)
        wanted = [item for item in items if item.status == 200]
        ids = [item.request_id for item in wanted]
        targets = await anyio.to_thread.run_sync(self.requests.targets, ids)
        if any(i not in targets for i in ids):
            await asyncio.sleep(SETTLE_SECONDS)
            targets.update(
                await anyio.to_thread.run_sync(self.requests.targets, [i for i in ids if i not in targets])
            )
        accepted: list[tuple[Item, Feedback]] = []
        now = time.time()
        for item in wanted:
            target = targets.get(item.request_id)
            if target is None:
                item.refuse(404, f"request_id {quoted(item.request_id)}: no answered request has this id")
                continue
            values = None
            if item.has_truth:
                output = await anyio.to_thread.run_sync(self._output_spec, target)
                values, problem = _normalise(item.ground_truth, target, output)
                if values is None:
                    item.refuse(422, problem)
                    continue
            accepted.append((item, Feedback(item.request_id, values, now, item.reward)))
        if accepted:
            try:
                outcomes = await anyio.to_thread.run_sync(self.feedback.add, [f for _, f in accepted])
            except Exception as exc:  # a full disk, a database gone: nothing stored, say so and when
                log.error("feedback.not_stored", items=len(accepted), error=str(exc))
                raise Overloaded(
                    f"feedback not stored: the prediction log refused it ({clipped(str(exc), 200)}); "
                    "send it again shortly",
                    retry_after=FEEDBACK_RETRY_AFTER_SECONDS,
                ) from exc
            for (item, _), outcome in zip(accepted, outcomes, strict=True):
                if outcome is FeedbackOutcome.CONFLICT:
                    item.refuse(409, "different feedback is already stored for this request")
                else:
                    item.message = outcome.value
        results = [item.answer() for item in items]
        if single:
            return items[0].status, results[0]
        ok = sum(item.status == 200 for item in items)
        return (200 if ok == len(items) else 207), {"accepted": ok, "results": results}
