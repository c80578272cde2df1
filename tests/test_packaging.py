"""Teams that deploy bentos get the same gateway: bentofile.yaml builds and serves."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_bentofile_packages_equal_the_project_dependencies():
    bentofile = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert bentofile["python"]["packages"] == pyproject["project"]["dependencies"]
    assert bentofile["service"] == "service.gateway:Gateway"


@pytest.mark.slow
def test_bentoml_build_and_serve_from_the_bentofile(tmp_path, spawn, cancer_registry, cancer_model):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    bentoml = [sys.executable, "-m", "bentoml"]
    built = subprocess.run(
        [*bentoml, "build", "--output", "tag"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0, built.stderr
    sources = list((tmp_path / "bentoml/bentos/modelgate").glob("*/src/service/gateway.py"))
    assert sources, "the bento carries the service sources"

    server = spawn([*bentoml, "serve", ".", "--port", "{port}"], cwd=ROOT,
                   env={**env, "MODELGATE_REGISTRY": str(cancer_registry.root)})  # fmt: skip
    body = {"inputs": cancer_model.frame.iloc[:2].to_dict(orient="records")}
    answer = httpx.post(f"{server.url}/predict", json=body, timeout=10)
    assert answer.status_code == 200, server.output()[-2000:]
    assert answer.json()["version"] == 1
    # what deploy/kubernetes/gateway.yaml runs in the bento's image: the faster server, started from
    # the bento's own copy of the sources (its working directory there)
    source_dir = sources[0].parents[1]
    deployment = next(
        doc
        for doc in yaml.safe_load_all((ROOT / "deploy/kubernetes/gateway.yaml").read_text())
        if doc["kind"] == "Deployment"
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["workingDir"] == "/home/bentoml/bento/src"
    assert container["command"][:3] == ["python", "-m", "service"]
    command = [sys.executable, *container["command"][1:]]
    command[command.index("--port") + 1] = "{port}"
    command[command.index("--host") + 1] = "127.0.0.1"
    fast = spawn(command, cwd=source_dir, env={**env, "MODELGATE_REGISTRY": str(cancer_registry.root),
                                               "PYTHONPATH": ""})  # fmt: skip
    answer = httpx.post(f"{fast.url}/predict", json=body, timeout=10)
    assert answer.status_code == 200, fast.output()[-2000:]
