"""Adaptive batching: concurrent requests for one model version merged into one session run.

Opt-in per model (``MODELGATE_BATCHING``, e.g. ``breast-cancer:64:2``: up to 64
rows, waiting at most 2 ms), as Triton's dynamic batcher, MLServer's adaptive
batching and BentoML's batchable APIs do. A request joins the version's open
batch; the batch runs when it holds the most rows allowed or when its first
request has waited the longest allowed, whichever comes first. One ONNX
Runtime call then answers them all and each request gets its own rows back,
so each is validated, routed, logged and monitored on its own as before. A
request larger than the limit runs alone. Worth it for models whose cost a
call is high next to their cost a row (a graph with many nodes, a GPU); for
a small linear model on the CPU it only adds the wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from registry.prediction import Prediction
from service.serving.pool import ServedVersion
from service.serving.validation import Batch
from service.settings import BatchPolicy


def merged(batches: list[Batch]) -> Batch:
    """The batches' rows, one after another, as one batch (all of one schema)."""
    rows = sum(b.rows for b in batches)
    if batches[0].tensors is not None:  # all of one sample shape (see Batcher.predict)
        tensors = [b.tensors for b in batches if b.tensors is not None]
        columns = [b.columns for b in batches if b.columns is not None]
        return Batch(
            rows=rows,
            tensors={name: np.concatenate([t[name] for t in tensors]) for name in tensors[0]},
            columns={name: np.concatenate([c[name] for c in columns]) for name in columns[0]},
        )
    matrices = [b.matrix for b in batches if b.matrix is not None]
    if matrices:
        return Batch(rows=rows, matrix=np.concatenate(matrices))
    columns = [b.columns for b in batches if b.columns is not None]
    return Batch(rows=rows, columns={name: np.concatenate([c[name] for c in columns]) for name in columns[0]})


def sample_shapes(batch: Batch) -> tuple[tuple[int, ...], ...]:
    """A tensor batch's per-sample shapes (empty for tabular batches, which always merge)."""
    return tuple(t.shape[1:] for t in batch.tensors.values()) if batch.tensors is not None else ()


def rows_of(prediction: Prediction, start: int, stop: int) -> Prediction:
    def part(array: np.ndarray | None) -> np.ndarray | None:
        return None if array is None else array[start:stop]

    return Prediction(
        part(prediction.labels),
        part(prediction.probabilities),
        part(prediction.values),
        part(prediction.embeddings),
    )


@dataclass
class _Waiting:
    batch: Batch
    answer: asyncio.Future[Prediction]


@dataclass
class Batcher:
    """One served version's open batch, on the event loop of one worker."""

    served: ServedVersion
    policy: BatchPolicy
    #: runs one merged batch (inline or in a thread, as the gateway decides for its size)
    run: Callable[[ServedVersion, Batch], Awaitable[Prediction]]
    #: called with each merged run's row count (a metric), when set
    observe: Callable[[int], None] | None = None
    _waiting: list[_Waiting] = field(default_factory=list)
    _rows: int = 0
    _timer: asyncio.TimerHandle | None = None

    async def predict(self, batch: Batch) -> Prediction:
        if batch.rows >= self.policy.max_rows:
            return await self.run(self.served, batch)
        if self._rows + batch.rows > self.policy.max_rows or (
            self._waiting and sample_shapes(self._waiting[0].batch) != sample_shapes(batch)
        ):  # tensors of another sample shape (an input with free dimensions) cannot join the batch
            self._flush()
        answer: asyncio.Future[Prediction] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(batch, answer))
        self._rows += batch.rows
        if self._rows >= self.policy.max_rows:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.policy.max_wait_s, self._flush)
        return await answer

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting, self._rows = self._waiting, [], 0
        if waiting:
            asyncio.get_running_loop().create_task(self._answer(waiting))

    async def _answer(self, waiting: list[_Waiting]) -> None:
        try:
            batch = merged([w.batch for w in waiting])
            if self.observe is not None:
                self.observe(batch.rows)
            prediction = await self.run(self.served, batch)
        except Exception as exc:  # each request fails as it would have alone
            for w in waiting:
                if not w.answer.done():
                    w.answer.set_exception(exc)
            return
        start = 0
        for w in waiting:
            if not w.answer.done():  # a request whose client went away is cancelled
                w.answer.set_result(rows_of(prediction, start, start + w.batch.rows))
            start += w.batch.rows
