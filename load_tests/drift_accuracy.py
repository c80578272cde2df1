"""Drift accuracy: false alarms on clean windows and detection delay after a change, side by side.

modelgate's side runs the real parts: a classifier trained on the benchmark's 30-feature table is
exported to ONNX and pushed to a registry (its reference profile built by the push), every window's
rows are validated by the gateway's validation (narrowing to float32), predicted by the model,
encoded and written to a real SQLite prediction log, and judged by the monitor (`Monitor.step`,
the report the gateway serves). The peers (Evidently, alibi-detect; `drift_peers.py`) run in a
virtual environment of their own on the same rows, made from the same seeds (`drift_data.py`).

    python load_tests/drift_accuracy.py --peers-python /path/to/peers/bin/python --out results.md

Measured:
- false alarms: the share of clean windows of 100, 200, 500 and 1,000 rows in which any feature (or,
  for modelgate, any prediction output) is called drifted;
- detection delay: rows after the change until the changed feature is called drifted, the window
  being the last 1,000 rows, checked every 50 rows, for up to 3,000 rows;
- a simulated day at low traffic (300 single-row requests an hour, the window never filling):
  alerts fired by the shipped alert rules (`for: 5m`) from clean traffic.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import drift_data as data
from bench import machine

from monitoring.alerts import AlertConfig, AlertEngine, conditions
from monitoring.monitor import Monitor
from monitoring.records import RequestRecord
from monitoring.sink import encode
from monitoring.store.sqlite import open_sqlite
from monitoring.windows import WindowSettings
from registry.manifest import Manifest
from registry.onnx_model import OnnxModel, load_session
from registry.store import Registry
from service.serving.validation import records_to_batch

#: rows a request carries in the false-alarm windows and streams (the day sends single rows)
REQUEST_ROWS = 10


def train(directory: Path) -> tuple[Path, Path]:
    """A logistic regression on the benchmark table (imputed, scaled, one-hot), as one ONNX input a
    feature, and the reference it was trained on (parquet: the exact float64 values)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = data.reference()
    labels = data.target(frame, np.random.default_rng(1))
    categorical = list(data.CATEGORIES)
    pipeline = make_pipeline(
        ColumnTransformer(
            [
                ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), data.NUMERIC),
                ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
            ]
        ),
        LogisticRegression(max_iter=1000),
    ).fit(frame, labels)
    types = [(c, FloatTensorType([None, 1])) for c in data.NUMERIC]
    types += [(c, StringTensorType([None, 1])) for c in categorical]
    proto = to_onnx(pipeline, initial_types=types, options={id(pipeline.steps[-1][1]): {"zipmap": False}},
                    target_opset={"": 17, "ai.onnx.ml": 3})  # fmt: skip
    model, reference = directory / "model.onnx", directory / "reference.parquet"
    model.write_bytes(proto.SerializeToString())
    frame[list(data.NUMERIC) + categorical].to_parquet(reference)
    return model, reference


class Gateway:
    """The gateway's request path without HTTP: validate, predict, record; then the log and the monitor."""

    def __init__(self, manifest: Manifest, model_bytes: bytes, log_path: Path,
                 settings: WindowSettings) -> None:  # fmt: skip
        session = load_session(model_bytes, intra_op_threads=1)
        self.manifest = manifest
        self.model = OnnxModel(session, manifest.inputs, manifest.output)
        self.store = open_sqlite(log_path)
        self.monitor = Monitor(
            self.store.requests,
            self.store.feedback,
            self.store.reports,
            lambda name, version: manifest,
            settings,
        )

    def send(self, frame: pd.DataFrame, ts: float, rows: int = REQUEST_ROWS, spacing: float = 0.001) -> float:
        """The frame's rows as requests of ``rows`` rows from ``ts``; the time after the last one."""
        records = []
        for start in range(0, len(frame), rows):
            inputs = [
                {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
                for row in frame.iloc[start : start + rows].to_dict(orient="records")
            ]
            batch = records_to_batch(inputs, self.manifest.inputs, max_rows=10_000)
            prediction = self.model.predict(self.model.feeds(batch.columns, batch.matrix))
            record = RequestRecord(
                request_id=uuid.uuid4().hex, ts=ts, route="predict", status=200, latency_ms=1.0,
                model=self.manifest.name, version=self.manifest.version, rows=batch.rows,
                features=self.manifest.inputs.names, matrix=batch.matrix, columns=batch.columns,
                prediction=prediction, classes=self.manifest.output.classes,
            )  # fmt: skip
            records.append(record)
            ts += spacing
        self.store.requests.write(encode(records))
        return ts

    def judge(self, now: float) -> dict:
        self.monitor.tail(now)
        (report,) = self.monitor.reports(now).values()
        return dict(report)


def drifted(report: dict) -> set[str]:
    """Inputs and outputs called drifted."""
    return {f["name"] for f in report["features"] if f["drifted"]}


@dataclass
class Results:
    """What each detector found: per window size, windows with any alarm; per scenario, delays."""

    false_alarms: dict[str, dict[int, list[bool]]]
    delays: dict[str, dict[str, list[int | None]]]
    versions: dict[str, str]


def run_modelgate(manifest: Manifest, model_bytes: bytes, runs: int, delay_runs: int, work: Path) -> Results:
    alarms: dict[int, list[bool]] = {}
    for size in data.WINDOW_SIZES:
        settings = WindowSettings(max_rows=size, max_age_seconds=100)
        gateway = Gateway(manifest, model_bytes, work / f"fa-{size}.db", settings)
        for run in range(runs):
            ts = run * 1000.0
            gateway.send(data.clean_window(size, run), ts)
            alarms.setdefault(size, []).append(bool(drifted(gateway.judge(ts + 10))))
        gateway.store.close()
    delays: dict[str, list[int | None]] = {}
    for index, scenario in enumerate(data.SCENARIOS):
        gateway = Gateway(manifest, model_bytes, work / f"delay-{index}.db",
                          WindowSettings(max_rows=data.WINDOW, max_age_seconds=1e5))  # fmt: skip
        for run in range(delay_runs):
            rows = data.stream(index, run)
            ts = gateway.send(rows.iloc[: data.WINDOW], run * 1e6)
            found = None
            for after in data.checks():
                ts = gateway.send(rows.iloc[data.WINDOW + after - data.STEP : data.WINDOW + after], ts)
                if scenario.feature in drifted(gateway.judge(ts)):
                    found = after
                    break
            delays.setdefault(scenario.name, []).append(found)
        gateway.store.close()
    return Results({"modelgate": alarms}, {"modelgate": delays}, {})


def low_traffic_day(manifest: Manifest, model_bytes: bytes, work: Path, hours: float = 24,
                    per_hour: int = 300, seed: int = 5) -> dict:  # fmt: skip
    """Clean single-row traffic at ``per_hour`` requests an hour (Poisson arrivals), the monitor passing
    every 10 simulated seconds with the gateway's default window (1,000 rows, an hour), the shipped
    alert rules on its reports."""
    rng = np.random.default_rng(seed)
    gateway = Gateway(manifest, model_bytes, work / "day.db", WindowSettings())
    rules = AlertConfig.load().rules
    engine = AlertEngine(rules)
    arrivals = np.cumsum(rng.exponential(3600 / per_hour, size=int(hours * per_hour * 1.2)))
    arrivals = arrivals[arrivals < hours * 3600]
    rows = data.generate(arrivals.size, rng)
    fired: list[dict] = []
    sent, passes, tested, smallest = 0, 0, 0, None
    for now in np.arange(10.0, hours * 3600 + 10, 10.0):
        upto = int(np.searchsorted(arrivals, now))
        for i in range(sent, upto):
            gateway.send(rows.iloc[i : i + 1], float(arrivals[i]), rows=1)
        sent = upto
        if not sent:
            continue
        report = gateway.judge(float(now))
        passes += 1
        if report["status"] == "ok":
            tested += 1
            smallest = min(smallest or 1.0, min(f["p_adjusted"] for f in report["features"]))
        held = conditions(rules, report)
        for alert in engine.evaluate(held, {manifest.name}, float(now)):
            if alert.status == "firing":
                fired.append({"alert": alert.labels["alertname"], "at_hour": round(float(now) / 3600, 2)})
    gateway.store.close()
    return {"hours": hours, "requests": sent, "passes": passes, "tested_passes": tested,
            "smallest_p_adjusted": smallest, "fired": fired}  # fmt: skip


def run_peers(python: str, runs: int, delay_runs: int) -> Results:
    script = Path(__file__).with_name("drift_peers.py")
    out = subprocess.run([python, str(script), "--runs", str(runs), "--delay-runs", str(delay_runs)],
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    found = json.loads(out)
    return Results(
        {d: {int(k): v for k, v in sizes.items()} for d, sizes in found["false_alarms"].items()},
        found["delays"],
        found["versions"],
    )


def summary(delays: list[int | None], within: int) -> tuple[str, str, str]:
    """Median delay (undetected counted as never), share within ``within`` rows, share detected."""
    values = np.array([d if d is not None else np.inf for d in delays], dtype=float)
    median = np.median(values)
    return (
        "never" if not np.isfinite(median) else f"{int(median):,}",
        f"{np.mean(values <= within):.0%}",
        f"{np.mean(np.isfinite(values)):.0%}",
    )


def lines(results: Results, runs: int, delay_runs: int, day: dict | None) -> Iterator[str]:
    detectors = list(results.false_alarms)
    yield f"# Drift accuracy, {datetime.date.today().isoformat()}"
    yield ""
    yield f"Machine: {machine()}."
    peers = ", ".join(f"{name} {v}" for name, v in results.versions.items())
    yield f"Peers: {peers or 'none'}. Command: `python load_tests/drift_accuracy.py {' '.join(sys.argv[1:])}`"
    yield ""
    yield f"### False alarms: share of clean windows with any drift called ({runs} windows a size)"
    yield ""
    yield "| window rows | " + " | ".join(detectors) + " |"
    yield "| --- |" + " --- |" * len(detectors)
    for size in data.WINDOW_SIZES:
        cells = []
        for d in detectors:
            flags = results.false_alarms[d][size]
            cells.append(f"{np.mean(flags):.1%} ({sum(flags)})")
        yield f"| {size:,} | " + " | ".join(cells) + " |"
    yield ""
    yield (f"### Detection delay: rows after the change until the changed feature is called drifted "
           f"({delay_runs} runs; window = last {data.WINDOW:,} rows, checked every {data.STEP} rows, "
           f"up to {data.HORIZON:,})")  # fmt: skip
    yield ""
    yield "| change | detector | median rows | within 2,000 | within 3,000 (detected) |"
    yield "| --- | --- | --- | --- | --- |"
    for scenario in data.SCENARIOS:
        for d in detectors:
            median, within, detected = summary(results.delays[d][scenario.name], 2000)
            yield f"| {scenario.name} | {d} | {median} | {within} | {detected} |"
    if day is not None:
        yield ""
        yield (f"### A simulated day at low traffic: {day['requests']:,} single-row requests over "
               f"{day['hours']:g} h, a monitor pass every 10 s ({day['passes']:,} passes, "
               f"{day['tested_passes']:,} with enough rows to test), shipped alert rules")  # fmt: skip
        yield ""
        smallest = day["smallest_p_adjusted"]
        yield f"- alerts fired: {len(day['fired'])} {day['fired'] or ''}".rstrip()
        yield f"- smallest adjusted drift p-value seen in any pass: {smallest:.3g}" if smallest else ""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=500, help="clean windows of each size")
    parser.add_argument("--delay-runs", type=int, default=50, help="streams of each change")
    parser.add_argument("--peers-python", help="python of a venv with evidently and alibi-detect")
    parser.add_argument("--day-hours", type=float, default=24.0, help="hours of the quiet day (0: skip)")
    parser.add_argument("--out", type=Path, help="also write the tables here (markdown)")
    args = parser.parse_args()

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, reference = train(work)
        manifest = Registry(work / "registry").push(model, "bench", reference, actor="drift-bench")
        model_bytes = model.read_bytes()
        results = run_modelgate(manifest, model_bytes, args.runs, args.delay_runs, work)
        print(f"modelgate judged in {time.monotonic() - started:.0f} s", file=sys.stderr)
        if args.peers_python:
            peers = run_peers(args.peers_python, args.runs, args.delay_runs)
            results.false_alarms.update(peers.false_alarms)
            results.delays.update(peers.delays)
            results.versions.update(peers.versions)
            print(f"peers judged; {time.monotonic() - started:.0f} s in all", file=sys.stderr)
        day = low_traffic_day(manifest, model_bytes, work, args.day_hours) if args.day_hours else None
    text = "\n".join(lines(results, args.runs, args.delay_runs, day)) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
