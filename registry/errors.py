"""Every error the registry raises, under one base.

Each message names what was wrong and what was expected, so a CLI user can
fix the problem without reading a traceback.
"""

from __future__ import annotations


class RegistryError(Exception):
    """Base of every registry error. The registry is unchanged when one is raised."""


class InvalidModelName(RegistryError):
    """A model name is empty, too long, or holds path or shell characters."""


class ModelNotFound(RegistryError):
    """No model of that name exists in the registry."""


class VersionNotFound(RegistryError):
    """The model exists but has no such version."""


class InvalidModel(RegistryError):
    """The ONNX file is missing, unreadable, does not load in ONNX Runtime,
    or has an input/output signature the gateway cannot serve."""


class InvalidReferenceData(RegistryError):
    """The reference data file is missing, unreadable, empty, or of an unknown format."""


class SchemaMismatch(RegistryError):
    """The reference data does not fit the model's inputs (names, count or dtypes)."""


class IntegrityError(RegistryError):
    """A stored file's hash or size no longer matches its manifest."""


class AliasError(RegistryError):
    """An alias operation cannot be done: unknown alias, or nothing to roll back to."""


class EvaluationRefused(RegistryError):
    """A version cannot be evaluated against the champion: no champion, a version pair no labelled
    data fits, or labelled data that lacks what the versions need."""
