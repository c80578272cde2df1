"""Plausibility rules count the rows that break them, inputs and outputs alike."""

from __future__ import annotations

import numpy as np

from monitoring.plausibility import Flag, PlausibilityChecker
from registry.manifest import FeatureSpec, InputRule, InputSchema, OutputRule, PlausibilityRules
from registry.prediction import Prediction

SCHEMA = InputSchema(layout="matrix", tensor_name="X", tensor_dtype="float32",
                     features=(FeatureSpec(name="a", dtype="float32", allow_missing=True),
                               FeatureSpec(name="b", dtype="float32")))  # fmt: skip
RULES = PlausibilityRules(
    inputs={"a": InputRule(min=0, max=10, margin=0.1), "b": InputRule(min=-1, max=1, margin=0)},
    output=OutputRule(classes=("no", "yes"), value_min=0, value_max=100),
)
CHECKER = PlausibilityChecker(SCHEMA, RULES, ("no", "yes"))
GOOD_INPUTS = np.array([[5.0, 0.0], [10.9, 1.0]], dtype=np.float32)


def classify(probabilities, labels=("yes", "no")):
    return Prediction(
        labels=np.array(labels, dtype=object), probabilities=np.array(probabilities, dtype=float)
    )


def test_plausible_batch_has_no_flags():
    assert CHECKER.check(GOOD_INPUTS, None, classify([[0.3, 0.7], [0.9, 0.1]])) == {}


def test_broken_probabilities_are_counted_per_rule():
    flags = CHECKER.check(GOOD_INPUTS, None, classify([[np.nan, 1.0], [1.2, -0.2]], labels=("maybe", "no")))
    assert flags == {"probability_finite": 1, "probability_range": 1, "label_known": 1}
    assert CHECKER.check(GOOD_INPUTS, None, classify([[0.5, 0.6], [0.5, 0.5]])) == {"probability_sum": 1}


def test_regression_values_must_be_finite_and_in_range():
    flags = CHECKER.check(GOOD_INPUTS, None, Prediction(values=np.array([np.inf, 150.0, 50.0])))
    assert flags == {"value_finite": 1, "value_range": 1}


def test_inputs_outside_the_widened_range_and_nulls_are_counted_per_feature():
    inputs = np.array([[11.5, 0.0], [np.nan, 1.5], [-0.5, -2.0]], dtype=np.float32)
    flags = CHECKER.check(inputs, None, classify([[0.5, 0.5]] * 3, labels=("no",) * 3))
    assert flags == {"input_range:a": 1, "input_range:b": 2, "input_missing:a": 1}
    assert Flag.parse("input_range:a") == ("input_range", "a") and Flag.parse("label_known") == (
        "label_known",
        "",
    )
    assert Flag("input_range", "a").key == "input_range:a" and Flag("label_known").key == "label_known"


def test_unseen_categories_are_counted_for_per_feature_models():
    schema = InputSchema(layout="columns", features=(FeatureSpec(name="color", dtype="string"),
                                                     FeatureSpec(name="size", dtype="float32")))  # fmt: skip
    rules = PlausibilityRules(
        inputs={"color": InputRule(domain=("red", "blue")), "size": InputRule(min=0, max=1)},
        output=OutputRule(classes=("no", "yes")),
    )
    checker = PlausibilityChecker(schema, rules, ("no", "yes"))
    columns = {"color": np.array(["red", "pink", "teal"], dtype=object), "size": np.array([0.5, 0.5, 9.0])}
    flags = checker.check(None, columns, classify([[0.5, 0.5]] * 3, labels=("no",) * 3))
    assert flags == {"input_domain:color": 2, "input_range:size": 1}


def test_large_batches_count_the_same_as_small_ones():
    rows = 200
    probabilities = np.tile([0.3, 0.7], (rows, 1))
    probabilities[7] = [0.9, 0.9]
    labels = ["yes"] * rows
    labels[3] = "maybe"
    inputs = np.tile(GOOD_INPUTS[:1], (rows, 1))
    inputs[5, 1] = 3.0
    flags = CHECKER.check(inputs, None, classify(probabilities, labels=labels))
    assert flags == {"probability_sum": 1, "label_known": 1, "input_range:b": 1}


def test_checking_many_batches_at_once_finds_what_checking_each_finds():
    good = (GOOD_INPUTS, None, classify([[0.3, 0.7], [0.9, 0.1]]))
    odd = (np.array([[5.0, 3.0]], dtype=np.float32), None, classify([[0.5, 0.6]], labels=("maybe",)))
    assert CHECKER.check_each([good, good, good]) == [{}, {}, {}]
    assert CHECKER.check_each([good, odd, good]) == [{}, CHECKER.check(*odd), {}]
    assert CHECKER.check(*odd) == {"probability_sum": 1, "label_known": 1, "input_range:b": 1}


def test_a_stack_of_batches_counts_each_rule_within_each_batch():
    odd = (np.array([[5.0, 3.0]], dtype=np.float32), None, classify([[0.5, 0.6]], labels=("maybe",)))
    nulls = (
        np.array([[np.nan, 0.0], [12.0, 0.0], [np.nan, 0.5]], dtype=np.float32),
        None,
        classify([[0.3, 0.7]] * 3, labels=("no",) * 3),
    )
    good = (GOOD_INPUTS, None, classify([[0.3, 0.7], [0.9, 0.1]]))
    batches = [nulls, good, odd, nulls, good]
    assert CHECKER.check_each(batches) == [CHECKER.check(*batch) for batch in batches]
    assert CHECKER.check(*nulls) == {"input_missing:a": 2, "input_range:a": 1}


def test_a_stack_of_regressions_counts_rows_with_any_broken_value():
    two_values = Prediction(values=np.array([[1.0, np.inf], [150.0, 200.0]]))
    one_value = Prediction(values=np.array([[50.0, 50.0]]))
    batches = [(GOOD_INPUTS, None, two_values), (GOOD_INPUTS[:1], None, one_value)]
    assert CHECKER.check_each(batches) == [{"value_finite": 1, "value_range": 1}, {}]
