"""``modelgate simulate``: demo traffic and ground truth for a running gateway, optionally drifted.

Rows come from scikit-learn's breast-cancer data (what the demo model was
trained on), drawn with replacement; ``--drift FEATURE=SHIFT`` adds SHIFT
standard deviations of FEATURE to every row sent. Each answered request's
true diagnosis is sent back to ``POST /feedback``, in batches, so live
quality moves too. At the end it prints what the gateway's monitor saw: the
drifted features and the alerts, waiting up to ``--wait`` seconds for one to
fire.
With ``--loop`` it then follows the model's audit trail while an alert's action
retrains, evaluates and promotes (the demo's rules start
``service/cli/retrain_demo.py`` on drift), and prints that loop.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pandas as pd
from tqdm import tqdm

from registry.aliases import AuditEntry
from registry.demo import snake_case
from registry.store import Registry

FEEDBACK_BATCH = 200


@dataclass
class Outcome:
    answered: int = 0
    failed: list[str] = field(default_factory=list)
    feedback: int = 0
    feedback_refused: list[str] = field(default_factory=list)


def parse_drift(specs: list[str], columns: pd.Index) -> dict[str, float]:
    """``["mean_texture=3"]`` -> ``{"mean_texture": 3.0}``; a clear ValueError for anything else."""
    shifts = {}
    for spec in specs:
        name, sep, raw = spec.partition("=")
        if not sep:
            raise ValueError(f"--drift {spec}: expected FEATURE=SHIFT, e.g. mean_texture=3")
        if name not in columns:
            raise ValueError(f"--drift {spec}: no feature {name!r}; features: {', '.join(columns)}")
        try:
            shifts[name] = float(raw)
        except ValueError:
            raise ValueError(f"--drift {spec}: SHIFT must be a number of standard deviations") from None
    return shifts


def demo_rows() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    labels = data.target.map(dict(enumerate(data.target_names)))
    return data.data.rename(columns=snake_case), labels


async def send(
    url: str, model: str, frame: pd.DataFrame, truth: pd.Series, requests: int, batch: int,
    concurrency: int, seed: int,
) -> Outcome:  # fmt: skip
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(frame), size=(requests, batch))
    outcome = Outcome()
    pending: list[dict[str, Any]] = []
    tickets = iter(range(requests))
    progress = tqdm(total=requests, unit="req", desc="simulate")

    async def flush(client: httpx.AsyncClient) -> None:
        items, pending[:] = pending[:], []
        if not items:
            return
        response = await client.post("/feedback", json={"feedback": items})
        results = response.json().get("results", []) if response.status_code in (200, 207) else []
        outcome.feedback += sum(1 for r in results if r.get("status") == 200)
        outcome.feedback_refused += [r.get("error", "") for r in results if r.get("status") != 200]
        if not results:
            outcome.feedback_refused.append(f"{response.status_code}: {response.text[:200]}")

    async def worker(client: httpx.AsyncClient) -> None:
        for i in tickets:
            rows = frame.iloc[picks[i]]
            try:
                response = await client.post(
                    "/predict", json={"model": model, "inputs": rows.to_dict(orient="records")}
                )
            except httpx.HTTPError as exc:
                outcome.failed.append(repr(exc))
            else:
                if response.status_code == 200:
                    outcome.answered += 1
                    truth_rows = truth.iloc[picks[i]].tolist()
                    ground_truth = truth_rows[0] if batch == 1 else truth_rows
                    pending.append(
                        {"request_id": response.json()["request_id"], "ground_truth": ground_truth}
                    )
                    if len(pending) >= FEEDBACK_BATCH:
                        await flush(client)
                else:
                    outcome.failed.append(f"{response.status_code}: {response.text[:200]}")
            progress.update(1)

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        await flush(client)
    progress.close()
    return outcome


def monitor_view(url: str, model: str, wait: float, finished: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first drift report computed after the traffic ended (``finished``, a wall-clock time),
    and the alerts, having waited up to ``wait`` seconds for one to fire."""
    deadline = time.monotonic() + max(wait, 15.0)
    with httpx.Client(base_url=url, timeout=10) as client:
        while True:
            report = client.get("/monitoring/drift", params={"model": model}).json()
            # records reach the log within ~0.1 s of their answer; a pass after that has seen them all
            if report.get("computed_at", 0) >= finished + 0.5 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        deadline = time.monotonic() + wait
        while True:
            alerts = client.get("/monitoring/alerts").json()
            if alerts.get("firing") or time.monotonic() > deadline:
                return report, alerts
            time.sleep(1.0)


def retraining_loop(registry: Registry, model: str, since: float, wait: float) -> list[AuditEntry]:
    """The model's audit entries after ``since`` once the loop an alert's action starts has run its
    course (a retraining promoted, or its evaluation refused it), or after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        entries = [e for e in registry.history(model) if e.at.timestamp() >= since]
        retrained = any(e.action == "retrain" for e in entries)
        promoted = any(e.action == "promote" and e.alias == "champion" for e in entries)
        refused = any(e.evaluation is not None and e.evaluation.verdict == "refuse" for e in entries)
        if (retrained and (promoted or refused)) or time.monotonic() > deadline:
            return entries
        time.sleep(1.0)


def loop_summary(entries: list[AuditEntry]) -> list[str]:
    """The retraining loop as the audit trail tells it."""
    if not any(e.action == "retrain" for e in entries):
        return ["no retraining was triggered: the alert rules name no action, the alert has not fired "
                "(a longer --wait), or its rule's min_interval has not passed since the last"]  # fmt: skip
    lines = ["the retraining loop, from the audit trail:"]
    for e in entries:
        if e.trigger is not None:
            what = f"{e.trigger.alertname} on version {e.to_version} started {e.trigger.target}"
        elif e.evaluation is not None:
            what = f"version {e.to_version} against champion {e.from_version}: {e.evaluation.verdict}"
            what += "".join(f"; {reason}" for reason in e.evaluation.reasons)
        elif e.action == "push":
            what = f"version {e.to_version} pushed ({e.reason})"
        else:
            what = f"{e.alias or ''} {e.from_version or '-'} -> {e.to_version} ({e.reason})"
        lines.append(f"  #{e.seq} {e.action:<8} {e.actor:<20} {what}")
    if not any(e.action == "promote" for e in entries):
        lines.append("  no promotion (yet): a refused or unfinished retraining; see the command's output log")
    return lines


def summary(outcome: Outcome, report: dict[str, Any], alerts: dict[str, Any]) -> list[str]:
    lines = [f"answered {outcome.answered} requests, {len(outcome.failed)} failed; "
             f"ground truth stored for {outcome.feedback}"]  # fmt: skip
    lines += [f"  failed: {failure}" for failure in outcome.failed[:3]]
    lines += [f"  feedback refused: {refusal}" for refusal in outcome.feedback_refused[:3]]
    window = report.get("window", {})
    if report.get("status") != "ok":
        lines.append(f"drift: {report.get('status')} ({window.get('rows', 0)} rows in the window; "
                     f"the test needs {report.get('thresholds', {}).get('min_rows', '?')})")  # fmt: skip
    else:
        drifted = [f for f in report["features"] if f["drifted"]]
        lines.append(f"drift over the last {window['rows']} rows: {len(drifted)} of "
                     f"{len(report['features'])} features and outputs drifted")  # fmt: skip
        for feature in sorted(drifted, key=lambda f: -(f["psi"] or 0))[:10]:  # None: a multivariate test
            psi = "" if feature["psi"] is None else f"PSI {feature['psi']:.2f}, "
            test, p_adjusted = feature["test"], feature["p_adjusted"]
            lines.append(f"  {feature['name']}: {psi}{test} adjusted p {p_adjusted:.2g}")
    estimated = report.get("estimated_quality")
    if estimated and estimated["rows"]:
        how = (
            "calibrated on the reference"
            if estimated["calibrated"]
            else "uncalibrated: no labelled reference"
        )
        lines.append(f"estimated accuracy of version {estimated['version']} before any truth (CBPE, {how}): "
                     f"{estimated['accuracy']:.3f} [{estimated['low']:.3f}, {estimated['high']:.3f}] "
                     f"over {estimated['rows']} rows")  # fmt: skip
    for measured in report.get("quality", []):
        metrics = ", ".join(f"{k} {measured[k]:.3f}" for k in ("accuracy", "roc_auc", "mae", "rmse")
                            if measured.get(k) is not None)  # fmt: skip
        lines.append(
            f"live quality of version {measured['version']} over {measured['samples']} rows: {metrics}"
        )
    for state in ("firing", "pending"):
        for alert in alerts.get(state, []):
            lines.append(
                f"alert {state}: {alert['labels']['alertname']} ({alert['annotations'].get('summary', '')})"
            )
    if not alerts.get("firing") and alerts.get("pending"):
        lines.append("pending alerts fire once their condition has held for the rule's 'for' duration")
    return lines
