"""Shared fixtures: real ONNX models trained on scikit-learn's bundled data, registries, gateways."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from skl2onnx import to_onnx as skl_to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from registry.demo import breast_cancer, to_onnx
from registry.store import Registry


@dataclass(frozen=True)
class TrainedModel:
    onnx: Path
    reference: Path
    frame: pd.DataFrame


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def _save(directory: Path, name: str, onnx_bytes: bytes, frame: pd.DataFrame) -> TrainedModel:
    onnx_path = directory / f"{name}.onnx"
    onnx_path.write_bytes(onnx_bytes)
    reference = directory / f"{name}.csv"
    frame.to_csv(reference, index=False)
    return TrainedModel(onnx_path, reference, frame)


@pytest.fixture(scope="session")
def cancer_model(models_dir: Path) -> TrainedModel:
    """Binary classifier, one float32 [N, 30] input, string labels."""
    x_train, _, y_train, _ = breast_cancer()
    model = make_pipeline(LogisticRegression(max_iter=5000)).fit(x_train, y_train)
    return _save(models_dir, "cancer", to_onnx(model, x_train), x_train)


@pytest.fixture(scope="session")
def cancer_model_v2(models_dir: Path) -> TrainedModel:
    """A second, different classifier on the same features (for promotions)."""
    x_train, _, y_train, _ = breast_cancer()
    model = LogisticRegression(max_iter=5000, C=0.01).fit(x_train, y_train)
    return _save(models_dir, "cancer_v2", to_onnx(model, x_train), x_train)


@pytest.fixture(scope="session")
def iris_zipmap_model(models_dir: Path) -> TrainedModel:
    """Multiclass with skl2onnx's default ZipMap output and integer labels."""
    data = load_iris(as_frame=True)
    frame = data.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    model = LogisticRegression(max_iter=1000).fit(frame, data.target)
    proto = skl_to_onnx(model, frame.to_numpy(dtype=np.float32)[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    return _save(models_dir, "iris", proto.SerializeToString(), frame)


@pytest.fixture(scope="session")
def diabetes_model(models_dir: Path) -> TrainedModel:
    """Regressor, float32 matrix input."""
    data = load_diabetes(as_frame=True)
    model = LinearRegression().fit(data.data, data.target)
    return _save(models_dir, "diabetes", to_onnx(model, data.data), data.data)


@pytest.fixture(scope="session")
def columns_model(models_dir: Path) -> TrainedModel:
    """One ONNX input per feature: a string category and a float, with missing values in ``size``."""
    return _columns_model(models_dir, "columns", null_colours=False)


@pytest.fixture(scope="session")
def nullable_colour_model(models_dir: Path) -> TrainedModel:
    """``columns_model`` whose reference also lacks some colours, and whose encoder ignores an unknown
    colour (what the model receives for a missing one)."""
    return _columns_model(models_dir, "nullable_colour", null_colours=True)


def _columns_model(models_dir: Path, name: str, null_colours: bool) -> TrainedModel:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"color": rng.choice(["red", "green", "blue"], 300), "size": rng.normal(10, 2, 300).round(3)}
    )
    labels = np.where((frame["color"] == "red") | (frame["size"] > 11), "yes", "no")
    pipeline = make_pipeline(
        ColumnTransformer(
            [
                ("color", OneHotEncoder(handle_unknown="ignore" if null_colours else "error"), ["color"]),
                ("size", "passthrough", ["size"]),
            ]
        ),
        LogisticRegression(),
    ).fit(frame, labels)
    proto = skl_to_onnx(
        pipeline,
        initial_types=[("color", StringTensorType([None, 1])), ("size", FloatTensorType([None, 1]))],
        options={id(pipeline.steps[-1][1]): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    reference = frame.copy()
    reference.loc[::25, "size"] = np.nan  # the reference carries missing sizes: nulls are accepted
    if null_colours:
        reference.loc[1::20, "color"] = None
    return _save(models_dir, name, proto.SerializeToString(), reference)


@pytest.fixture
def centred_model(tmp_path: Path) -> Callable[[bool], tuple[Path, Path]]:
    """``centred_model(reciprocal)``: a one-feature regressor in plain ONNX, ``x - 0.5`` or
    ``1 / (x - 0.5)`` (infinite at 0.5), and reference data that stays away from 0.5."""
    return functools.partial(_centred_model, tmp_path)


def _centred_model(directory: Path, reciprocal: bool) -> tuple[Path, Path]:
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Sub", ["X", "half"], ["centred" if reciprocal else "variable"])]
    if reciprocal:
        nodes.append(helper.make_node("Reciprocal", ["centred"], ["variable"]))
    graph = helper.make_graph(
        nodes,
        "reciprocal" if reciprocal else "centred",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor("half", TensorProto.FLOAT, [1], [0.5])],
    )
    model = directory / f"{graph.name}.onnx"
    model.write_bytes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    )
    reference = directory / "reference.csv"
    reference.write_text(
        "x\n" + "\n".join(str(v) for v in [*np.linspace(0, 0.4, 100), *np.linspace(0.6, 1, 100)])
    )
    return model, reference


def _looping_model(directory: Path, on_single_row: bool) -> tuple[Path, Path]:
    """``x - 0.5``, after a loop of ``1e12 * max(0, trigger)`` empty steps (hours when positive).
    The trigger is ``max(x) - 1.5`` (hung on any input of 2 or more; its reference is in [0, 1]), or
    with ``on_single_row`` ``1.5 - rows`` (hung on a one-row batch, instant on the whole reference)."""
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["going"], ["still_going"]),
         helper.make_node("Identity", ["carried"], ["carried_on"])],
        "step",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("going", TensorProto.BOOL, []),
         helper.make_tensor_value_info("carried", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("still_going", TensorProto.BOOL, []),
         helper.make_tensor_value_info("carried_on", TensorProto.FLOAT, [None, 1])],
    )  # fmt: skip
    if on_single_row:
        trigger = [helper.make_node("Shape", ["X"], ["shape"]),
                   helper.make_node("Gather", ["shape", "first"], ["rows"], axis=0),
                   helper.make_node("Cast", ["rows"], ["size"], to=TensorProto.FLOAT),
                   helper.make_node("Sub", ["threshold", "size"], ["over"])]  # fmt: skip
    else:
        trigger = [helper.make_node("ReduceMax", ["X"], ["top"], keepdims=0),
                   helper.make_node("Sub", ["top", "threshold"], ["over"])]  # fmt: skip
    graph = helper.make_graph(
        [*trigger,
         helper.make_node("Relu", ["over"], ["excess"]),
         helper.make_node("Mul", ["excess", "scale"], ["steps_float"]),
         helper.make_node("Cast", ["steps_float"], ["steps"], to=TensorProto.INT64),
         helper.make_node("Loop", ["steps", "", "X"], ["looped"], body=body),
         helper.make_node("Sub", ["looped", "half"], ["variable"])],
        "looping",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor("half", TensorProto.FLOAT, [1], [0.5]),
         helper.make_tensor("first", TensorProto.INT64, [], [0]),
         helper.make_tensor("threshold", TensorProto.FLOAT, [], [1.5]),
         helper.make_tensor("scale", TensorProto.FLOAT, [], [1e12])],
    )  # fmt: skip
    model = directory / "looping.onnx"
    model.write_bytes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    )
    reference = directory / "reference.csv"
    reference.write_text("x\n" + "\n".join(str(v) for v in np.linspace(0, 1, 200)))
    return model, reference


@pytest.fixture
def looping_model(tmp_path: Path) -> tuple[Path, Path]:
    """Hung on any input of 2 or more, instant on its reference data."""
    return _looping_model(tmp_path, on_single_row=False)


@pytest.fixture
def single_row_looping_model(tmp_path: Path) -> tuple[Path, Path]:
    """Hung on a one-row batch (the first warm-up), instant on its whole reference at once."""
    return _looping_model(tmp_path, on_single_row=True)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


@pytest.fixture
def cancer_registry(
    registry: Registry, cancer_model: TrainedModel, cancer_model_v2: TrainedModel
) -> Registry:
    """``cancer`` v1 champion, v2 challenger."""
    registry.push(cancer_model.onnx, "cancer", cancer_model.reference, actor="tests")
    registry.push(cancer_model_v2.onnx, "cancer", cancer_model_v2.reference, actor="tests")
    registry.promote("cancer", 1, "champion", actor="tests")
    registry.promote("cancer", 2, "challenger", actor="tests")
    return registry


@pytest.fixture
def child_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], str]:
    """Metrics of the gateway's helper processes (log writer, monitor), in Prometheus text.

    Requests are counted where they are written, in the log writer's process;
    as under BentoML, processes share them through prometheus-client's
    multiprocess directory, which this points the children at.
    """
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    directory = tmp_path / "prometheus"
    directory.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))

    def exported() -> str:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(directory))
        return generate_latest(registry).decode()

    return exported


class Receiver:
    """A local on-call receiver: records every POST body; can be started late (a receiver outage)."""

    def __init__(self, failures: int = 0):
        """``failures``: the first POSTs this many are answered 503 (a receiver in trouble)."""
        self.bodies: list[dict] = []
        #: each POST's Idempotency-Key header, in the order of ``bodies``
        self.keys: list[str | None] = []
        self.failures = failures
        self.server: ThreadingHTTPServer | None = None
        self.port = 0

    def start(self, port: int = 0) -> str:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                receiver.keys.append(self.headers.get("idempotency-key"))
                receiver.bodies.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                failing = len(receiver.bodies) <= receiver.failures
                self.send_response(503 if failing else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.port}/hook"

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    """Local on-call receivers (``receivers()`` makes one, ``receivers(failures=2)`` one that
    answers its first two POSTs 503); all stopped after the test."""
    made: list[Receiver] = []

    def make(failures: int = 0) -> Receiver:
        made.append(Receiver(failures))
        return made[-1]

    yield make
    for receiver in made:
        receiver.stop()


@pytest.fixture
def tool() -> Callable[[str], str]:
    """``tool(name)``: the path of a program the test needs. Where it is not installed the test
    is skipped, except in CI (``CI`` set), whose .ci/run installs it: there it fails."""

    def find(name: str) -> str:
        path = shutil.which(name)
        if path is None:
            if os.environ.get("CI"):
                pytest.fail(f"{name} is not installed; .ci/run installs it (apt-get install {name})")
            pytest.skip(f"{name} is not installed (apt-get install {name})")
        return path

    return find


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start a server command (``{port}`` in it is replaced by a free port); returns once
    ``ready_path`` answers 200. Every server started is stopped after the test."""
    started: list[RunningServer] = []

    def start(
        command: list[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 90,
        ready_path: str = "/v2/health/ready",
    ) -> RunningServer:
        port = free_port()
        log = tmp_path / f"server-{len(started)}.log"
        with open(log, "wb") as handle:
            process = subprocess.Popen(
                [part.replace("{port}", str(port)) for part in command],
                stdout=handle, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True,
                env={**os.environ, "BENTOML_DO_NOT_TRACK": "true", **(env or {})},
            )  # fmt: skip
        server = RunningServer(f"http://127.0.0.1:{port}", process, log)
        started.append(server)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{server.output()}")
            try:
                if httpx.get(f"{server.url}{ready_path}", timeout=1).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"server not ready after {timeout}s:\n{server.output()}")

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def gateway_factory(spawn: Callable[..., RunningServer]) -> Callable[..., RunningServer]:
    """``modelgate serve`` on a registry, polling it every 0.2 s."""

    def start(registry: Registry, workers: int = 1, **settings: str) -> RunningServer:
        """``settings``: extra MODELGATE_* variables, e.g. ``MODELGATE_WINDOW_ROWS="140"``."""
        command = [sys.executable, "-m", "service", "serve", "--registry", str(registry.root),
                   "--port", "{port}", "--workers", str(workers)]  # fmt: skip
        return spawn(command, env={"MODELGATE_POLL_INTERVAL": "0.2", **settings})

    return start


def _load_tests_module(name: str, directory: str = "load_tests") -> Any:
    """A module of load_tests/ (not a package: its scripts run as programs), or of ``directory``."""
    path = Path(__file__).resolve().parent.parent / directory / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{directory}_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


postgres_server = _load_tests_module("postgres_server")
tensor_models = _load_tests_module("tensor_models", "tests")


@pytest.fixture(scope="session")
def digits_tensor_model(models_dir: Path) -> Any:
    """An image classifier: ``pixels`` float32 [N, 1, 8, 8] -> 10 digits (tests/tensor_models.py)."""
    return tensor_models.digits_model(models_dir)


@pytest.fixture(scope="session")
def digits_rivals(models_dir: Path) -> Any:
    """Two digits image classifiers, the second better overall but worse on heavy strokes
    (tests/tensor_models.py)."""
    return tensor_models.digits_rivals(models_dir)


@pytest.fixture(scope="session")
def topics_tensor_model(models_dir: Path) -> Any:
    """A text classifier: ``input_ids`` int64 [N, 16] -> topics a and b."""
    return tensor_models.text_classifier(models_dir)


@pytest.fixture
def text_samples() -> Any:
    """``text_samples(count, seed, topic_b_share=0.5, longer=False)``: padded token ids and their topics."""
    return tensor_models.texts


@pytest.fixture(scope="session")
def embedder_tensor_model(models_dir: Path) -> Any:
    """A text embedding model: ``input_ids`` int64 [N, 16] -> ``embedding`` [N, 8]."""
    return tensor_models.text_embedder(models_dir)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """A real PostgreSQL server (load_tests/postgres_server.py) for the test session. Skipped where
    PostgreSQL is not installed, except in CI, whose .ci/run installs it. ``fsync=off``: tests kill
    gateways, never the machine, and it makes each commit cheap."""
    if postgres_server.postgres_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; .ci/run installs it (apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    with postgres_server.local_postgres("fsync=off") as server:
        yield server


@pytest.fixture
def postgres_url(postgres: Any) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped after the test."""
    import psycopg

    name = f"t_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}".encode())
    yield postgres.url(name)
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())
