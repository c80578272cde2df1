"""Aliases (champion, challenger), the routing policy and the log policy as a fold over the append-only
audit history."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from registry.evaluation import Evaluation

Alias = Literal["champion", "challenger"]
ALIASES: tuple[Alias, ...] = ("champion", "challenger")
#: Who made a prediction: the answering champion, the challenger answering its share of a split,
#: a version the request pinned, or the challenger mirroring the champion's traffic (not answering).
Arm = Literal["champion", "challenger", "pinned", "shadow"]
RoutingMode = Literal["off", "shadow", "ab", "canary"]
ROUTING_MODES: tuple[RoutingMode, ...] = ("off", "shadow", "ab", "canary")


class RoutingPolicy(BaseModel):
    """How a model's requests are shared between champion and challenger.

    ``off``: the champion answers everything. ``shadow``: the champion
    answers, the challenger sees the same inputs off the response path.
    ``ab``: the challenger answers ``challenger_weight`` of the requests.
    ``canary``: as ``ab``, starting from ``challenger_weight``; the monitor
    adds ``canary_step`` every ``canary_interval_seconds`` while the
    challenger stays healthy, up to ``canary_max_weight``, and sets the
    weight to 0 (and fires an alert) as soon as the evidence that it breaks a
    limit is conclusive (``monitoring.controller``). A policy other than
    ``off`` applies while the model has a challenger.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: RoutingMode = "off"
    challenger_weight: float = Field(default=0.0, ge=0.0, le=1.0)
    canary_step: float = Field(default=0.1, gt=0.0, le=1.0)
    canary_interval_seconds: float = Field(default=300.0, gt=0.0)
    canary_max_weight: float = Field(default=0.5, gt=0.0, le=1.0)
    #: the challenger is judged once it answered this many requests since the routing was set ...
    canary_min_requests: int = Field(default=50, ge=1)
    #: ... and is unhealthy past any of these: its share of requests not answered 200, ...
    canary_max_error_rate: float = Field(default=0.05, ge=0.0, le=1.0)
    #: ... its odds of failing a request over the champion's (matched requests), ...
    canary_max_error_ratio: float = Field(default=1.0, gt=0.0)
    #: ... its share of rows with a plausibility violation, ...
    canary_max_violation_rate: float = Field(default=0.05, ge=0.0)
    #: ... and its latency over the champion's (in most matched requests)
    canary_max_latency_ratio: float = Field(default=1.5, gt=0.0)
    #: the chance, at most, that a canary healthy on every limit is ever stepped down
    canary_alpha: float = Field(default=0.01, gt=0.0, lt=1.0)
    #: the promotion gate: promote the challenger by itself once, over at least
    #: ``auto_promote_min_samples`` labelled rows a arm, it is better on quality by the sequential
    #: evidence since it met the champion and no worse on errors and plausibility (within a point)
    #: nor on p99 latency (within this ratio)
    auto_promote: bool = False
    #: what the gate judges on: live quality from ground truth, or the business reward ``POST
    #: /feedback`` carries (A/B and canary only: in shadow, only the champion's answer earns one)
    auto_promote_on: Literal["quality", "reward"] = "quality"
    auto_promote_min_samples: int = Field(default=200, ge=1)
    auto_promote_max_latency_ratio: float = Field(default=1.2, gt=0.0)


FieldAction = Literal["keep", "hash", "drop"]
FIELD_ACTIONS: tuple[FieldAction, ...] = ("keep", "hash", "drop")


class LogPolicy(BaseModel):
    """What the prediction log keeps of a model's requests (``monitoring.redaction`` applies it).

    ``fields``: an input feature's values kept as sent (the default), ``hash``ed (an HMAC-SHA256 of
    the value under the gateway's ``MODELGATE_LOG_HASH_KEY``: equal values stay equal, so a person's
    records can still be found and counted, but the value cannot be read back) or ``drop``ped
    (left out). ``payload_rate``: the share of requests whose inputs and outputs are kept at all
    (chosen by request id, the same in every process); the others are logged without them.
    Plausibility is checked before either, on the values as sent.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    fields: dict[str, FieldAction] = {}
    payload_rate: float = Field(default=1.0, ge=0.0, le=1.0)

    def governed(self, action: FieldAction) -> frozenset[str]:
        return frozenset(name for name, chosen in self.fields.items() if chosen == action)


class Erasure(BaseModel):
    """What an ``erase`` entry removed from the monitoring store: counts, never the values."""

    model_config = ConfigDict(frozen=True)

    #: ``subject FIELD`` or ``request_id``
    by: str
    records: int
    feedback: int


class Trigger(BaseModel):
    """What a ``retrain`` entry started: the alert that fired and the action its rule names."""

    model_config = ConfigDict(frozen=True)

    alertname: str
    fingerprint: str
    #: ``webhook URL`` or ``command ARGS``
    target: str
    #: rows of the window exported with it
    window_rows: int


class AuditEntry(BaseModel):
    """One line of a model's history: who did what, when, from which version to which, and why."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    seq: int
    at: datetime
    actor: str
    action: Literal["push", "promote", "rollback", "route", "evaluate", "retrain", "govern", "erase"]
    alias: Alias | None = None
    from_version: int | None = Field(default=None, alias="from")
    to_version: int | None = Field(default=None, alias="to")
    reason: str = ""
    #: the policy a ``route`` entry set
    routing: RoutingPolicy | None = None
    #: what an ``evaluate`` entry found (its ``to`` is the candidate version)
    evaluation: Evaluation | None = None
    #: what a ``retrain`` entry started (its ``to`` is the version alerted on)
    trigger: Trigger | None = None
    #: the log policy a ``govern`` entry set
    log_policy: LogPolicy | None = None
    #: what an ``erase`` entry removed
    erasure: Erasure | None = None
    #: the SHA-256 (hex) of the previous line of the history as written (of no bytes for the first):
    #: a chain in which an edited, inserted or deleted line breaks the link after it
    #: (``registry.store.broken_links``). None in entries written before the chain
    prev: str | None = None


class Aliases(BaseModel):
    """Where each alias points now. ``champion_stack`` holds every champion still rollback-able."""

    model_config = ConfigDict(frozen=True)

    champion: int | None = None
    challenger: int | None = None
    champion_stack: tuple[int, ...] = ()
    routing: RoutingPolicy = RoutingPolicy()
    log_policy: LogPolicy = LogPolicy()

    def get(self, alias: Alias) -> int | None:
        return self.champion if alias == "champion" else self.challenger


def fold(entries: list[AuditEntry]) -> Aliases:
    """Replay the history. Promoting the current challenger to champion clears the challenger."""
    stack: list[int] = []
    challenger: int | None = None
    routing, log_policy = RoutingPolicy(), LogPolicy()
    for entry in entries:
        if entry.action == "promote" and entry.alias == "champion":
            assert entry.to_version is not None
            stack.append(entry.to_version)
            if challenger == entry.to_version:
                challenger = None
        elif entry.action == "promote" and entry.alias == "challenger":
            challenger = entry.to_version
        elif entry.action == "rollback":
            stack.pop()
        elif entry.action == "route" and entry.routing is not None:
            routing = entry.routing
        elif entry.action == "govern" and entry.log_policy is not None:
            log_policy = entry.log_policy
    return Aliases(
        champion=stack[-1] if stack else None,
        challenger=challenger,
        champion_stack=tuple(stack),
        routing=routing,
        log_policy=log_policy,
    )
