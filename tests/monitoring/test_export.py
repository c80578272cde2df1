"""Analysts get the prediction log as a table; retention prunes it."""

from __future__ import annotations

import time

import pandas as pd
import pytest
from starlette.testclient import TestClient

from monitoring.export import parse_duration, parse_since
from service.app import create_app
from service.cli import main
from service.settings import Settings


@pytest.fixture
def served_log(cancer_registry, cancer_model):
    """Three answered requests (one with feedback) and one refused, written to the log."""
    rows = cancer_model.frame.iloc[:3].to_dict(orient="records")
    with TestClient(create_app(Settings(registry=cancer_registry.root, poll_interval=3600))) as client:
        client.post("/predict", json={"inputs": rows[:2]}, headers={"X-Request-ID": "two"})
        client.post("/predict", json={"inputs": rows[2:]}, headers={"X-Request-ID": "one"})
        client.post("/predict", json={"inputs": rows[:1], "version": 2}, headers={"X-Request-ID": "pinned"})
        client.post("/predict", json={"inputs": [{}]}, headers={"X-Request-ID": "refused"})
        client.post("/feedback", json={"request_id": "two", "ground_truth": ["benign", "malignant"]})
    return cancer_registry


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_export_gives_one_row_per_prediction_with_ground_truth(served_log, tmp_path, capsys, suffix):
    output = tmp_path / f"cancer.{suffix}"
    assert (
        main(["log", "export", "--model", "cancer", "-o", str(output), "--registry", str(served_log.root)])
        == 0
    )
    assert "wrote 5 rows (4 requests of cancer)" in capsys.readouterr().out
    table = pd.read_parquet(output) if suffix == "parquet" else pd.read_csv(output)
    assert list(table["request_id"]) == ["two", "two", "one", "pinned", "refused"]
    refused = table.iloc[-1]
    assert refused["status"] == 422 and "missing" in refused["error"] and pd.isna(refused["row"])
    table = table.iloc[:-1]
    assert list(table["row"]) == [0, 1, 0, 0]
    assert list(table["version"]) == [1, 1, 1, 2]
    assert {
        "mean_radius",
        "prediction",
        "probability_benign",
        "probability_malignant",
        "ground_truth",
    } <= set(table)
    assert (
        list(table["ground_truth"].iloc[:2]) == ["benign", "malignant"]
        and table["ground_truth"].iloc[2:].isna().all()
    )
    assert (table["probability_benign"] + table["probability_malignant"]).round(5).eq(1).all()


def test_export_since_and_prune(served_log, tmp_path, capsys):
    output = tmp_path / "recent.csv"
    root = ["--registry", str(served_log.root)]
    assert (
        main(["log", "export", "--model", "cancer", "--since", "2000-01-01", "-o", str(output), *root]) == 0
    )
    assert main(["log", "export", "--model", "cancer", "--since", "1s", "-o", str(output), *root]) == 0
    time.sleep(1.1)
    assert main(["log", "export", "--model", "cancer", "--since", "1s", "-o", str(output), *root]) == 0
    assert "wrote 0 rows" in capsys.readouterr().out.splitlines()[-1]
    assert main(["log", "prune", "--older-than", "1s", *root]) == 0
    assert "pruned 4 requests and 1 feedback entries" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["log", "export", "--model", "cancer", "-o", "x.xlsx"], "use a .csv or .parquet"),
        (["log", "export", "--model", "cancer", "--since", "yesterday", "-o", "x.csv"], "neither a duration"),
        (["log", "prune", "--older-than", "forever"], "not a duration"),
    ],
)
def test_bad_log_arguments_are_one_clear_line(served_log, capsys, args, message):
    assert main([*args, "--registry", str(served_log.root)]) == 1
    assert message in capsys.readouterr().err


def test_no_log_yet_is_said_plainly(cancer_registry, capsys):
    assert main(["log", "prune", "--older-than", "1d", "--registry", str(cancer_registry.root)]) == 1
    assert "no prediction log at" in capsys.readouterr().err


def test_durations_and_times():
    assert parse_duration("90s") == 90 and parse_duration("2w") == 14 * 86400
    assert parse_since("1h", now=10_000) == 6_400
    assert parse_since("2026-01-01T00:00:00", now=0) == parse_since("2026-01-01T00:00:00+00:00", now=0)
