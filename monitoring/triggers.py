"""Retraining triggers: an alert whose rule names an action starts it when it fires.

The loop teams build around a gateway does not stop at paging someone: drift
or a quality drop should start retraining, whose new version is then
evaluated against the champion (``modelgate registry evaluate``) and promoted
if it passes. An alert rule's ``action`` is that start, in one of two forms:

- ``webhook``: the trigger's JSON (:func:`payload`) is posted to a URL (a CI
  pipeline, an Airflow or Kubeflow endpoint), through the outbox like any
  notification: retried with backoff until the receiver answers, each
  attempt with the same ``Idempotency-Key``;
- ``command``: a program is started by the monitor with the same facts as
  environment variables (``MODELGATE_MODEL``, ``MODELGATE_VERSION``,
  ``MODELGATE_ALERTNAME``, ``MODELGATE_ALERT``, ``MODELGATE_WINDOW``, the
  window as a Parquet file, ``MODELGATE_TRIGGER``, the whole payload less
  the window, and ``MODELGATE_REGISTRY``), in a session of its own so a
  monitor restart does not kill it; it is stopped after ``timeout``. Its
  directory (the window, ``output.log``) is kept among the newest
  ``KEEP_DIRECTORIES``.

Every trigger is an audit entry (action ``retrain``, actor
``modelgate-trigger``) in the model's history, which is also what rate-limits
it: at most one trigger a model and rule every ``min_interval``, shared by
every replica and surviving restarts, since the registry is. An alert that
keeps firing does not trigger again; one that resolves and fires again does,
once the interval has passed.

The window is what the monitor holds for the version alerted on: its recent
requests one row a predicted row, inputs, prediction, probabilities, and the
ground truth where it has arrived (``modelgate log export``'s columns).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson
import structlog

from monitoring.alerts import Action, Alert
from monitoring.store import Outbox
from registry.aliases import Trigger
from registry.store import Registry

if TYPE_CHECKING:
    import pandas as pd

    from monitoring.metrics import GatewayMetrics

log = structlog.get_logger("modelgate.triggers")

ACTOR = "modelgate-trigger"
#: the ``kind`` of a trigger's JSON, and its shape's version
KIND = "modelgate.retrain"
SHAPE_VERSION = 1
#: where a command's window file and output go, one directory a trigger
WORK_ROOT = Path(tempfile.gettempdir()) / "modelgate-triggers"
#: trigger directories kept for inspection (the newest; a running command's is never removed)
KEEP_DIRECTORIES = 20


def payload(
    alert: Alert, model: str, version: int, window: pd.DataFrame, audit_seq: int, registry: Path, now: float
) -> dict[str, Any]:
    """The trigger as a webhook receives it (and a command, less ``window.records``)."""
    import pandas as pd  # here: the monitor process that fires triggers would hold it all the time

    records = json.loads(window.to_json(orient="records", date_format="iso")) if len(window) else []
    times = window["time"] if len(window) else pd.Series(dtype="datetime64[ns, UTC]")
    return {
        "kind": KIND,
        "shape_version": SHAPE_VERSION,
        "model": model,
        "version": version,
        "alert": alert.as_json(),
        "triggered_at": pd.Timestamp(now, unit="s", tz="UTC").isoformat(),
        "audit_seq": audit_seq,
        "registry": str(registry),
        "window": {
            "rows": len(window),
            "labelled_rows": int(window["ground_truth"].notna().sum()) if len(window) else 0,
            "from": times.min().isoformat() if len(window) else None,
            "to": times.max().isoformat() if len(window) else None,
            "columns": [str(c) for c in window.columns],
            "records": records,
        },
    }


def prune(root: Path, keep: int, busy: set[Path]) -> None:
    """Remove all but the newest ``keep`` trigger directories under ``root`` (each holds a window's
    export, so they would otherwise fill the disk one trigger at a time); ``busy`` ones stay."""
    directories = sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
    for old in directories[: max(len(directories) - keep, 0)]:
        if old not in busy:
            shutil.rmtree(old, ignore_errors=True)


@dataclass
class Running:
    """A command started by a trigger, until it exits or times out."""

    process: subprocess.Popen[bytes]
    model: str
    alertname: str
    started: float
    timeout: float
    output: IO[bytes]
    directory: Path


class Triggers:
    """Starts the actions of alerts that fire; one instance in the leading monitor."""

    def __init__(
        self,
        registry: Registry,
        outbox: Outbox,
        window: Callable[[str, int], pd.DataFrame],
        work_root: Path = WORK_ROOT,
        *,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.registry = registry
        self.outbox = outbox
        self.window = window
        self.work_root = work_root
        self.running: dict[tuple[str, str], Running] = {}
        #: to count triggers (see monitoring.metrics)
        self.metrics = metrics

    def fire(self, alert: Alert, action: Action, version: int, now: float) -> bool:
        """Start ``action`` for ``alert`` (firing on ``version``) unless rate-limited; whether it did."""
        model, alertname = alert.labels["model"], alert.labels["alertname"]
        if (model, alertname) in self.running:
            self._count(model, alertname, "already_running")
            log.warning("retrain.still_running", model=model, alertname=alertname)
            return False
        last = next(
            (e for e in reversed(self.registry.history(model))
             if e.action == "retrain" and e.trigger is not None and e.trigger.alertname == alertname),
            None,
        )  # fmt: skip
        if last is not None and now - last.at.timestamp() < action.min_interval_seconds:
            self._count(model, alertname, "rate_limited")
            log.warning("retrain.rate_limited", model=model, alertname=alertname, last_seq=last.seq,
                        min_interval_s=action.min_interval_seconds)  # fmt: skip
            return False
        window = self.window(model, version)
        trigger = Trigger(
            alertname=alertname, fingerprint=alert.fingerprint, target=action.target, window_rows=len(window)
        )
        entry = self.registry.record_trigger(
            model, version, trigger, reason=alert.annotations.get("description", ""), actor=ACTOR
        )
        body = payload(alert, model, version, window, entry.seq, self.registry.root.resolve(), now)
        if action.webhook:
            key = f"{alert.fingerprint}:retrain:{entry.seq}"
            self.outbox.enqueue([(key, f"webhook {action.webhook}", orjson.dumps(body))], now)
            log.warning("retrain.triggered", model=model, version=version, alertname=alertname,
                        target=action.target, audit_seq=entry.seq)  # fmt: skip
        else:
            self._start(action, body, window)
        self._count(model, alertname, "triggered")
        return True

    def _start(self, action: Action, body: dict[str, Any], window: pd.DataFrame) -> None:
        model, alertname = body["model"], body["alert"]["labels"]["alertname"]
        directory = self.work_root / f"{model}-{body['audit_seq']}"
        directory.mkdir(parents=True, exist_ok=True)
        busy = {running.directory for running in self.running.values()} | {directory}
        prune(self.work_root, KEEP_DIRECTORIES, busy)
        window_file = directory / "window.parquet"
        window.to_parquet(window_file, index=False)
        summary = {k: v for k, v in body.items() if k != "window"} | {
            "window": {k: v for k, v in body["window"].items() if k != "records"}
        }
        env = {
            **os.environ,
            # the gateway's own environment first: `modelgate` and `python` are the ones serving
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "MODELGATE_MODEL": model,
            "MODELGATE_VERSION": str(body["version"]),
            "MODELGATE_ALERTNAME": alertname,
            "MODELGATE_ALERT": json.dumps(body["alert"]),
            "MODELGATE_WINDOW": str(window_file),
            "MODELGATE_TRIGGER": json.dumps(summary),
            "MODELGATE_REGISTRY": body["registry"],
        }
        output = open(directory / "output.log", "ab")  # noqa: SIM115 - closed when the command ends
        try:
            process = subprocess.Popen(
                list(action.command), env=env, cwd=directory, stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            output.close()
            self._count(model, alertname, "failed_to_start")
            log.error("retrain.failed_to_start", model=model, alertname=alertname, target=action.target,
                      error=str(exc))  # fmt: skip
            return
        self.running[(model, alertname)] = Running(
            process, model, alertname, time.monotonic(), action.timeout_seconds, output, directory
        )
        log.warning("retrain.started", model=model, version=body["version"], alertname=alertname,
                    target=action.target, pid=process.pid, audit_seq=body["audit_seq"],
                    output=str(directory / "output.log"))  # fmt: skip

    def poll(self) -> None:
        """Reap commands that ended, and stop those past their timeout."""
        for key, running in list(self.running.items()):
            code = running.process.poll()
            if code is None and time.monotonic() - running.started > running.timeout:
                os.killpg(running.process.pid, signal.SIGKILL)
                code = running.process.wait()
                outcome = "timed_out"
            elif code is None:
                continue
            else:
                outcome = "succeeded" if code == 0 else "failed"
            running.output.close()
            del self.running[key]
            self._count(running.model, running.alertname, outcome)
            tail = (running.directory / "output.log").read_bytes()[-2000:].decode(errors="replace")
            event = log.info if outcome == "succeeded" else log.error
            event(f"retrain.{outcome}", model=running.model, alertname=running.alertname, returncode=code,
                  output=tail)  # fmt: skip

    def _count(self, model: str, alertname: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.triggers.labels(model, alertname, outcome).inc()
