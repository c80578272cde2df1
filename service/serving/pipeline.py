"""The prediction pipeline: resolve the version that answers, run it, mirror it to a shadow
challenger, and record the request. Protocol handlers parse and answer; this does the rest."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio.to_thread

from monitoring.plausibility import Flag
from monitoring.records import RequestRecord
from registry.aliases import Arm, LogPolicy
from registry.prediction import Prediction
from service.errors import Implausible, ServiceError
from service.serving.batching import Batcher
from service.serving.observability import Observability
from service.serving.pool import ModelPool, ServedVersion
from service.serving.routing import to_challenger
from service.serving.shadow import ShadowJob
from service.serving.validation import Batch
from service.settings import BatchPolicy, Settings

if TYPE_CHECKING:
    from monitoring.metrics import GatewayMetrics

#: a request's inputs parsed for one version's schema (the answering one, or a shadow challenger)
Parse = Callable[[ServedVersion], Batch]


@dataclass
class Exchange:
    """What the pipeline learned about one request, for its answer and its record in the log."""

    served: ServedVersion | None = None
    arm: Arm = "champion"
    batch: Batch | None = None
    prediction: Prediction | None = None
    #: plausibility, when checked on the request path (a rule that refuses is configured)
    flags: dict[str, int] | None = None

    def resolved(self, served: ServedVersion, arm: Arm) -> ServedVersion:
        self.served = served
        self.arm = arm
        return served

    def headers(self, rid: str) -> dict[str, str]:
        """The headers every prediction answer carries: its request id and the arm that answered."""
        return {"x-request-id": rid, "x-modelgate-arm": self.arm}


def request_record(
    request_id: str,
    ts: float,
    route: str,
    status: int,
    latency_ms: float,
    arm: Arm,
    served: ServedVersion | None,
    batch: Batch | None,
    prediction: Prediction | None,
    error: str | None,
    flags: dict[str, int] | None = None,
    policy: LogPolicy | None = None,
) -> RequestRecord:
    """One request's record, answered or not; the writer checks plausibility when ``flags`` is None."""
    return RequestRecord(
        request_id=request_id, ts=ts, route=route, status=status, latency_ms=latency_ms,
        model=served.name if served else None, version=served.version if served else None, arm=arm,
        rows=batch.rows if batch else 0, features=served.feature_names if served else (),
        matrix=batch.matrix if batch else None, columns=batch.columns if batch else None,
        prediction=prediction, error=error, flags=flags or {},
        classes=served.manifest.output.classes if served else (),
        checker=served.checker if served and prediction is not None and flags is None else None,
        policy=policy,
    )  # fmt: skip


class Pipeline:
    """One process's prediction path over its model pool; ``observability`` None when monitoring is off."""

    def __init__(self, settings: Settings, pool: ModelPool, observability: Observability | None) -> None:
        self.settings = settings
        self.pool = pool
        self.observability = observability
        self.rejected_rules = settings.rejected_rules
        self.batch_policies = settings.batch_policies
        self.batchers: dict[tuple[str, int], Batcher] = {}
        #: built at start-up, in the worker: see monitoring.metrics on why not at import
        self.metrics: GatewayMetrics | None = None
        #: set to explain answered requests in the loop: (request id, ts, arm, version, batch)
        self.explain: Callable[[str, float, Arm, ServedVersion, Batch], None] | None = None

    async def version_served(self, name: str, version: int | None) -> ServedVersion:
        """The champion, or a pinned version (loaded in a thread the first time)."""
        if version is None:
            return self.pool.champion(name)
        cached = self.pool.cached(name, version)
        if cached is not None:
            return cached
        return await anyio.to_thread.run_sync(self.pool.load_pinned, name, version)

    async def resolve(
        self, exchange: Exchange, name: str, version: int | None, key: str | None
    ) -> ServedVersion:
        """A pinned version answers as pinned, bypassing any split; else the champion, or the
        challenger when the model's routing policy sends this request (by ``key``) there."""
        if version is not None:
            return exchange.resolved(await self.version_served(name, version), "pinned")
        slots = self.pool.slots(name)
        champion = self.pool.champion(name)
        if slots.challenger is not None and to_challenger(slots.routing, name, key):
            return exchange.resolved(slots.challenger, "challenger")
        return exchange.resolved(champion, "champion")

    async def predict(self, rid: str, exchange: Exchange, route: str, parse: Parse) -> Prediction:
        """Parse the request's inputs for the version it resolved, predict, and in shadow mode
        offer them to the challenger (parsed for its schema)."""
        assert exchange.served is not None
        exchange.batch = parse(exchange.served)
        prediction = await self.run(exchange)
        self.mirror(rid, exchange, route, parse)
        return prediction

    async def run(self, exchange: Exchange) -> Prediction:
        """Predict. Plausibility is checked here only when a rule refuses requests (422 when one
        is broken); otherwise the log writer checks, off the request path."""
        served, batch = exchange.served, exchange.batch
        assert served is not None and batch is not None
        policy = self.batch_policies.get(served.name)
        if policy is None:
            prediction = await self._predict(served, batch)
        else:
            prediction = await self._batcher(served, policy).predict(batch)
        exchange.prediction = prediction
        if self.observability is None or not self.rejected_rules:
            return prediction
        exchange.flags = served.checker.check(batch.matrix, batch.columns, prediction)
        rejected = [key for key in exchange.flags if Flag.parse(key).rule in self.rejected_rules]
        if rejected:
            broken = ", ".join(f"{key} ({exchange.flags[key]} rows)" for key in rejected)
            raise Implausible(f"implausible, refused by policy: {broken}", field=rejected[0])
        return prediction

    async def _predict(self, served: ServedVersion, batch: Batch) -> Prediction:
        """On the event loop when the version should be done within ``inline_ms``, else in a thread."""
        if batch.rows * served.row_ms <= self.settings.inline_ms:
            return served.predict(batch)
        return await anyio.to_thread.run_sync(served.predict, batch)

    def _batcher(self, served: ServedVersion, policy: BatchPolicy) -> Batcher:
        """The version's batcher; a new one when the version was loaded again."""
        key = (served.name, served.version)
        batcher = self.batchers.get(key)
        if batcher is None or batcher.served is not served:
            metrics = self.metrics
            observe = None if metrics is None else metrics.batch_rows.labels(served.name).observe
            batcher = self.batchers[key] = Batcher(served, policy, self._predict, observe)
        return batcher

    def mirror(self, rid: str, exchange: Exchange, route: str, parse: Parse) -> None:
        """In shadow mode, offer the challenger the champion's inputs, off the response path."""
        served = exchange.served
        if self.observability is None or served is None or exchange.arm != "champion":
            return
        slots = self.pool.slots(served.name)
        challenger = slots.challenger
        if slots.routing.mode != "shadow" or challenger is None:
            return
        batch = exchange.batch if challenger.manifest.inputs == served.manifest.inputs else None
        self.observability.shadow.offer(
            ShadowJob(rid, time.time(), route, challenger, batch, parse, slots.log_policy)
        )

    def record(
        self, rid: str, route: str, exchange: Exchange, ts: float, started: float, status: int,
        error: str | None,
    ) -> asyncio.Future[bool] | None:  # fmt: skip
        """Queue the request's record; with ``MODELGATE_LOG_ACK=committed``, an answered request's
        record comes with a future resolved once it is committed, which its answer waits for."""
        assert self.observability is not None
        durable = self.settings.log_ack == "committed" and status == 200
        committed = asyncio.get_running_loop().create_future() if durable else None
        latency_ms = (time.perf_counter() - started) * 1000
        served = exchange.served
        policy = self.pool.slots(served.name).log_policy if served is not None else None
        self.observability.sink.put(
            request_record(rid, ts, route, status, latency_ms, exchange.arm, served, exchange.batch,
                           exchange.prediction, error, exchange.flags, policy),
            committed,
        )  # fmt: skip
        batch = exchange.batch
        if self.explain is not None and served is not None and batch is not None and status == 200:
            self.explain(rid, ts, exchange.arm, served, batch)
        return committed

    def loggable(self, exchange: Exchange, exc: ServiceError) -> str:
        """What the logs may say of a refusal: its message, or, where the model's log policy hashes or
        drops any feature, only where it was wrong (a message may quote a value sent)."""
        served = exchange.served
        if served is None or exc.field is None:
            return exc.message
        slots = self.pool.slots(served.name) if served.name in self.pool.names else None
        if slots is None or slots.log_policy is None or not slots.log_policy.fields:
            return exc.message
        return f"{exc.field}: invalid (details not logged: the model's log policy governs its features)"
