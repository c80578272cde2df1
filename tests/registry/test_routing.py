"""The routing policy lives in the registry beside the aliases: audited, replayed, refused when it
cannot apply, and set from the command line."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from registry.aliases import RoutingPolicy
from registry.errors import AliasError
from service.cli import main


def test_a_model_starts_with_routing_off(cancer_registry):
    assert cancer_registry.aliases("cancer").routing == RoutingPolicy(mode="off", challenger_weight=0.0)


def test_a_policy_is_stored_audited_and_replayed(cancer_registry):
    before = cancer_registry.history_stamp("cancer")
    cancer_registry.set_routing("cancer", RoutingPolicy(mode="ab", challenger_weight=0.2), reason="try v2",
                                actor="alice")  # fmt: skip
    cancer_registry.set_routing("cancer", RoutingPolicy(mode="shadow"), actor="bob")
    assert cancer_registry.history_stamp("cancer") != before  # what the gateways poll: picked up live
    assert cancer_registry.aliases("cancer").routing.mode == "shadow"
    routed = [e for e in cancer_registry.history("cancer") if e.action == "route"]
    assert [(e.actor, e.reason, e.routing) for e in routed] == [
        ("alice", "try v2", RoutingPolicy(mode="ab", challenger_weight=0.2)),
        ("bob", "", RoutingPolicy(mode="shadow")),
    ]
    assert cancer_registry.aliases("cancer").challenger == 2  # aliases untouched by routing


def test_routing_to_a_challenger_that_does_not_exist_is_refused(registry, cancer_model):
    registry.push(cancer_model.onnx, "solo", cancer_model.reference, actor="tests")
    registry.promote("solo", 1, "champion", actor="tests")
    with pytest.raises(AliasError, match="no challenger to route to"):
        registry.set_routing("solo", RoutingPolicy(mode="ab", challenger_weight=0.1))
    registry.set_routing("solo", RoutingPolicy(mode="off"))  # off needs none
    assert [e.action for e in registry.history("solo")][-1] == "route"


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_a_weight_outside_zero_to_one_is_not_a_policy(weight):
    with pytest.raises(ValidationError):
        RoutingPolicy(mode="ab", challenger_weight=weight)


def test_routing_from_the_command_line(capsys, cancer_registry):
    root = str(cancer_registry.root)
    code = main(["routing", "set", "cancer", "--mode", "ab", "--challenger-weight", "0.2",
                 "--reason", "split test", "--registry", root])  # fmt: skip
    assert code == 0 and "cancer: routing ab, challenger weight 0.2" in capsys.readouterr().out
    assert main(["routing", "show", "cancer", "--json", "--registry", root]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["mode"], shown["challenger_weight"]) == ("ab", 0.2)
    assert main(["registry", "history", "cancer", "--registry", root]) == 0
    assert "route    ab, challenger weight 0.2" in capsys.readouterr().out

    canary = ["--mode", "canary", "--challenger-weight", "0.05", "--step", "0.05", "--every", "10m",
              "--max-weight", "0.3", "--max-error-rate", "0.01",
              "--auto-promote", "--gate-min-samples", "500"]  # fmt: skip
    assert main(["routing", "set", "cancer", *canary, "--registry", root]) == 0
    policy = cancer_registry.aliases("cancer").routing
    assert (policy.canary_step, policy.canary_interval_seconds, policy.canary_max_weight) == (
        0.05,
        600.0,
        0.3,
    )
    assert (
        policy.canary_max_error_rate == 0.01 and "canary, challenger weight 0.05" in capsys.readouterr().out
    )

    with pytest.raises(SystemExit) as refused:
        main(["routing", "set", "cancer", "--mode", "ab", "--challenger-weight", "1.5", "--registry", root])
    assert refused.value.code == 2 and "not a share between 0 and 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["routing", "set", "cancer", "--mode", "split", "--registry", root])
    assert "invalid choice: 'split'" in capsys.readouterr().err
