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


@pytest.fixture(params=["sqlite", "postgres"])
def served_log(request, cancer_registry, cancer_model):
    """Three answered requests (one with feedback) and one refused, written to the log: the SQLite file
    in the registry, or a PostgreSQL database. Returns the command-line arguments naming them."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else ""
    rows = cancer_model.frame.iloc[:3].to_dict(orient="records")
    settings = Settings(registry=cancer_registry.root, poll_interval=3600, log_url=url)
    with TestClient(create_app(settings)) as client:
        client.post("/predict", json={"inputs": rows[:2]}, headers={"X-Request-ID": "two"})
        client.post("/predict", json={"inputs": rows[2:]}, headers={"X-Request-ID": "one"})
        client.post("/predict", json={"inputs": rows[:1], "version": 2}, headers={"X-Request-ID": "pinned"})
        client.post("/predict", json={"inputs": [{}]}, headers={"X-Request-ID": "refused"})
        client.post("/feedback", json={"request_id": "two", "ground_truth": ["benign", "malignant"]})
    return ["--registry", str(cancer_registry.root), *(["--log", url] if url else [])]


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_export_gives_one_row_per_prediction_with_ground_truth(served_log, tmp_path, capsys, suffix):
    output = tmp_path / f"cancer.{suffix}"
    assert main(["log", "export", "--model", "cancer", "-o", str(output), *served_log]) == 0
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
    root = served_log
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
    assert main([*args, *served_log]) == 1
    assert message in capsys.readouterr().err


def test_no_log_yet_is_said_plainly(cancer_registry, capsys):
    assert main(["log", "prune", "--older-than", "1d", "--registry", str(cancer_registry.root)]) == 1
    assert "no prediction log at" in capsys.readouterr().err


def test_an_unreachable_postgresql_is_said_plainly(cancer_registry, capsys):
    url = "postgresql://modelgate:secret@127.0.0.1:1/modelgate?connect_timeout=1"
    assert main(["log", "prune", "--older-than", "1d", "--log", url]) == 1
    error = capsys.readouterr().err
    assert "cannot connect to PostgreSQL at postgresql://modelgate:***@127.0.0.1:1/modelgate" in error
    assert "secret" not in error and "Traceback" not in error


def test_durations_and_times():
    assert parse_duration("90s") == 90 and parse_duration("2w") == 14 * 86400
    assert parse_since("1h", now=10_000) == 6_400
    assert parse_since("2026-01-01T00:00:00", now=0) == parse_since("2026-01-01T00:00:00+00:00", now=0)
