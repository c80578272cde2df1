"""Throughput and latency of serving set-ups side by side, measured in one run on one machine.

    python load_tests/bench.py --rounds 5 --out load_tests/results/baseline.md   # bare vs gateway
    python load_tests/bench.py --rounds 5 --rows 256 --out load_tests/results/batch256.md
    python load_tests/bench.py --targets gateway-all --rounds 1 --soak 600 \
        --out load_tests/results/soak.md                  # ten minutes at peak, memory sampled
    python load_tests/bench.py --targets shadow-off,shadow-slow,shadow-hung,shadow-raising,shadow-failing \
        --out load_tests/results/shadow.md               # shadow mode against bad challengers

Targets (``--targets``, ratios are to the first):

- ``bare``: a bare BentoML service on the demo champion's ONNX file
  (``bare_service.py``), the baseline a team would otherwise write;
- ``gateway-off``: the gateway with ``MODELGATE_MONITORING=false``;
- ``gateway-on``: the gateway with monitoring on (the default);
- ``gateway-durable``: monitoring on, each answer sent only once its record
  is committed (``MODELGATE_LOG_ACK=committed``);
- ``gateway-all``: everything on: monitoring, and shadow mode to the demo's
  challenger;
- ``shadow-*``: a copy of the demo registry whose challenger
  (``challengers.py``: none, ~10x slower, hung, raising in ONNX Runtime, or
  refusing every request in validation) mirrors the champion's traffic;
- ``gateway-v2``, ``gateway-binary`` (``-off``: monitoring off),
  ``gateway-columns``, ``gateway-v1``: the monitored gateway loaded in its
  other formats (v2 JSON tensors, binary tensors in and out, columnar
  ``/predict``, KServe v1 ``instances``);
- ``mlserver``, ``kserve``, ``fastapi``: the servers users would pick
  instead, each on the same ONNX file in its own environment (``peers.py``).

Each target is its own server process on the same model and worker count
(the bare service's session gets the gateway's intra-op threads). wrk
(Debian package ``wrk``) loads them in turn, ``--rounds`` times in
alternating order, so a noisy neighbour on a shared machine hits every
target alike. Each measurement is ``--duration`` seconds of requests of
``--rows`` rows in the target's format from ``--connections`` connections,
as fast as answered or, with ``--rate``, at about that many requests a second.

For each target: requests/s, rows/s, p50/p95/p99 latency (medians over the
rounds), the server's CPU seconds per 1,000 requests, the peak RSS of its
processes, and its requests/s and p99 over the first target's, paired by
round; monitored gateways also against ``gateway-off``; every target's rows/s
against the in-process floor (``session.run`` on the same batch in this
process, and the same after decoding the target's own body), measured each round. The load
generator's own CPU use is reported: it must stay far from a full core, or
wrk, not the server, is the bottleneck. A monitored gateway's prediction log
is counted after a graceful stop and must hold every request wrk counted as
answered; for shadow targets a line says what the challenger did. Any
non-2xx answer or lost record exits 1. Loopback only, bounded in time.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import functools
import json
import os
import platform
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import challengers
import httpx
import numpy as np
import orjson
import peers

from monitoring.store import is_postgres
from monitoring.store.sqlite import request_files
from registry.demo import DEMO_MODEL, build_demo, demo_request
from registry.onnx_model import load_session, threads_per_worker
from registry.store import Registry

ROOT = Path(__file__).resolve().parent.parent

#: name -> the environment that makes a gateway that target
TARGETS: dict[str, dict[str, str]] = {
    # the baseline: a bare BentoML service on the champion's ONNX file (bare_service.py)
    "bare": {},
    "gateway-off": {"MODELGATE_MONITORING": "false"},
    "gateway-on": {"MODELGATE_MONITORING": "true"},
    # monitored, answering only once each record is committed (durable acknowledgement)
    "gateway-durable": {"MODELGATE_MONITORING": "true", "MODELGATE_LOG_ACK": "committed"},
    # monitored, its state in PostgreSQL (a server the bench starts, fsync on) instead of SQLite
    "gateway-pg": {"MODELGATE_MONITORING": "true"},
    # everything on: monitoring, and shadow mode to the demo's challenger
    "gateway-all": {"MODELGATE_MONITORING": "true"},
    # shadow mode against bad challengers (see challengers.py), beside no shadow at all
    "shadow-off": {"MODELGATE_MONITORING": "true"},
    "shadow-slow": {"MODELGATE_MONITORING": "true"},
    "shadow-hung": {"MODELGATE_MONITORING": "true"},
    "shadow-raising": {"MODELGATE_MONITORING": "true"},
    "shadow-failing": {"MODELGATE_MONITORING": "true"},
    # the gateway on the other formats it reads, monitored (binary-off: monitoring off)
    "gateway-v2": {"MODELGATE_MONITORING": "true"},
    "gateway-binary": {"MODELGATE_MONITORING": "true"},
    "gateway-binary-off": {"MODELGATE_MONITORING": "false"},
    "gateway-columns": {"MODELGATE_MONITORING": "true"},
    "gateway-v1": {"MODELGATE_MONITORING": "true"},
    # the servers users would pick instead (peers.py), each in its own environment
    **{name: {} for name in peers.PEERS},
}
#: targets whose monitoring state is in PostgreSQL (MODELGATE_LOG_URL)
POSTGRES_TARGETS = {"gateway-pg"}
#: name -> the request format its load is sent in; records (the /predict body) when not named
PROTOCOLS: dict[str, str] = {
    "gateway-v2": "v2-json",
    "gateway-binary": "v2-binary",
    "gateway-binary-off": "v2-binary",
    "gateway-columns": "columns",
    "gateway-v1": "v1",
    **{name: peer.protocol for name, peer in peers.PEERS.items()},
}
#: the width of the dense branch that slows the champion down ~10x on this machine (measured: each
#: run reports the challenger's inference time against the champion's)
SLOW_WIDTH = 1200
#: name -> what is done to a copy of the demo registry before that target starts
SETUPS: dict[str, Callable[[Registry], None]] = {
    "gateway-all": challengers.shadowing,
    "shadow-slow": lambda registry: challengers.slowed(registry, SLOW_WIDTH),
    "shadow-hung": challengers.hung,
    "shadow-raising": challengers.raising,
    "shadow-failing": challengers.failing,
}

#: wrk posts one body and, when done, prints one JSON line of its counts and latency percentiles
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
local header_length = os.getenv("BENCH_HEADER_LENGTH")
if header_length ~= "" then wrk.headers["Inference-Header-Content-Length"] = header_length end
wrk.body = io.open(os.getenv("BENCH_BODY"), "rb"):read("*a")
-- with --rate: each connection pauses an exponential time of this mean before each request, so
-- requests arrive about as a Poisson stream of that rate (the pause is not in the latency)
local pause_ms = tonumber(os.getenv("BENCH_PAUSE_MS"))
if pause_ms > 0 then
  math.randomseed(os.time())
  function delay() return -math.log(1 - math.random()) * pause_ms end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "seconds": %f, "non_2xx": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p95_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration / 1e6, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Measurement:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_us: int
    p95_us: int
    p99_us: int
    server_cpu_s: float = 0.0
    wrk_cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


@dataclass(frozen=True)
class Load:
    """One request format's body, as wrk posts it."""

    protocol: str
    body: Path
    content_type: str = "application/json"
    #: the JSON header's length, for a binary v2 body
    header_length: int | None = None


def loads(rows: int, features: tuple[str, ...], workdir: Path) -> dict[str, Load]:
    """The same ``rows`` held-out rows in every request format the targets read."""
    records = orjson.loads(demo_request(rows))["inputs"]
    matrix = np.array([[r[f] for f in features] for r in records], dtype=np.float32)
    columns = {f: [r[f] for r in records] for f in features}
    bodies = {
        "records": orjson.dumps({"model": DEMO_MODEL, "inputs": records}),
        "columns": orjson.dumps({"model": DEMO_MODEL, "inputs": columns}),
        "v2-json": orjson.dumps({"inputs": [{"name": "X", "shape": [rows, len(features)], "datatype": "FP32",
                                             "data": matrix.ravel().tolist()}]}),
        "v1": orjson.dumps({"instances": matrix.tolist()}),
    }  # fmt: skip
    header = orjson.dumps({
        "inputs": [{"name": "X", "shape": [rows, len(features)], "datatype": "FP32",
                    "parameters": {"binary_data_size": matrix.nbytes}}],
        "parameters": {"binary_data_output": True},
    })  # fmt: skip
    bodies["v2-binary"] = header + matrix.tobytes()
    made = {}
    for protocol, body in bodies.items():
        path = workdir / f"body-{protocol}"
        path.write_bytes(body)
        binary = protocol == "v2-binary"
        made[protocol] = Load(protocol, path, "application/octet-stream" if binary else "application/json",
                              len(header) if binary else None)  # fmt: skip
    return made


def route(protocol: str, model: str) -> str:
    return {
        "records": "/predict",
        "columns": "/predict",
        "v2-json": f"/v2/models/{model}/infer",
        "v2-binary": f"/v2/models/{model}/infer",
        "v1": f"/v1/models/{model}:predict",
    }[protocol]


@dataclass
class Target:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    #: where its prediction log is: ``log_path``, or a PostgreSQL URL
    log_location: str
    output: Path
    load: Load
    path: str
    rounds: list[Measurement] = field(default_factory=list)
    sent: int = 0

    def tree(self) -> list[int]:
        """The server's pids: the ``bentoml serve`` process and every descendant."""
        pids, index = [self.process.pid], 0
        while index < len(pids):
            for task in Path(f"/proc/{pids[index]}/task").glob("*/children"):
                with contextlib.suppress(OSError):
                    pids.extend(int(pid) for pid in task.read_text().split())
            index += 1
        return pids

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.tree():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / CLOCK_TICKS

    def _memory_mib(self, field: str) -> float:
        """Sum over the server's processes of one /proc/PID/status memory field."""
        total_kib = 0
        for pid in self.tree():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(f"{field}:"):
                        total_kib += int(line.split()[1])
        return total_kib / 1024

    def peak_rss_mib(self) -> float:
        """Sum over the server's processes of each one's peak resident set (VmHWM)."""
        return self._memory_mib("VmHWM")

    def rss_mib(self) -> float:
        """Sum over the server's processes of each one's resident set now (VmRSS)."""
        return self._memory_mib("VmRSS")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start(
    name: str, registry: Path, workdir: Path, workers: int, load: Load, peer_venvs: Path, postgres: str | None
) -> Target:
    """``postgres``: a server's URL (its ``postgres`` database), for the targets that log there."""
    port = peers.free_port()
    log_path = workdir / f"{name}.sqlite3"
    log_location = str(log_path)
    output = workdir / f"{name}.out"
    env = {**os.environ, **TARGETS[name], "BENTOML_DO_NOT_TRACK": "true"}
    model = DEMO_MODEL
    if name == "bare" or name in peers.PEERS:
        manifest, data = challengers.champion(Registry(registry))
        onnx = workdir / "bare.onnx"
        onnx.write_bytes(data)
        model = "bare"
        threads = str(threads_per_worker(workers))
    if name == "bare":
        env |= {"BARE_MODEL": str(onnx), "BARE_FEATURES": ",".join(manifest.inputs.names),
                "BARE_WORKERS": str(workers), "BARE_THREADS": threads}  # fmt: skip
        command = [sys.executable, "-m", "bentoml", "serve", "load_tests.bare_service:Bare",
                   "--host", "127.0.0.1", "--port", str(port), "--working-dir", str(ROOT)]  # fmt: skip
        ready = "/readyz"
    elif name in peers.PEERS:
        peer = peers.PEERS[name]
        env |= {"PEER_MODEL": str(onnx), "PEER_THREADS": threads}
        command = peer.command(peers.python(name, peer_venvs), port, workdir)
        ready = peer.ready_path
    else:
        env["MODELGATE_LOG_PATH"] = str(log_path)
        if name in POSTGRES_TARGETS:
            assert postgres is not None
            log_location = env["MODELGATE_LOG_URL"] = fresh_database(postgres, name.replace("-", "_"))
        command = [sys.executable, "-m", "service", "serve", "--registry", str(registry),
                   "--port", str(port), "--workers", str(workers)]  # fmt: skip
        ready = "/v2/health/ready"
    with open(output, "wb") as handle:
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=workdir
        )
    target = Target(name, f"http://127.0.0.1:{port}", process, log_path, log_location, output, load,
                    route(load.protocol, model))  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{output.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{target.url}{ready}", timeout=1).status_code == 200:
                return target
        time.sleep(0.25)
    target.stop()
    raise RuntimeError(f"{name} not ready after 120 s:\n{output.read_text()[-3000:]}")


def wrk(target: Target, script: Path, seconds: int, connections: int, rate: float = 0.0,
        threads: int = 1) -> Measurement:  # fmt: skip
    """One wrk run against ``target``, with the server's and wrk's CPU time over it. ``rate``: about
    this many requests a second in all (0: as many as the connections can get answered)."""
    pause_ms = connections * 1000 / rate if rate else 0.0
    before_server = target.cpu_seconds()
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script),
         f"{target.url}{target.path}"],
        capture_output=True, text=True,
        env={**os.environ, "BENCH_BODY": str(target.load.body), "BENCH_PAUSE_MS": str(pause_ms),
             "BENCH_CONTENT_TYPE": target.load.content_type,
             "BENCH_HEADER_LENGTH": str(target.load.header_length or "")},
        timeout=seconds + 60,
    )  # fmt: skip
    if completed.returncode:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr or completed.stdout}")
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("BENCH ")]
    if not lines:
        raise RuntimeError(f"wrk printed no result:\n{completed.stdout}\n{completed.stderr}")
    measurement = Measurement(**json.loads(lines[-1].removeprefix("BENCH ")))
    measurement.server_cpu_s = target.cpu_seconds() - before_server
    measurement.wrk_cpu_s = (after_children.ru_utime - before_children.ru_utime) + (
        after_children.ru_stime - before_children.ru_stime
    )
    target.sent += measurement.requests
    return measurement


def logged_requests(location: str) -> int:
    """Records in a stopped gateway's prediction log (a SQLite file or a PostgreSQL URL)."""
    if is_postgres(location):
        import psycopg

        with psycopg.connect(location) as connection:
            row = connection.execute("SELECT count(*) FROM requests").fetchone()
        assert row is not None
        return int(row[0])
    total = 0
    for path in request_files(Path(location)):  # the main file, and each log writer's own
        with contextlib.closing(sqlite3.connect(path)) as connection:
            (count,) = connection.execute("SELECT count(*) FROM requests").fetchone()
            total += count
    return total


def fresh_database(server_url: str, name: str) -> str:
    """An empty database ``name`` on the server; its URL."""
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name}".encode())
        connection.execute(f"CREATE DATABASE {name}".encode())
    return server_url.rsplit("/", 1)[0] + f"/{name}"


@contextlib.contextmanager
def postgres_for(names: list[str], given: str | None) -> Iterator[str | None]:
    """A PostgreSQL server's URL when a target needs one: ``given``, else a throwaway server with
    the default durability (fsync on), as a deployment would run it."""
    if given or not POSTGRES_TARGETS & set(names):
        yield given
        return
    from postgres_server import local_postgres

    with local_postgres() as server:
        yield server.url()


def machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or "unknown CPU",
    )  # fmt: skip
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return (
        f"{os.cpu_count()} cores ({model}), {memory_kib / 1024**2:.0f} GiB, "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}, "
        f"bentoml {version('bentoml')}, onnxruntime {version('onnxruntime')}"
    )


def table(targets: list[Target], rows: int) -> list[str]:
    base = targets[0]
    lines = [
        f"| target | requests/s | rows/s | p50 ms | p95 ms | p99 ms | server CPU s / 1k req "
        f"| peak RSS MiB | requests/s vs {base.name} | p99 vs {base.name} | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for target in targets:
        runs = target.rounds
        rate = statistics.median(m.rate for m in runs)
        cpu = statistics.median(1000 * m.server_cpu_s / m.requests for m in runs)
        failed = sum(m.non_2xx + m.socket_errors for m in runs)
        lines.append(
            f"| {target.name} | {rate:.0f} | {rate * rows:.0f} "
            f"| {statistics.median(m.p50_us for m in runs) / 1000:.2f} "
            f"| {statistics.median(m.p95_us for m in runs) / 1000:.2f} "
            f"| {statistics.median(m.p99_us for m in runs) / 1000:.2f} "
            f"| {cpu:.2f} | {target.peak_rss_mib():.0f} "
            f"| {paired(target, base, 'rate')} | {paired(target, base, 'p99_us')} | {failed} |"
        )
    return lines


def paired(target: Target, base: Target, measure: str) -> str:
    """The median over the rounds of ``target``'s measure over ``base``'s in the same round."""
    ratios = [
        getattr(m, measure) / getattr(b, measure) for m, b in zip(target.rounds, base.rounds, strict=True)
    ]
    return f"{statistics.median(ratios):.2f}x (rounds: {min(ratios):.2f}-{max(ratios):.2f})"


def monitoring_lines(targets: list[Target]) -> list[str]:
    """Monitoring's own cost: each monitored gateway against ``gateway-off``, when both ran."""
    lines = []
    for base_name, names in (("gateway-off", ("gateway-on", "gateway-pg", "gateway-all", "gateway-durable")),
                             ("gateway-on", ("gateway-durable",))):  # fmt: skip
        base = next((t for t in targets if t.name == base_name), None)
        if base is not None:
            lines += [f"{t.name} vs {base_name}: requests/s {paired(t, base, 'rate')}, "
                      f"p99 {paired(t, base, 'p99_us')}" for t in targets if t.name in names]  # fmt: skip
    return lines


@contextlib.contextmanager
def demo_registry(given: str | None) -> Iterator[Path]:
    if given:
        yield Path(given)
        return
    with tempfile.TemporaryDirectory(prefix="modelgate-bench-") as tmp:
        build_demo(Registry(tmp))
        yield Path(tmp)


def prepared(name: str, registry: Path, workdir: Path) -> Path:
    """The registry a target serves: the demo, or a copy made ready by the target's setup."""
    setup = SETUPS.get(name)
    if setup is None:
        return registry
    copy = workdir / f"{name}-registry"
    shutil.copytree(registry, copy)
    setup(Registry(copy))
    return copy


def shadow_lines(targets: list[Target]) -> list[str]:
    """What the challenger did in each shadow target: mirrored requests by status, and its speed."""
    lines = []
    for target in targets:
        if target.name not in SETUPS:
            continue
        registry = Registry(target.log_path.parent / f"{target.name}-registry")
        challenger = registry.aliases(DEMO_MODEL).challenger
        assert challenger is not None
        counted: collections.Counter[int] = collections.Counter()
        for path in request_files(target.log_path):
            with contextlib.closing(sqlite3.connect(path)) as connection:
                query = "SELECT status, count(*) FROM requests WHERE arm = 'shadow' GROUP BY status"
                counted.update(dict(connection.execute(query).fetchall()))
        statuses = dict(counted)
        speed = ""
        if 200 in statuses:  # it predicted: how much slower than the champion, in this process
            champion, slow = (
                challengers.inference_ms(registry, 1),
                challengers.inference_ms(registry, challenger),
            )
            speed = f"challenger inference {slow:.3f} ms a row, {slow / champion:.0f}x the champion's; "
        lines.append(
            f"{target.name}: {speed}{sum(statuses.values())} requests mirrored (by status: {statuses}), "
            f"{target.sent} answered by the champion within wrk's windows; the rest of the mirroring shed"
        )
    return lines


class InProcess:
    """The floor under every target: ONNX Runtime's ``session.run`` on the same batch, called in this
    process with the same intra-op threads, no HTTP, no validation; and the same call after decoding
    each target's own request body into its matrix, as code holding the body in-process would. All
    are measured each round, beside the targets."""

    def __init__(self, registry: Path, loads: dict[str, Load], protocols: list[str], workers: int) -> None:
        manifest, data = challengers.champion(Registry(registry))
        assert manifest.inputs.layout == "matrix" and manifest.inputs.tensor_name is not None
        self.names = manifest.inputs.names
        self.tensor = manifest.inputs.tensor_name
        self.bodies = {protocol: loads[protocol].body.read_bytes() for protocol in protocols}
        self.header_length = loads["v2-binary"].header_length or 0
        self.threads = threads_per_worker(workers)
        self.session = load_session(data, self.threads)
        self.feeds = {self.tensor: self.decoded(protocols[0])}
        self.rows = len(self.feeds[self.tensor])
        self.rounds: dict[str, list[float]] = {"run": [], **{p: [] for p in protocols}}  # rows/s

    def decoded(self, protocol: str) -> np.ndarray:
        """The matrix in one request body of ``protocol``, decoded as a lean server would."""
        body = self.bodies[protocol]
        if protocol == "v2-binary":
            tensor = orjson.loads(body[: self.header_length])["inputs"][0]
            return np.frombuffer(body, np.float32, offset=self.header_length).reshape(tensor["shape"])
        decoded = orjson.loads(body)
        if protocol == "records":
            return np.array([[r[f] for f in self.names] for r in decoded["inputs"]], dtype=np.float32)
        if protocol == "columns":
            return np.ascontiguousarray(np.array([decoded["inputs"][f] for f in self.names], np.float32).T)
        if protocol == "v1":
            return np.asarray(decoded["instances"], dtype=np.float32)
        tensor = decoded["inputs"][0]
        return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])

    def measure(self, seconds: float) -> str:
        calls: dict[str, Callable[[], object]] = {"run": lambda: self.session.run(None, self.feeds)}
        for protocol in self.bodies:
            calls[protocol] = functools.partial(self._decode_and_run, protocol)
        for name, call in calls.items():
            call()
            done, started = 0, time.perf_counter()
            while (took := time.perf_counter() - started) < seconds / len(calls):
                call()
                done += 1
            self.rounds[name].append(done * self.rows / took)
        return ", ".join(f"{name} {rounds[-1]:,.0f} rows/s" for name, rounds in self.rounds.items())

    def _decode_and_run(self, protocol: str) -> object:
        return self.session.run(None, {self.tensor: self.decoded(protocol)})

    def lines(self, targets: list[Target]) -> list[str]:
        def over(target: Target, floor: list[float]) -> float:
            ratios = [m.rate * self.rows / rows_s for m, rows_s in zip(target.rounds, floor, strict=True)]
            return statistics.median(ratios)

        run = self.rounds["run"]
        decoding = ", ".join(f"{p} {statistics.median(self.rounds[p]):,.0f}" for p in self.bodies)
        return [
            f"In-process floor, the same {self.rows}-row batch in the bench's own process "
            f"({self.threads} intra-op thread(s), no HTTP), each target's rows/s over it paired by round:",
            "",
            f"- session.run: {statistics.median(run):,.0f} rows/s; "
            + ", ".join(f"{t.name} {over(t, run):.3f}x" for t in targets),
            f"- decoding the target's own request body (orjson; binary: the header, then the tensor "
            f"in place) and session.run, rows/s: {decoding}; "
            + ", ".join(f"{t.name} {over(t, self.rounds[t.load.protocol]):.3f}x" for t in targets),
        ]


def soak(target: Target, script: Path, seconds: int, connections: int) -> list[str]:
    """``target`` at its peak rate (as fast as answered) for ``seconds``, its resident memory sampled
    every ``seconds / 10``: start, each tenth, end, and the change."""
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while True:
            samples.append((time.monotonic() - started, target.rss_mib()))
            if done.wait(seconds / 10):
                samples.append((time.monotonic() - started, target.rss_mib()))
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        measurement = wrk(target, script, seconds, connections)
    finally:
        done.set()
        sampler.join()
    start_mib, end_mib = samples[0][1], samples[-1][1]
    series = ", ".join(f"{at:.0f} s {mib:.0f}" for at, mib in samples)
    return [
        f"Soak: {target.name} as fast as answered for {seconds} s: {measurement.requests} requests "
        f"({measurement.rate:.0f}/s), p99 {measurement.p99_us / 1000:.2f} ms, "
        f"{measurement.non_2xx + measurement.socket_errors} failed.",
        f"Resident memory of its processes (MiB): start {start_mib:.0f}, end {end_mib:.0f} "
        f"({100 * (end_mib - start_mib) / start_mib:+.1f}%); over time: {series}.",
    ]


def run(args: argparse.Namespace) -> int:
    names = args.targets.split(",")
    unknown = set(names) - set(TARGETS)
    if unknown:
        raise SystemExit(f"unknown targets {sorted(unknown)}; known: {', '.join(TARGETS)}")
    with (
        demo_registry(args.registry) as registry,
        tempfile.TemporaryDirectory() as tmp,
        postgres_for(names, args.postgres_url) as postgres,
    ):
        workdir = Path(tmp)
        features = challengers.champion(Registry(registry))[0].inputs.names
        formats = loads(args.rows, features, workdir)
        script = workdir / "post.lua"
        script.write_text(WRK_SCRIPT)
        targets: list[Target] = []
        try:
            for name in names:
                load = formats[PROTOCOLS.get(name, "records")]
                targets.append(start(name, prepared(name, registry, workdir), workdir, args.workers, load,
                                     Path(args.peer_venvs), postgres))  # fmt: skip
            protocols = list(dict.fromkeys(target.load.protocol for target in targets))
            floor = InProcess(registry, formats, protocols, args.workers)
            measure_rounds(targets, floor, script, args)
            report = table(targets, args.rows)
            report.extend(["", *floor.lines(targets)])
            if args.soak:
                report.extend(["", *soak(targets[-1], script, args.soak, args.connections)])
        finally:
            for target in targets:
                target.stop()
        failures = accounted(targets, report)
        for extra in (monitoring_lines(targets), shadow_lines(targets)):
            if extra:
                report.extend(["", *extra])
        text = "\n".join(header(targets, args) + report + failures) + "\n"
        print(text)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text)
        return 1 if failures else 0


def measure_rounds(targets: list[Target], floor: InProcess, script: Path, args: argparse.Namespace) -> None:
    """A warm-up of each target, then ``args.rounds`` alternating rounds, and the in-process floor."""
    for target in targets:  # warm-up, not counted
        wrk(target, script, args.warmup, args.connections, args.rate)
    for round_ in range(args.rounds):
        order = targets if round_ % 2 == 0 else targets[::-1]
        for target in order:
            time.sleep(args.rest)
            target.rounds.append(wrk(target, script, args.duration, args.connections, args.rate))
            print(f"round {round_ + 1} {target.name}: {target.rounds[-1].rate:.0f} requests/s",
                  file=sys.stderr)  # fmt: skip
        print(f"round {round_ + 1} in-process: {floor.measure(min(args.duration, 6))}", file=sys.stderr)


def accounted(targets: list[Target], report: list[str]) -> list[str]:
    """The failures: requests that failed, and a monitored gateway's requests missing from its log
    (its count goes into ``report``)."""
    failures = []
    for target in targets:
        bad = sum(m.non_2xx + m.socket_errors for m in target.rounds)
        if bad:
            failures.append(f"{target.name}: {bad} requests failed (see {target.output})")
        if TARGETS[target.name].get("MODELGATE_MONITORING") == "true":
            logged = logged_requests(target.log_location)
            # wrk counts the answers inside its window; those in flight at its end are logged too
            report.extend(["", f"{target.name}: {logged} requests in the prediction log, "
                               f"{target.sent} answered within wrk's windows"])  # fmt: skip
            if logged < target.sent:
                failures.append(f"{target.name}: {target.sent - logged} requests missing from the log")
    return failures


def header(targets: list[Target], args: argparse.Namespace) -> list[str]:
    wrk_cpu = max(m.wrk_cpu_s / m.seconds for t in targets for m in t.rounds)
    return [
        f"# modelgate benchmark, {datetime.date.today().isoformat()}",
        "",
        f"Machine: {machine()}.",
        f"Model: {DEMO_MODEL} (demo champion), {args.rows} row(s) a request, in each target's format "
        f"({', '.join(f'{t.name}: {t.load.protocol} to {t.path}' for t in targets)}); "
        f"{args.workers} worker(s) each; wrk -t1 -c{args.connections}"
        f"{f' at about {args.rate:g} requests/s' if args.rate else ''}, {args.rounds} alternating "
        f"rounds of {args.duration:g} s after {args.warmup:g} s of warm-up; medians over the rounds.",
        f"Load generator: at most {100 * wrk_cpu:.0f}% of one core (wrk's own CPU time over a round).",
        "",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    known = ", ".join(TARGETS)
    parser.add_argument("--targets", default="bare,gateway-off,gateway-on,gateway-all",
                        help=f"comma-separated, ratios to the first; known: {known}")  # fmt: skip
    parser.add_argument("--registry", help="a registry holding the demo model; default: build one")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=15, help="seconds a measurement")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load before the rounds")
    parser.add_argument("--rest", type=float, default=5, help="idle seconds before each measured run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=0,
                        help="requests/s in all, about a Poisson stream; 0: as fast as answered")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rows", type=int, default=1, help="rows a request")
    parser.add_argument("--soak", type=int, default=0,
                        help="then load the last target as fast as answered for this many seconds, "
                        "sampling its memory")  # fmt: skip
    parser.add_argument("--peer-venvs", default=str(ROOT / ".venv-peers"),
                        help="where the peers' virtual environments are made (on first use)")  # fmt: skip
    parser.add_argument("--postgres-url",
                        help="a PostgreSQL server for the gateway-pg target (its databases are made there); "
                             "default: a throwaway server of the Debian package")  # fmt: skip
    parser.add_argument("--out", help="also write the markdown report here")
    args = parser.parse_args()
    # a stopped bench stops its servers too (run's finally), not only on Ctrl-C
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
