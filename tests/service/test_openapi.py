"""The OpenAPI document: typed from the served models' schemas, kept true as they change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.settings import Settings


def test_features_are_typed_from_the_champion_schema(registry, columns_model, cancer_model):
    registry.push(columns_model.onnx, "columns", columns_model.reference)
    registry.promote("columns", 1, "champion")
    with TestClient(
        create_app(Settings(registry=registry.root, poll_interval=3600, max_batch_rows=70))
    ) as client:
        document = client.get("/openapi.json").json()
        assert document["openapi"].startswith("3.0")
        schemas = document["components"]["schemas"]
        inputs = schemas["columns.PredictRequest"]["properties"]["inputs"]
        assert inputs == {"$ref": "#/components/schemas/columns.Inputs"}
        record = schemas["columns.Inputs"]["oneOf"][0]
        assert record["maxItems"] == 70
        assert record["items"]["properties"]["color"] == {"type": "string"}
        size = record["items"]["properties"]["size"]  # the reference had missing sizes: null accepted
        assert size["type"] == "number" and size["nullable"] is True and size["maximum"] > 3e38
        assert "cancer.PredictRequest" not in document["components"]["schemas"]

        # a new model is in the document once the gateway serves it
        registry.push(cancer_model.onnx, "cancer", cancer_model.reference)
        registry.promote("cancer", 1, "champion")
        client.app.state.context.pool.refresh()
        document = client.get("/openapi.json").json()
        request = document["components"]["schemas"]["cancer.PredictRequest"]
        assert request["required"] == ["inputs", "model"]  # two models served: model is required
        inputs = document["components"]["schemas"]["cancer.Inputs"]
        assert len(inputs["oneOf"][0]["items"]["properties"]) == 30
        for path in ("/predict", "/v2/models/{name}/infer", "/v1/models/{name}:predict", "/invocations"):
            operation = document["paths"][path]["post"]
            assert {"200", "400", "404", "413", "422", "503"} <= set(operation["responses"]), path
        name = document["paths"]["/v2/models/{name}/infer"]["post"]["parameters"][0]
        assert sorted(name["schema"]["enum"]) == ["cancer", "columns"]
        assert document["components"]["responses"]["422"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }


def test_docs_page_is_served_without_a_cdn(cancer_registry):
    with TestClient(create_app(Settings(registry=cancer_registry.root, poll_interval=3600))) as client:
        page = client.get("/docs")
        assert page.status_code == 200 and "/openapi.json" in page.text and "https://" not in page.text
        for asset in ("/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css"):
            assert client.get(asset).status_code == 200


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(
    gateway_factory, cancer_registry, tmp_path
):
    """Generated requests against every documented route, checked for 5xx, undocumented statuses,
    content types, headers and answers that break their schema. Not checked: that every
    schema-valid request is accepted (JSON Schema cannot say that a tensor's data fills its shape,
    or that columns have one length), and that every schema-invalid one is refused (a feedback
    list answers 207 with each bad item's own status)."""
    gateway = gateway_factory(cancer_registry, MODELGATE_ADMIN_TOKEN="t0ken")
    run = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "run", f"{gateway.url}/openapi.json",
         "--max-examples", "15", "--checks", "all",
         "--exclude-checks", "positive_data_acceptance,negative_data_rejection",
         "--seed", "1", "--no-color", "--request-timeout", "20"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-6000:]
    assert " passed" in run.stdout and "Server error" not in run.stdout
