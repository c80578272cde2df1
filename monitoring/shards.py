"""Which monitor looks after which model, when several share the work (``MODELGATE_MONITOR_SHARDS``).

One monitor process reads and tests every model's traffic; with many models,
one process is the deployment's ceiling. With ``shards`` > 1 the models are
split among that many monitors, each holding the lease of its shard
(``monitoring.store.MonitorLease``), started by whichever gateway workers,
on whichever replicas, find a shard without one. A model belongs to shard
``crc32(name) % shards``: the same in every process and across restarts, so
a model's windows, evidence and alerts are always one monitor's. Shard 0's
monitor also delivers the alert outbox, so that each notification has one
sender.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Shard:
    """One monitor's share of the models: shard ``index`` of ``count``."""

    index: int = 0
    count: int = 1
    _owned: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"monitor shard {self.index} is not one of 0..{self.count - 1}")

    def owns(self, model: str) -> bool:
        """Whether this monitor looks after ``model`` (remembered: asked once a record)."""
        owned = self._owned.get(model)
        if owned is None:
            owned = self._owned[model] = zlib.crc32(model.encode()) % self.count == self.index
        return owned

    @property
    def delivers(self) -> bool:
        """Whether this monitor delivers the outbox's notifications (shard 0's does)."""
        return self.index == 0
