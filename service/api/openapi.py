"""The OpenAPI 3 document of the gateway, generated from the models it serves now.

Each served model's champion schema types its features (number, integer or
string; nullable where the reference data had missing values; float32 inputs
bounded by float32's range), so the document changes when a promotion changes
a schema. Every route is described with the statuses it answers and the one
error shape they share.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, get_args

from registry.aliases import Alias, Arm, LogPolicy, RoutingPolicy
from registry.manifest import FeatureSpec, InputSchema
from service.serving import datatypes
from service.serving.pool import ServedVersion

FLOAT32_MAX = 3.4028234663852886e38
JSON = "application/json"

#: what each error status means, on every route that answers it
ERRORS = {
    "400": "Not JSON, not an object, an unknown or ill-typed field, or a model that must be named",
    "401": "No bearer token where one is required",
    "403": "A wrong bearer token, or admin routes disabled",
    "404": "Unknown model, version or route",
    "405": "A known route with another method",
    "409": "The model's state does not allow the action",
    "413": "More rows or bytes than the configured limits",
    "415": "A body in a format the route does not read",
    "422": "Inputs that do not fit the model's schema (the field and the reason are named)",
    "503": "The model has no champion loaded, a version fails its hash check, or the prediction log is "
    "backed up (Retry-After says when to try again)",
}


#: a number the model answered: null where it answered NaN (plausibility flags it; MODELGATE_REJECT_RULES
#: can refuse it with a 422 instead)
ANSWERED_NUMBER = {"type": "number", "nullable": True}


def _oas30(schema: Any) -> Any:
    """A JSON Schema (pydantic's) as OpenAPI 3.0 has it: a numeric ``exclusiveMinimum`` becomes
    ``minimum`` with ``exclusiveMinimum: true`` (likewise maximum)."""
    if isinstance(schema, list):
        return [_oas30(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: _oas30(value) for key, value in schema.items()}
    for bound in ("Minimum", "Maximum"):
        value = converted.get(f"exclusive{bound}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            converted[bound.lower()] = value
            converted[f"exclusive{bound}"] = True
    return converted


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _value(spec: FeatureSpec) -> dict[str, Any]:
    if spec.dtype == "string":
        schema: dict[str, Any] = {"type": "string"}
    elif spec.dtype == "int64":
        schema = {"type": "integer", "format": "int64"}
    elif spec.dtype == "float32":
        schema = {"type": "number", "format": "float", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}
    else:
        schema = {"type": "number", "format": "double"}
    if spec.allow_missing:
        schema["nullable"] = True
    return schema


def _inputs(schema: InputSchema, max_rows: int) -> dict[str, Any]:
    """Records, columns, or rows of values in the schema's order; nothing, for a tensor model."""
    if schema.layout == "tensor":
        return {"not": {}, "description": "This model takes tensors: send them to /v2/models/{name}/infer"}
    names = list(schema.names)
    record = {
        "type": "object",
        "properties": {spec.name: _value(spec) for spec in schema.features},
        "required": names,
        "additionalProperties": False,
    }
    columns = {
        "type": "object",
        "properties": {
            spec.name: {"type": "array", "items": _value(spec), "minItems": 1, "maxItems": max_rows}
            for spec in schema.features
        },
        "required": names,
        "additionalProperties": False,
        "description": "One list of values a feature, all of one length",
    }
    kinds = [_value(spec) for spec in schema.features]
    rows = {
        "type": "array",
        "items": {"type": "array", "minItems": len(names), "maxItems": len(names),
                  "items": kinds[0] if all(kind == kinds[0] for kind in kinds) else {},
                  "description": f"Values in this order: {', '.join(names)}"},
        "minItems": 1,
        "maxItems": max_rows,
    }  # fmt: skip
    return {
        "oneOf": [{"type": "array", "items": record, "minItems": 1, "maxItems": max_rows}, columns, rows],
        "description": "Records (one object a row), columns (one list a feature) or rows of values",
    }


def _prediction(served: ServedVersion) -> dict[str, Any]:
    output = served.manifest.output
    if output.kind == "regression":
        return {"type": "object", "properties": {"value": ANSWERED_NUMBER}, "required": ["value"]}
    if output.kind == "embedding":
        vector = {"type": "array", "items": ANSWERED_NUMBER}
        return {"type": "object", "properties": {"embedding": vector}, "required": ["embedding"]}
    return {
        "type": "object",
        "properties": {
            "label": {"type": "integer" if served.label_datatype == "INT64" else "string"},
            "probabilities": {
                "type": "object",
                "properties": {name: ANSWERED_NUMBER for name in output.classes},
            },
        },
        "required": ["label", "probabilities"],
    }


def _model_schemas(served: ServedVersion, several: bool, max_rows: int) -> dict[str, Any]:
    name = served.name
    required = ["inputs", "model"] if several else ["inputs"]
    request = {
        "type": "object",
        "properties": {
            "model": {"type": "string", "enum": [name]},
            "version": {
                "type": "integer",
                "nullable": True,
                "description": "Pin a version instead of the champion",
            },
            "inputs": _ref(f"{name}.Inputs"),
            "routing_key": {"type": "string", "minLength": 1, "nullable": True},
        },
        "required": required,
        "additionalProperties": False,
    }
    plain: dict[str, Any] = {"type": "integer" if served.label_datatype == "INT64" else "string"}
    if served.manifest.output.kind == "regression":
        plain = ANSWERED_NUMBER
    elif served.manifest.output.kind == "embedding":
        plain = {"type": "array", "items": ANSWERED_NUMBER}
    return {
        f"{name}.PredictRequest": request,
        f"{name}.Prediction": _prediction(served),
        f"{name}.Inputs": _inputs(served.manifest.inputs, max_rows),
        f"{name}.PlainPrediction": plain,
    }


def _responses(ok: dict[str, Any] | None, *errors: str, description: str = "Answered") -> dict[str, Any]:
    answers: dict[str, Any] = {"200": {"description": description}}
    if ok is not None:
        answers["200"]["content"] = {JSON: {"schema": ok}}
    for status in errors:
        answers[status] = {"$ref": f"#/components/responses/{status}"}
    return answers


def _exactly_one(forms: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """An object carrying exactly one of ``forms`` (and any of ``optional``)."""
    return {
        "oneOf": [
            {"type": "object", "properties": {key: schema, **optional}, "required": [key],
             "additionalProperties": False}
            for key, schema in forms.items()
        ]
    }  # fmt: skip


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": schema}}}


def _name_parameter(names: list[str]) -> dict[str, Any]:
    return {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": names}}


VERSION_PARAMETER = {"name": "version", "in": "path", "required": True,
                     "schema": {"type": "string", "pattern": "^[0-9]+$"}}  # fmt: skip
MODEL_QUERY = {"name": "model", "in": "query", "required": False, "schema": {"type": "string"},
               "description": "The model; may be left out when one is served"}  # fmt: skip
PREDICTING = ("400", "404", "413", "422", "503")
FRAGMENT = {"name": "fragment", "in": "query", "required": False, "schema": {"type": "string", "enum": ["1"]},
            "description": "1: only the view's <main>, as the page refreshes it"}  # fmt: skip
CARD_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"},
                "description": "a version number, champion, challenger or latest"}  # fmt: skip
CARD_FORMAT = {"name": "format", "in": "query", "required": False,
               "schema": {"type": "string", "enum": ["html", "markdown"]}}  # fmt: skip


def _html(description: str, *errors: str, markdown: bool = False) -> dict[str, Any]:
    """A page's answers: HTML (or Markdown too), and ``errors`` in JSON."""
    content = {"text/html": {"schema": {"type": "string"}}}
    if markdown:
        content["text/markdown"] = {"schema": {"type": "string"}}
    return {**_responses(None, *errors), "200": {"description": description, "content": content}}


class Described(Protocol):
    """A route as the route table declares it."""

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def summary(self) -> str: ...


def _shared_schemas(names: list[str]) -> dict[str, Any]:
    """The schemas every document has: the error, v2 tensors, the plain predictions, routing."""
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "properties": {
                "error": {"type": "string"},
                "request_id": {"type": "string"},
                "field": {"type": "string", "description": "Where: inputs[3].mean_radius, inputs.size[0]"},
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
            },
            "required": ["error"],
        },
        "Tensor": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
                "datatype": {"type": "string", "enum": list(datatypes.WIRE)},
                "data": {"type": "array", "items": {}},
                "parameters": {"type": "object"},
            },
            "required": ["name", "shape", "datatype", "data"],
        },
        "InferenceRequest": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "inputs": {"type": "array", "items": _ref("Tensor"), "minItems": 1},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                        "required": ["name"],
                    },
                },
            },
            "required": ["inputs"],
            "description": "JSON; or, with Inference-Header-Content-Length, this JSON then binary tensor "
            "data (an input's parameters.binary_data_size in place of its data)",
        },
        "InferenceResponse": {
            "type": "object",
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "outputs": {"type": "array", "items": _ref("Tensor")},
            },
            "required": ["model_name", "model_version", "outputs"],
        },
        "Predictions": {
            "type": "object",
            "properties": {
                "predictions": {
                    "type": "array",
                    "items": {"anyOf": [_ref(f"{n}.PlainPrediction") for n in names]} if names else {},
                }
            },
            "required": ["predictions"],
            "description": "The label a row for classifiers, the value for regressors",
        },
        "RoutingRequest": {**_oas30(RoutingPolicy.model_json_schema()), "title": "RoutingRequest"},
    }
    schemas["RoutingRequest"]["properties"]["reason"] = {"type": "string"}
    schemas["LogPolicyRequest"] = {**_oas30(LogPolicy.model_json_schema()), "title": "LogPolicyRequest"}
    schemas["LogPolicyRequest"]["properties"]["reason"] = {"type": "string"}
    return schemas


def _described(names: list[str]) -> dict[str, dict[str, Any]]:
    """Each route's parameters, body and answers, by path and method (its summary is the table's)."""
    several = len(names) > 1
    obj: dict[str, Any] = {"type": "object"}
    requests = [_ref(f"{n}.PredictRequest") for n in names]
    predict_request: dict[str, Any] = {"oneOf": requests} if several else requests[0] if names else obj
    # anyOf: two models' answers may look alike
    prediction: dict[str, Any] = {"anyOf": [_ref(f"{n}.Prediction") for n in names]} if names else {}
    predict_response = {
        "type": "object",
        "properties": {
            "request_id": {"type": "string"},
            "model": {"type": "string"},
            "version": {"type": "integer"},
            "arm": {"type": "string", "enum": [arm for arm in get_args(Arm) if arm != "shadow"]},
            "predictions": {"type": "array", "items": prediction},
        },
        "required": ["request_id", "model", "version", "arm", "predictions"],
    }
    name = _name_parameter(names)
    choices = {"method": {"type": "string", "enum": ["tree", "sampling"]},
               "space": {"type": "string", "enum": ["margin", "probability", "value"]}}  # fmt: skip
    mlflow_inputs = {"oneOf": [_ref(f"{n}.Inputs") for n in names]} if names else {}
    return {
        "/predict": {"post": {
            "requestBody": _body(predict_request),
            "responses": _responses(predict_response, *PREDICTING),
        }},
        "/feedback": {"post": {
            "requestBody": _body({"oneOf": [
                {"type": "object", "properties": {"request_id": {"type": "string"}, "ground_truth": {},
                                                  "reward": {"type": "number"}},
                 "required": ["request_id"], "additionalProperties": False,
                 "anyOf": [{"required": ["ground_truth"]}, {"required": ["reward"]}]},
                {"type": "object", "properties": {"feedback": {"type": "array", "items": {"type": "object"},
                                                             "minItems": 1}},
                 "required": ["feedback"], "additionalProperties": False}]}),
            "responses": {**_responses(obj, "400", "404", "409", "413", "422", "503"),
                          "207": {"description": "Some items refused; each has its own status",
                                  "content": {JSON: {"schema": obj}}}},
        }},
        "/explain": {"post": {
            "requestBody": _body({"oneOf": [
                {"type": "object", "properties": {"model": {"type": "string"}, "version": {"type": "integer"},
                                                  "inputs": {"type": ["array", "object"]}, **choices},
                 "required": ["inputs"], "additionalProperties": False},
                {"type": "object", "properties": {"request_id": {"type": "string"}, **choices},
                 "required": ["request_id"], "additionalProperties": False}]}),
            "responses": _responses(obj, "400", "404", "413", "422"),
        }},
        "/models": {"get": {"responses": _responses(obj)}},
        "/monitoring/drift": {"get": {"parameters": [MODEL_QUERY],
                                      "responses": _responses(obj, "400", "404")}},
        "/monitoring/compare": {"get": {"parameters": [MODEL_QUERY],
                                        "responses": _responses(obj, "400", "404")}},
        "/monitoring/alerts": {"get": {"responses": _responses(obj, "404")}},
        "/monitoring/status": {"get": {"responses": _responses(obj, "404")}},
        "/admin/models/{name}/routing": {"put": {
            "security": [{"bearer": []}], "parameters": [name],
            "requestBody": _body(_ref("RoutingRequest")),
            "responses": _responses(obj, "400", "401", "403", "404", "409", "422"),
        }},
        "/admin/models/{name}/log-policy": {"put": {
            "security": [{"bearer": []}], "parameters": [name],
            "requestBody": _body(_ref("LogPolicyRequest")),
            "responses": _responses(obj, "400", "401", "403", "404", "409", "422"),
        }},
        "/admin/models/{name}/promote": {"post": {
            "security": [{"bearer": []}], "parameters": [name],
            "requestBody": _body({"type": "object", "properties": {
                "version": {"oneOf": [{"type": "integer"},
                                      {"type": "string", "enum": ["challenger", "latest"]}]},
                "to": {"type": "string", "enum": list(get_args(Alias))}, "reason": {"type": "string"}}}),
            "responses": _responses(obj, "400", "401", "403", "404", "409", "422"),
        }},
        "/admin/models/{name}/rollback": {"post": {
            "security": [{"bearer": []}],
            "parameters": [name],
            "requestBody": _body({"type": "object", "properties": {"reason": {"type": "string"}}}),
            "responses": _responses(obj, "400", "401", "403", "404", "409", "422"),
        }},
        "/v2": {"get": {"responses": _responses(obj)}},
        "/v2/health/live": {"get": {"responses": _responses(obj)}},
        "/v2/health/ready": {"get": {"responses": _responses(obj, "503")}},
        "/v2/models/{name}": {"get": {"parameters": [name],
                                      "responses": _responses(obj, "404", "503")}},
        "/v2/models/{name}/ready": {"get": {"parameters": [name],
                                            "responses": _responses(obj, "404", "503")}},
        "/v2/models/{name}/versions/{version}": {"get": {
            "parameters": [name, VERSION_PARAMETER],
            "responses": _responses(obj, "404", "503")}},
        "/v2/models/{name}/versions/{version}/ready": {"get": {
            "parameters": [name, VERSION_PARAMETER],
            "responses": _responses(obj, "404", "503")}},
        "/v2/models/{name}/infer": {"post": {
            "parameters": [name], "requestBody": _body(_ref("InferenceRequest")),
            "responses": _responses(_ref("InferenceResponse"), *PREDICTING),
        }},
        "/v2/models/{name}/versions/{version}/infer": {"post": {
            "parameters": [name, VERSION_PARAMETER], "requestBody": _body(_ref("InferenceRequest")),
            "responses": _responses(_ref("InferenceResponse"), *PREDICTING),
        }},
        "/v1/models": {"get": {"responses": _responses(obj)}},
        "/v1/models/{name}": {"get": {"parameters": [name],
                                      "responses": _responses(obj, "404", "503")}},
        "/v1/models/{name}:predict": {"post": {
            "parameters": [name],
            "requestBody": _body(_exactly_one({"instances": mlflow_inputs, "inputs": mlflow_inputs})),
            "responses": _responses(_ref("Predictions"), *PREDICTING),
        }},
        "/invocations": {"post": {
            "parameters": [MODEL_QUERY],
            "requestBody": _body(_exactly_one({
                "dataframe_split": {"type": "object", "properties": {
                    "columns": {"type": "array", "items": {"type": "string"}},
                    "data": {"type": "array", "items": {"type": "array"}}, "index": {"type": "array"}},
                    "required": ["data"], "additionalProperties": False},
                "dataframe_records": {"type": "array", "items": {"type": "object"}},
                "instances": mlflow_inputs, "inputs": mlflow_inputs}, params={})),
            "responses": _responses(_ref("Predictions"), *PREDICTING, "415"),
        }},
        "/ping": {"get": {"responses": _responses(obj, "503")}},
        "/health": {"get": {"responses": _responses(obj, "503")}},
        "/livez": {"get": {"responses": _responses(obj)}},
        "/readyz": {"get": {"responses": _responses(obj, "503")}},
        "/metrics": {"get": {"responses": {
            "200": {"description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/": {"get": {"responses": _responses(obj)}},
        "/openapi.json": {"get": {"responses": _responses(obj)}},
        "/docs": {"get": {"responses": {
            "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
        "/ui": {"get": {"parameters": [FRAGMENT], "responses": _html("The page")}},
        **{f"/ui/models/{{name}}{view}": {"get": {"parameters": [name, FRAGMENT],
                                                  "responses": _html("The page", "404")}}
           for view in ("", "/quality", "/compare", "/history")},
        "/models/{name}/versions/{version}/card": {"get": {
            "parameters": [name, CARD_VERSION, CARD_FORMAT],
            "responses": _html("The card", "400", "404", markdown=True)}},
    }  # fmt: skip


def document(
    served: list[ServedVersion], version: str, max_rows: int, routes: Iterable[Described]
) -> dict[str, Any]:
    """The whole document for the champions in ``served``: each of ``routes`` (the route table),
    with its summary from the table and its parameters, bodies and answers from here."""
    names = [s.name for s in served]
    schemas = _shared_schemas(names)
    for model in served:
        schemas.update(_model_schemas(model, len(served) > 1, max_rows))
    described = _described(names)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        method = route.method.lower()
        paths.setdefault(route.path, {})[method] = {"summary": route.summary, **described[route.path][method]}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "modelgate",
            "version": version,
            "description": "A model serving gateway for versioned ONNX models, with built-in monitoring. "
            + (f"Serving: {', '.join(f'{s.name} v{s.version}' for s in served)}." if served else ""),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                status: {"description": text, "content": {JSON: {"schema": _ref("Error")}}}
                for status, text in ERRORS.items()
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
