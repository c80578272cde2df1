"""Versioned, immutable ONNX models with manifests, aliases and an audit history."""

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
from registry.onnx_model import OnnxModel, Prediction
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
    "OnnxModel",
    "OutputSpec",
    "Prediction",
    "ReferenceProfile",
    "Registry",
    "RegistryError",
    "SchemaMismatch",
    "VersionNotFound",
]
