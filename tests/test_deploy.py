"""The Kubernetes manifests under deploy/: valid for the API server, and saying what the gateway reads."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import yaml

from registry.store import ENV_VAR
from service.settings import Settings

MANIFESTS = sorted((Path(__file__).parents[1] / "deploy" / "kubernetes").glob("*.yaml"))
ROOT = Path(__file__).parents[1]


def validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    """kubernetes-validate (from PyPI): each resource against the Kubernetes API's own schemas,
    rejecting unknown fields."""
    validator = Path(sys.executable).with_name("kubernetes-validate")
    return subprocess.run(
        [str(validator), "--strict", "--quiet", *map(str, paths)], capture_output=True, text=True
    )


def resources() -> list[dict]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_every_manifest_is_valid_kubernetes():
    assert {p.name for p in MANIFESTS} >= {
        "gateway.yaml",
        "postgres.yaml",
        "prometheus.yaml",
        "registry.yaml",
    }
    result = validate(*MANIFESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_refuses_a_broken_manifest(tmp_path):
    broken = tmp_path / "broken.yaml"
    gateway = (ROOT / "deploy" / "kubernetes" / "gateway.yaml").read_text()
    broken.write_text(gateway.replace("replicas: 3", "replicas: three"))
    assert validate(broken).returncode != 0
    broken.write_text(gateway.replace("terminationGracePeriodSeconds", "terminationGraceSeconds"))
    assert validate(broken).returncode != 0


def test_the_gateway_is_configured_only_with_settings_it_knows():
    known = {ENV_VAR} | {f"MODELGATE_{f.name.upper()}" for f in dataclasses.fields(Settings) if f.init}
    (deployment,) = [
        r for r in resources() if r["kind"] == "Deployment" and r["metadata"]["name"] == "modelgate"
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    names = {variable["name"] for variable in container["env"]}
    assert names <= known and "MODELGATE_LOG_URL" in names
    assert deployment["spec"]["replicas"] > 1


def test_the_prometheus_config_passes_promtool(tool, tmp_path):
    """Debian's prometheus package ships promtool: the scrape job's relabelling and modelgate's rules as
    Prometheus itself reads them. Debian builds Prometheus without Kubernetes discovery, so the job's
    ``kubernetes_sd_configs`` is swapped for a static target here; the rest is checked as written."""
    promtool = tool("promtool")
    (config_map,) = [
        r for r in resources() if r["kind"] == "ConfigMap" and "prometheus.yml" in r.get("data", {})
    ]
    config = yaml.safe_load(config_map["data"]["prometheus.yml"])
    config["rule_files"] = [str(ROOT / "monitoring" / "prometheus" / "alerts.yml")]
    (job,) = config["scrape_configs"]
    assert job.pop("kubernetes_sd_configs") == [{"role": "pod", "namespaces": {"own_namespace": True}}]
    job["static_configs"] = [{"targets": ["127.0.0.1:3000"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
