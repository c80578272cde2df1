"""Versioned, immutable ONNX models with manifests, aliases and an audit history.

Importing it loads no ONNX Runtime, pandas or scikit-learn: the processes that only read the registry
(the log writer, the monitor) stay small; `registry.onnx_model` and `registry.reference` load them.
"""

from registry.aliases import Alias, Aliases, AuditEntry
from registry.errors import (
    AliasError,
    EvaluationRefused,
    IntegrityError,
    InvalidModel,
    InvalidModelName,
    InvalidReferenceData,
    ModelNotFound,
    RegistryError,
    SchemaMismatch,
    VersionNotFound,
)
from registry.manifest import InputSchema, Manifest, OutputSpec, ReferenceProfile
from registry.prediction import Prediction
from registry.store import Mismatch, Registry

__all__ = [
    "Alias",
    "AliasError",
    "Aliases",
    "AuditEntry",
    "EvaluationRefused",
    "InputSchema",
    "IntegrityError",
    "InvalidModel",
    "InvalidModelName",
    "InvalidReferenceData",
    "Manifest",
    "Mismatch",
    "ModelNotFound",
    "OutputSpec",
    "Prediction",
    "ReferenceProfile",
    "Registry",
    "RegistryError",
    "SchemaMismatch",
    "VersionNotFound",
]
