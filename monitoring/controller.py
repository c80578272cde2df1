"""The routing controller: the canary's steps, and the promotion gate.

It runs in the monitor process after each pass. Both decisions are taken
again on every pass, thousands of times a day, so both read evidence that
stays valid however often it is read (``monitoring.sequential``): e-values
accumulated since the decision's subject was set, never a window's p-value.

**Canary.** For a model whose routing policy is ``canary`` (and that has a
challenger with a weight above 0), the monitor counts, from when the routing
was last set by anyone but the canary itself (its own steps do not restart
the count), the canary's requests and failures, its rows with a
plausibility violation, and requests of the two arms matched in arrival
order (``monitoring.compare.CanaryContest``). Once it has answered
``canary_min_requests``, any of four checks whose e-value reaches
``4 / canary_alpha`` sets the weight to 0 at once: the canary's error rate
above ``canary_max_error_rate``; its odds of failing a request above
``canary_max_error_ratio`` times the champion's; its share of rows with a
violation above ``canary_max_violation_rate``; its latency above
``canary_max_latency_ratio`` times the champion's in more than half of the
matched requests. A canary healthy on every limit is stepped down with a
chance of at most ``canary_alpha`` over its whole run (Ville's inequality,
Bonferroni over the four). Otherwise, every ``canary_interval_seconds``,
the weight grows by ``canary_step`` up to ``canary_max_weight``. Each change
is a registry write (audited, actor ``modelgate-canary``) that every gateway
picks up; a step down also shows in the report, where the ``canary`` alert
rule sees it.

**Promotion gate** (``auto_promote``, off by default). The challenger is
promoted to champion once the evidence since the two versions met
(``monitoring.compare.QualityContest``: e-values over contests of labelled
rows, or with ``auto_promote_on: reward`` of rewarded requests) names it
better, each arm has ``auto_promote_min_samples`` rows in it, and it is
no worse on errors and plausibility violations (at most one point above the
champion's) nor on p99 latency (at most
``auto_promote_max_latency_ratio`` times the champion's) over the window.
A challenger no better than the champion is promoted with a chance of at
most ``MODELGATE_COMPARE_ALPHA / 2`` however long the two run; the window's
"no worse" conditions can only hold a promotion back. The promotion is a
registry write (actor ``modelgate-gate``). Every automatic change, step or
promotion, is also announced to the alert webhooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import structlog

from monitoring.compare import CanaryContest
from monitoring.report import CanaryCheck, CanaryState, Comparison, Report
from registry.aliases import AuditEntry, RoutingPolicy, fold
from registry.store import Registry, refusal

log = structlog.get_logger("modelgate.canary")

ACTOR = "modelgate-canary"
GATE_ACTOR = "modelgate-gate"
STEPPED_DOWN = "canary stepped down"
#: the audit actions that change what a canary is (which versions, which limits)
SETS_ROUTING = ("promote", "rollback", "route")
#: "no worse" on error rate and violations a row: at most this far above the champion
NO_WORSE_SLACK = 0.01


@dataclass(frozen=True)
class Decision:
    weight: float
    reason: str


def checks(policy: RoutingPolicy, contest: CanaryContest) -> dict[str, CanaryCheck]:
    return contest.checks(
        policy.canary_max_error_rate,
        policy.canary_max_error_ratio,
        policy.canary_max_violation_rate,
        policy.canary_max_latency_ratio,
    )


def _broken(name: str, check: CanaryCheck, policy: RoutingPolicy) -> str:
    """What a conclusive check found, in words."""
    against, total = check["against"], check["against"] + check["in_favour"]
    share = against / max(total, 1)
    if name == "error_rate":
        return f"error rate {share:.1%} > {policy.canary_max_error_rate:.1%} over {total} requests"
    if name == "error_ratio":
        return (
            f"errors over {policy.canary_max_error_ratio:g}x the champion's: the canary alone failed in "
            f"{against} of the {total} matched requests where one arm failed"
        )
    if name == "violation_rate":
        return f"plausibility violations {share:.3f} a row > {policy.canary_max_violation_rate:g}"
    return (
        f"latency over {policy.canary_max_latency_ratio:g}x the champion's in {against} of {total} "
        "matched requests"
    )


def judge(policy: RoutingPolicy, contest: CanaryContest | None, since: float, now: float) -> Decision | None:
    """The new weight, or None to keep it; ``contest``: the canary's counts since its routing was set
    (``since``: when the weight last changed, which the next step waits an interval from)."""
    if policy.mode != "canary" or policy.challenger_weight <= 0.0:
        return None
    if contest is None or contest.requests["challenger"] < policy.canary_min_requests:
        return None  # too little evidence either way
    found = checks(policy, contest)
    threshold = len(found) / policy.canary_alpha
    broken = [_broken(name, check, policy) for name, check in found.items() if check["e_value"] >= threshold]
    if broken:
        return Decision(0.0, f"{STEPPED_DOWN}: " + "; ".join(broken))
    weight = policy.challenger_weight
    if weight < policy.canary_max_weight and now - since >= policy.canary_interval_seconds:
        stepped = round(min(policy.canary_max_weight, weight + policy.canary_step), 6)
        return Decision(
            stepped,
            f"canary healthy over {contest.requests['challenger']} requests: {weight:g} -> {stepped:g}",
        )
    return None


def gate(policy: RoutingPolicy, comparison: Comparison | None, champion: int | None,
         challenger: int | None) -> str | None:  # fmt: skip
    """Why the challenger should be promoted now, or None (see the module's docstring); ``champion``
    and ``challenger``: the versions the aliases name, which the evidence must be about."""
    if not policy.auto_promote or comparison is None:
        return None
    evidence = comparison["reward" if policy.auto_promote_on == "reward" else "evidence"]
    if evidence is None:
        return None
    if (evidence["champion_version"], evidence["challenger_version"]) != (champion, challenger):
        return None
    samples = evidence["samples"]
    enough = min(samples["champion"], samples["challenger"]) >= policy.auto_promote_min_samples
    if not enough or evidence["better"] != "challenger":
        return None
    arms = comparison["arms"]
    challenger_arm = arms.get("shadow" if policy.mode == "shadow" else "challenger")
    champion_arm = arms.get("champion")
    if challenger_arm is None or champion_arm is None:
        return None
    if challenger_arm["error_rate"] > champion_arm["error_rate"] + NO_WORSE_SLACK:
        return None
    if challenger_arm["violation_rate"] > champion_arm["violation_rate"] + NO_WORSE_SLACK:
        return None
    base, latency = champion_arm["latency_p99_ms"], challenger_arm["latency_p99_ms"]
    if base and latency is not None and latency > policy.auto_promote_max_latency_ratio * base:
        return None
    won, metric = evidence["contests"], evidence["metric"].replace("_", " ")
    unit = "rewarded requests" if metric == "reward" else "labelled rows"
    return (
        f"promotion gate: on {metric}, the challenger won {won['challenger']} of the "
        f"{won['challenger'] + won['champion']} {unit} where the arms differed "
        f"(e-value {evidence['e_value']['challenger']:.3g} >= {evidence['threshold']:g}, "
        f"{samples['challenger']} and {samples['champion']} {unit}); "
        "errors, plausibility and latency no worse"
    )


class CanaryCounts(Protocol):
    def canary(self, model: str, since: float) -> CanaryContest | None: ...


class Announcer(Protocol):
    def announce(self, name: str, model: str, summary: str, description: str, now: float) -> None: ...


class RoutingController:
    def __init__(self, registry: Registry, traffic: CanaryCounts, announcer: Announcer | None = None) -> None:
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
        reason = gate(aliases.routing, report.get("comparison"), aliases.champion, aliases.challenger)
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
        # the weight's last change (a step waits an interval from it) and the routing's last setting by
        # anyone but the canary (a route, a promotion, a rollback: the checks count what came after)
        since = history[-1].at.timestamp()
        operator = next(
            (e for e in reversed(history) if e.action in SETS_ROUTING and e.actor != ACTOR), history[-1]
        ).at.timestamp()
        contest = self.traffic.canary(model, operator)
        decision = judge(policy, contest, since, now)
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
        found = checks(policy, contest) if contest is not None else {}
        evidence = contest.evidence(found, len(found) / policy.canary_alpha) if contest else None
        return {
            "weight": policy.challenger_weight,
            "max_weight": policy.canary_max_weight,
            "stepped_down": stepped_down,
            "reason": last.reason if last.action == "route" else "",
            "since": last.at.timestamp(),
            "evidence": evidence,
        }
