"""The routing controller: the canary's steps, and the promotion gate.

It runs in the monitor process after each pass. **Canary.** For a model whose routing
policy is ``canary`` (and that has a challenger with a weight above 0), it
judges the challenger on the requests it answered since the policy last
changed: once it has answered ``canary_min_requests`` of them, a share of
errors, plausibility violations per row or a p99 latency over the
champion's past the policy's limits sets the weight to 0 at once; otherwise,
every ``canary_interval_seconds``, the weight grows by ``canary_step`` up to
``canary_max_weight``. Each change is a registry write (audited, actor
``modelgate-canary``) that every gateway picks up; a step down also shows
in the report, where the ``canary`` alert rule sees it.

**Promotion gate** (``auto_promote``, off by default). Once each arm has
``auto_promote_min_samples`` labelled rows in the window, the challenger is
promoted to champion when its quality is significantly better (the
comparison's test) and it is no worse on errors and plausibility
violations (at most one point above the champion's) nor on p99 latency
(at most ``auto_promote_max_latency_ratio`` times the champion's). The
promotion is a registry write (actor ``modelgate-gate``). Every automatic
change, step or promotion, is also announced to the alert webhooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import structlog

from monitoring.report import CanaryState, Comparison, Report, TrafficSummary
from registry.aliases import AuditEntry, RoutingPolicy, fold
from registry.store import Registry, refusal

log = structlog.get_logger("modelgate.canary")

ACTOR = "modelgate-canary"
GATE_ACTOR = "modelgate-gate"
STEPPED_DOWN = "canary stepped down"
#: "no worse" on error rate and violations a row: at most this far above the champion
NO_WORSE_SLACK = 0.01


@dataclass(frozen=True)
class Decision:
    weight: float
    reason: str


def judge(
    policy: RoutingPolicy,
    challenger: TrafficSummary | None,
    champion: TrafficSummary | None,
    since: float,
    now: float,
) -> Decision | None:
    """The new weight, or None to keep it; ``challenger`` and ``champion`` are traffic summaries
    (``monitoring.monitor.traffic_summary``) of the requests since the policy was set."""
    if policy.mode != "canary" or policy.challenger_weight <= 0.0:
        return None
    if challenger is None or challenger["requests"] < policy.canary_min_requests:
        return None  # too little evidence either way
    broken = []
    if challenger["error_rate"] > policy.canary_max_error_rate:
        broken.append(f"error rate {challenger['error_rate']:.1%} > {policy.canary_max_error_rate:.1%}")
    if challenger["violation_rate"] > policy.canary_max_violation_rate:
        broken.append(
            f"plausibility violations {challenger['violation_rate']:.3f} a row > "
            f"{policy.canary_max_violation_rate:g}"
        )
    base, latency = champion["latency_p99_ms"] if champion else None, challenger["latency_p99_ms"]
    if base and latency is not None and latency > policy.canary_max_latency_ratio * base:
        broken.append(
            f"p99 latency {latency:.1f} ms > {policy.canary_max_latency_ratio:g}x "
            f"the champion's {base:.1f} ms"
        )
    if broken:
        return Decision(0.0, f"{STEPPED_DOWN}: " + "; ".join(broken))
    weight = policy.challenger_weight
    if weight < policy.canary_max_weight and now - since >= policy.canary_interval_seconds:
        stepped = round(min(policy.canary_max_weight, weight + policy.canary_step), 6)
        return Decision(
            stepped, f"canary healthy over {challenger['requests']} requests: {weight:g} -> {stepped:g}"
        )
    return None


def gate(policy: RoutingPolicy, comparison: Comparison | None) -> str | None:
    """Why the challenger should be promoted now, or None (see the module's docstring)."""
    quality = comparison["quality"] if comparison else None
    if not policy.auto_promote or comparison is None or quality is None:
        return None
    arms = comparison["arms"]
    challenger = arms.get("shadow" if policy.mode == "shadow" else "challenger")
    champion = arms.get("champion")
    samples = quality["samples"]
    enough = min(samples["champion"], samples["challenger"]) >= policy.auto_promote_min_samples
    if not enough or quality["better"] != "challenger":
        return None
    if challenger is None or champion is None:
        return None
    if challenger["error_rate"] > champion["error_rate"] + NO_WORSE_SLACK:
        return None
    if challenger["violation_rate"] > champion["violation_rate"] + NO_WORSE_SLACK:
        return None
    base, latency = champion["latency_p99_ms"], challenger["latency_p99_ms"]
    if base and latency is not None and latency > policy.auto_promote_max_latency_ratio * base:
        return None
    return (
        f"promotion gate: {quality['metric']} {quality['challenger']:.4g} against {quality['champion']:.4g} "
        f"({quality['test']}, p={quality['p_value']:.2g}, {samples['challenger']} and "
        f"{samples['champion']} labelled rows); errors, plausibility and latency no worse"
    )


class ArmTraffic(Protocol):
    def arm_summary(self, model: str, arm: str, since: float, now: float) -> TrafficSummary | None: ...


class Announcer(Protocol):
    def announce(self, name: str, model: str, summary: str, description: str, now: float) -> None: ...


class RoutingController:
    def __init__(self, registry: Registry, traffic: ArmTraffic, announcer: Announcer | None = None) -> None:
        self.registry = registry
        self.traffic = traffic
        self.announcer = announcer

    def step(self, reports: dict[str, Report], now: float) -> None:
        """Judge each model's canary and gate; add the canary's state to the model's report."""
        for model, report in reports.items():
            try:
                history = self.registry.history(model)  # read once a pass; again after a promotion
                if self._gate(model, history, report, now):
                    history = self.registry.history(model)
                report["canary"] = self._canary(model, history, now)
            except Exception as exc:  # one model's registry trouble must not stop the others
                log.error("routing_control.failed", model=model, error=str(exc))

    def _announce(self, name: str, model: str, summary: str, description: str, now: float) -> None:
        if self.announcer is not None:
            self.announcer.announce(name, model, summary, description, now)

    def _gate(self, model: str, history: list[AuditEntry], report: Report, now: float) -> bool:
        """Promote the challenger when the gate says so, unless its offline evaluation against this
        champion refused it (the live comparison does not overrule that); whether it did."""
        aliases = fold(history)
        reason = gate(aliases.routing, report.get("comparison"))
        if reason is None or aliases.challenger is None:
            return False
        if refusal(history, aliases.challenger, aliases.champion) is not None:
            return False
        entry = self.registry.promote(model, aliases.challenger, "champion", reason=reason, actor=GATE_ACTOR)
        log.warning("gate.promoted", model=model, version=entry.to_version, reason=reason)
        self._announce(
            "ModelPromoted", model, f"{model}: v{entry.to_version} promoted to champion", reason, now
        )
        return True

    def _canary(self, model: str, history: list[AuditEntry], now: float) -> CanaryState | None:
        aliases = fold(history)
        policy = aliases.routing
        if policy.mode != "canary" or aliases.challenger is None:
            return None
        since = history[-1].at.timestamp()  # a route, a promotion or a rollback: judge what came after
        decision = judge(
            policy,
            self.traffic.arm_summary(model, "challenger", since, now),
            self.traffic.arm_summary(model, "champion", since, now),
            since,
            now,
        )
        last = history[-1]
        if decision is not None:
            policy = policy.model_copy(update={"challenger_weight": decision.weight})
            last = self.registry.set_routing(model, policy, reason=decision.reason, actor=ACTOR)
            log.warning("canary.changed", model=model, weight=decision.weight, reason=decision.reason)
            summary = f"{model}: canary challenger weight set to {decision.weight:g}"
            self._announce("CanaryWeightChanged", model, summary, decision.reason, now)
        stepped_down = (
            policy.challenger_weight == 0.0 and last.actor == ACTOR and last.reason.startswith(STEPPED_DOWN)
        )
        return {
            "weight": policy.challenger_weight,
            "max_weight": policy.canary_max_weight,
            "stepped_down": stepped_down,
            "reason": last.reason if last.action == "route" else "",
            "since": last.at.timestamp(),
        }
