"""The servers users would pick instead of the gateway, as benchmark targets: MLServer, KServe, and
a hand-written FastAPI app, each serving the same ONNX file from its own virtual environment (their
pins conflict with ours), created on first use with pinned versions.

Each gets the peer's best set-up measured on a 2-core machine, and otherwise its defaults: MLServer
with ``parallel_workers`` 0 (inference in the server's own process; its default of one inference
worker process answered 540 requests/s against 1,244, and needs uvloop < 0.21), KServe's model
server with one worker, FastAPI on uvicorn with uvloop and httptools. Every session gets the
intra-op threads the gateway's would.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

SERVERS = Path(__file__).resolve().parent / "peer_servers"


@dataclass(frozen=True)
class Peer(ABC):
    """One peer server: what its environment installs, and the protocol it speaks."""

    packages: tuple[str, ...]
    #: "v2-json" (Open Inference Protocol JSON tensors) or "v1" (KServe's instances)
    protocol: str
    ready_path: str

    @abstractmethod
    def command(self, python: Path, port: int, workdir: Path) -> list[str]:
        """The command that serves the ONNX file named by ``PEER_MODEL`` on ``port``."""


class MLServer(Peer):
    def command(self, python: Path, port: int, workdir: Path) -> list[str]:
        folder = workdir / "mlserver"
        (folder / "bare").mkdir(parents=True, exist_ok=True)
        shutil.copy(SERVERS / "mlserver" / "runtime.py", folder / "runtime.py")
        settings = {"host": "127.0.0.1", "http_port": port, "grpc_port": free_port(),
                    "metrics_port": free_port(), "parallel_workers": 0}  # fmt: skip
        (folder / "settings.json").write_text(json.dumps(settings))
        model = {"name": "bare", "implementation": "runtime.OnnxRuntime"}
        (folder / "bare" / "model-settings.json").write_text(json.dumps(model))
        return [str(python.with_name("mlserver")), "start", str(folder)]


class KServe(Peer):
    def command(self, python: Path, port: int, workdir: Path) -> list[str]:
        return [str(python), str(SERVERS / "kserve_app.py"), "--http_port", str(port)]


class FastAPI(Peer):
    def command(self, python: Path, port: int, workdir: Path) -> list[str]:
        return [str(python), str(SERVERS / "fastapi_app.py"), "--port", str(port)]


ONNXRUNTIME = f"onnxruntime=={version('onnxruntime')}"  # the gateway's, so the model runs alike
PEERS: dict[str, Peer] = {
    "mlserver": MLServer(("mlserver==1.7.1", ONNXRUNTIME), "v2-json", "/v2/health/ready"),
    "kserve": KServe(("kserve==0.21.0", ONNXRUNTIME), "v1", "/v1/models/bare"),
    "fastapi": FastAPI(("fastapi==0.165.0", "uvicorn[standard]==0.55.0", "orjson==3.13.0", ONNXRUNTIME),
                       "v2-json", "/v2/health/ready"),
}  # fmt: skip


def python(name: str, venvs: Path) -> Path:
    """The peer's interpreter, in ``venvs/name``; the environment is made and filled the first time."""
    peer = PEERS[name]
    home = venvs / name
    interpreter = home / "bin" / "python"
    stamp = home / ".installed"
    wanted = "\n".join(peer.packages)
    if not stamp.exists() or stamp.read_text() != wanted:
        print(f"installing {name}'s environment in {home}: {' '.join(peer.packages)}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(home)], check=True)
        subprocess.run([str(interpreter), "-m", "pip", "install", "--quiet", *peer.packages], check=True)
        stamp.write_text(wanted)
    return interpreter


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
