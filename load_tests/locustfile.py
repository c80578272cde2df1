"""Locust scenarios against a running gateway serving the demo model (``make serve``).

One user class a scenario; name the ones to run after the options::

    locust -f load_tests/locustfile.py --headless -u 32 -r 32 -t 60s --host http://127.0.0.1:3000 \
        --csv load_tests/results/locust/single --html load_tests/results/locust/single.html SingleRow

- ``SingleRow``: one held-out record a request to ``/predict``.
- ``Batch32``, ``Batch256``: 32 and 256 records a request.
- ``Mixed``: ``/predict`` and the v2 ``infer`` route (one ``X`` tensor), half each.
- ``Feedback``: predictions, and a second later their ground truth to
  ``/feedback`` by request id, in one list per task.
- ``AB``: ``/predict`` for 50 app users a Locust user, each with its own
  routing key (``X-Routing-Key``); each answer is counted under the arm that
  served it (request type ``ARM``, names ``champion`` and ``challenger``), and
  one key answered by two arms is a failure.
- ``Shadow``: ``/predict``; an answer from any arm but the champion is a failure.

``--routing ab|shadow`` (with ``--admin-token``, the gateway's
``MODELGATE_ADMIN_TOKEN``) sets the model's routing through the admin API when
Locust starts (``--challenger-weight`` for ``ab``, 0.2 by default) and back to
``off`` at the end, so the ``AB`` and ``Shadow`` scenarios run against the mode
they test. ``--predict-token``: the gateway's ``MODELGATE_PREDICT_TOKEN``, if set.
"""

from __future__ import annotations

import collections
import itertools
import json
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from locust import FastHttpUser, between, events, task
from locust.env import Environment

from registry.demo import DEMO_MODEL, breast_cancer

_, _X_TEST, _, _Y_TEST = breast_cancer()
RECORDS: list[dict[str, float]] = _X_TEST.to_dict(orient="records")
LABELS: list[str] = _Y_TEST.tolist()
FEATURES: list[str] = list(_X_TEST.columns)
#: seconds between a prediction and its ground truth in ``Feedback``
LABEL_DELAY_S = 1.0


def predict_body(rows: int, start: int) -> tuple[bytes, list[str]]:
    """A /predict body of ``rows`` held-out records from ``start`` (wrapping), and their true labels."""
    picks = [(start + i) % len(RECORDS) for i in range(rows)]
    body = json.dumps({"model": DEMO_MODEL, "inputs": [RECORDS[i] for i in picks]}).encode()
    return body, [LABELS[i] for i in picks]


def v2_body(rows: int, start: int) -> bytes:
    picks = [(start + i) % len(RECORDS) for i in range(rows)]
    data = [RECORDS[i][f] for i in picks for f in FEATURES]
    tensor = {"name": "X", "shape": [rows, len(FEATURES)], "datatype": "FP32", "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--routing", choices=["keep", "ab", "shadow"], default="keep",
                        help="set the demo model's routing for the run (needs --admin-token)")  # fmt: skip
    parser.add_argument("--challenger-weight", type=float, default=0.2)
    parser.add_argument("--admin-token", default="", help="the gateway's MODELGATE_ADMIN_TOKEN")
    parser.add_argument("--predict-token", default="", help="the gateway's MODELGATE_PREDICT_TOKEN")


def _set_routing(environment: Environment, mode: str, weight: float) -> None:
    options = environment.parsed_options
    response = httpx.put(
        f"{environment.host}/admin/models/{DEMO_MODEL}/routing",
        headers={"Authorization": f"Bearer {options.admin_token}", "X-Actor": "locust"},
        json={"mode": mode, "challenger_weight": weight, "reason": "locust run"},
        timeout=10,
    )
    if response.status_code != 200:
        raise SystemExit(f"setting routing {mode!r}: {response.status_code} {response.text}")
    # the gateway applies it at its next look at the registry: wait until 20 answers in a row
    # (from whichever workers took them) show it, so no request of the run sees the old mode
    deadline, confirmed = time.monotonic() + 30, 0
    while confirmed < 20:
        if time.monotonic() > deadline:
            raise SystemExit(f"the gateway did not apply routing {mode!r} within 30 s")
        models = httpx.get(f"{environment.host}/models", timeout=10).json()["models"]
        confirmed = confirmed + 1 if models[DEMO_MODEL]["routing"]["mode"] == mode else 0
        time.sleep(0.05)


@events.init.add_listener
def _route(environment: Environment, **_: Any) -> None:
    # at init, not test_start: the run-time limit counts from before test_start's listeners
    # return, and waiting for the gateway there would eat the run
    options = environment.parsed_options
    if options is not None and options.routing != "keep":
        weight = options.challenger_weight if options.routing == "ab" else 0.0
        _set_routing(environment, options.routing, weight)


@events.test_stop.add_listener
def _unroute(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is not None and options.routing != "keep":
        _set_routing(environment, "off", 0.0)


class Gateway(FastHttpUser):
    abstract = True
    wait_time = between(0, 0)
    rows = 1

    def on_start(self) -> None:
        token = self.environment.parsed_options.predict_token if self.environment.parsed_options else ""
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.cursor = itertools.count(random.randrange(len(RECORDS)))

    def predict(
        self,
        name: str = "/predict",
        headers: dict[str, str] | None = None,
        check: Callable[[dict[str, Any]], str | None] | None = None,
    ) -> dict[str, Any] | None:
        """POST a body of ``self.rows`` records; a non-200, a wrong label count or what ``check``
        says of the answer is a failure."""
        body, _ = predict_body(self.rows, next(self.cursor))
        with self.client.post(
            "/predict", data=body, headers=self.headers | (headers or {}), name=name, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return None
            answer: dict[str, Any] = response.json()
            answered = len(answer["predictions"])
            problem = f"{answered} predictions for {self.rows} rows" if answered != self.rows else None
            if problem is None and check is not None:
                problem = check(answer)
            if problem is not None:
                response.failure(problem)
                return None
            return answer


class SingleRow(Gateway):
    @task
    def single(self) -> None:
        self.predict()


class Batch32(Gateway):
    rows = 32

    @task
    def batch(self) -> None:
        self.predict("/predict [32 rows]")


class Batch256(Gateway):
    rows = 256

    @task
    def batch(self) -> None:
        self.predict("/predict [256 rows]")


class Mixed(Gateway):
    @task
    def predict_route(self) -> None:
        self.predict()

    @task
    def v2_infer(self) -> None:
        self.client.post(
            f"/v2/models/{DEMO_MODEL}/infer", data=v2_body(1, next(self.cursor)), headers=self.headers
        )


class Feedback(Gateway):
    """Predictions, and each one's ground truth a second later, as labels trickle in from the field."""

    def on_start(self) -> None:
        super().on_start()
        self.pending: collections.deque[tuple[float, str, str]] = collections.deque()

    @task
    def predict_then_label(self) -> None:
        body, labels = predict_body(1, next(self.cursor))
        response = self.client.post("/predict", data=body, headers=self.headers)
        if response.status_code == 200:
            self.pending.append((time.monotonic() + LABEL_DELAY_S, response.json()["request_id"], labels[0]))
        due = []
        while self.pending and self.pending[0][0] <= time.monotonic():
            _, request_id, label = self.pending.popleft()
            due.append({"request_id": request_id, "ground_truth": label})
        if due:
            self.client.post("/feedback", data=json.dumps({"feedback": due}), headers=self.headers)


class AB(Gateway):
    """Requests on behalf of ``KEYS_PER_USER`` app users, each with its own routing key."""

    KEYS_PER_USER = 50

    def on_start(self) -> None:
        super().on_start()
        self.arms: dict[str, str | None] = {uuid.uuid4().hex: None for _ in range(self.KEYS_PER_USER)}

    @task
    def keyed(self) -> None:
        key = random.choice(list(self.arms))

        def sticky(answer: dict[str, Any]) -> str | None:
            arm, before = answer["arm"], self.arms[key]
            if before is not None and arm != before:
                return f"routing key {key} answered by {before}, then by {arm}"
            self.arms[key] = arm
            return None

        answer = self.predict("/predict [keyed]", {"X-Routing-Key": key}, sticky)
        if answer is not None:  # a zero-time entry per arm: the statistics show the observed split
            events.request.fire(
                request_type="ARM", name=answer["arm"], response_time=0, response_length=0,
                exception=None, context={},
            )  # fmt: skip


class Shadow(Gateway):
    @task
    def mirrored(self) -> None:
        self.predict(check=lambda a: None if a["arm"] == "champion" else f"answered by {a['arm']}")
