"""The registry: versioned, immutable ONNX models with manifests, aliases and audit, on a directory.

Layout under the root::

    models/NAME/versions/N/{model.onnx, manifest.json, SHA256SUMS}   read-only once written
    models/NAME/history.jsonl    append-only audit; aliases are a fold over it
    models/NAME/.lock            flock serialising writers of NAME
    models/NAME/.staging/ID/     a push in progress; renamed into versions/ in one step

A push is validated completely (model loads, reference fits, profile built)
before anything is written, then written to a staging directory, fsynced and
renamed into place: a crash leaves either no version or a whole one.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
from pydantic import ValidationError

from registry.aliases import ALIASES, Alias, Aliases, AuditEntry, RoutingPolicy, Trigger, fold
from registry.calibration import MIN_CALIBRATION_ROWS, calibrate
from registry.errors import (
    AliasError,
    IntegrityError,
    InvalidModel,
    InvalidModelName,
    InvalidReferenceData,
    ModelNotFound,
    SchemaMismatch,
    VersionNotFound,
)
from registry.evaluation import Evaluation
from registry.manifest import (
    MISSING_STRING,
    Calibration,
    FeatureSpec,
    InputSchema,
    Lineage,
    Manifest,
    OutputSpec,
)
from registry.onnx_model import (
    NUMPY_DTYPE,
    ONNX_TO_DTYPE,
    OnnxModel,
    Prediction,
    graph_inputs,
    load_session,
    output_spec,
    tensor_output_spec,
)
from registry.profile import clock_of, default_rules, reference_profile
from registry.tensors import (
    ONNX_TENSOR_TYPES,
    all_summaries,
    read_tensor_reference,
    reference_arrays,
    tensor_schema,
)

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
CHECKSUMS_FILE = "SHA256SUMS"
HISTORY_FILE = "history.jsonl"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ENV_VAR = "MODELGATE_REGISTRY"
DEFAULT_ROOT = ".modelgate/registry"


def default_actor() -> str:
    """Who the audit history names: ``MODELGATE_ACTOR``, else user@host."""
    return os.environ.get("MODELGATE_ACTOR") or f"{getpass.getuser()}@{socket.gethostname()}"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise InvalidModelName(
            f"invalid model name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no '/', spaces or path components)"
        )
    return name


@dataclass(frozen=True)
class Mismatch:
    """One problem ``verify`` found: which file, and what is wrong with it."""

    name: str
    version: int
    file: str
    problem: str


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


#: reference files holding tensors, for a tensor model
TENSOR_SUFFIXES = (".npz", ".npy")


def read_reference(path: Path, target: str | None = None) -> tuple[pd.DataFrame, pd.Series | None]:
    """Reference data from CSV or Parquet, and its ``target`` column apart when one is named."""
    if not path.is_file():
        raise InvalidReferenceData(f"reference data {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise InvalidReferenceData(
                f"reference data {str(path)!r}: unknown format {suffix!r}; use .csv or .parquet "
                "(or .npz, .npy: tensors, for a tensor model)"
            )
    except InvalidReferenceData:
        raise
    except Exception as exc:
        raise InvalidReferenceData(f"cannot read reference data {str(path)!r}: {exc}") from exc
    truth = None
    if target is not None:
        if target not in frame.columns:
            raise InvalidReferenceData(f"target column {target!r} is not in the reference data")
        truth = frame[target]
        frame = frame.drop(columns=[target])
    if frame.empty:
        raise InvalidReferenceData(f"reference data {str(path)!r} has no rows")
    return frame, truth


def _time_column(frame: pd.DataFrame, name: str) -> pd.Series:
    """The reference's time column, checked to be read as times (epoch seconds, or ISO 8601 text)."""
    if name not in frame.columns:
        raise InvalidReferenceData(f"time column {name!r} is not in the reference data")
    times = frame[name]
    if times.isna().any():
        raise InvalidReferenceData(f"time column {name!r}: {int(times.isna().sum())} rows have no time")
    try:
        clock_of(times)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidReferenceData(
            f"time column {name!r}: not times (epoch seconds or ISO 8601 text): {str(exc)[:200]}"
        ) from None
    return times


def calibration_of(output: OutputSpec, prediction: Prediction, truth: pd.Series | None) -> Calibration | None:
    """A classifier's calibration on labelled reference rows (see ``monitoring.estimate``); None for
    a regressor, without labels, or with too few of them."""
    if output.kind != "classification" or truth is None:
        return None
    labelled = truth.notna().to_numpy()
    if labelled.sum() < MIN_CALIBRATION_ROWS:
        return None
    values = truth[labelled].astype(str)
    unknown = sorted(set(values) - set(output.classes))
    if unknown:
        raise InvalidReferenceData(
            f"target column {truth.name!r} holds {unknown[:5]}, not among the model's classes "
            f"{list(output.classes)}"
        )
    assert prediction.probabilities is not None
    return calibrate(prediction.probabilities[labelled], values.tolist(), output.classes)


def _column_fits(frame: pd.DataFrame, column: str, dtype: str) -> None:
    series = frame[column]
    if dtype == "string":
        return
    if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        raise SchemaMismatch(
            f"reference column {column!r} has dtype {series.dtype}, the model expects {dtype}"
        )
    if dtype == "int64" and series.isna().any():
        raise SchemaMismatch(f"reference column {column!r} has missing values; the model input is int64")


def infer_schema(model: Any, frame: pd.DataFrame) -> InputSchema:
    """Match the graph's inputs with the reference columns, or say exactly how they differ."""
    nodes = model.get_inputs()
    for node in nodes:
        if node.type in ONNX_TENSOR_TYPES and (len(node.shape) >= 3 or node.type not in ONNX_TO_DTYPE):
            raise SchemaMismatch(
                f"input {node.name!r} ({node.type} {list(node.shape)}) is a tensor input, not a table's "
                f"columns: push its reference tensors as .npz (one array per input: "
                f"{', '.join(n.name for n in nodes)}) or .npy"
            )
    inputs = graph_inputs(model)
    columns = [str(c) for c in frame.columns]
    if len(inputs) == 1 and len(inputs[0].shape) == 2:
        tensor = inputs[0]
        width = tensor.shape[1]
        if isinstance(width, int) and width != len(columns):
            raise SchemaMismatch(
                f"the model input {tensor.name!r} takes {width} features, the reference data has "
                f"{len(columns)} columns ({', '.join(columns[:8])}{', ...' if len(columns) > 8 else ''})"
            )
        for column in columns:
            _column_fits(frame, column, tensor.dtype)
        features = tuple(
            FeatureSpec(name=c, dtype=tensor.dtype, allow_missing=bool(frame[c].isna().any()))
            for c in columns
        )
        return InputSchema(
            layout="matrix", features=features, tensor_name=tensor.name, tensor_dtype=tensor.dtype
        )
    names = [i.name for i in inputs]
    missing = [n for n in names if n not in columns]
    extra = [c for c in columns if c not in names]
    if missing or extra:
        raise SchemaMismatch(
            "the model's inputs and the reference columns differ: "
            f"missing from the reference: {missing or 'none'}; not model inputs: {extra or 'none'}"
        )
    for graph_input in inputs:
        rank = len(graph_input.shape)
        if rank not in (1, 2) or (rank == 2 and graph_input.shape[1] not in (1, None)):
            raise InvalidModel(
                f"input {graph_input.name!r} has shape {list(graph_input.shape)}; a per-feature "
                "input must be [N] or [N, 1]"
            )
        _column_fits(frame, graph_input.name, graph_input.dtype)
    features = tuple(
        FeatureSpec(name=i.name, dtype=i.dtype, allow_missing=bool(frame[i.name].isna().any()))
        for i in inputs
    )
    return InputSchema(layout="columns", features=features)


def string_column(series: pd.Series) -> np.ndarray:
    """A string feature as its model receives it: a null is :data:`MISSING_STRING`, as at serving time."""
    column: np.ndarray = (
        series.astype(object).where(series.notna(), MISSING_STRING).astype(str).to_numpy(dtype=object)
    )
    return column


def reference_feeds(model: OnnxModel, frame: pd.DataFrame) -> dict[str, Any]:
    schema = model.schema
    if schema.layout == "matrix":
        assert schema.tensor_dtype is not None
        matrix = frame[list(schema.names)].to_numpy(dtype=NUMPY_DTYPE[schema.tensor_dtype])
        return model.feeds(None, matrix)
    columns = {
        f.name: (
            string_column(frame[f.name])
            if f.dtype == "string"
            else frame[f.name].to_numpy(dtype=NUMPY_DTYPE[f.dtype])
        )
        for f in schema.features
    }
    return model.feeds(columns, None)


def refusal(history: list[AuditEntry], version: int, champion: int | None) -> AuditEntry | None:
    """The latest evaluation of ``version`` against ``champion``, when it refused the version."""
    for entry in reversed(history):
        if entry.action == "evaluate" and entry.to_version == version and entry.from_version == champion:
            return entry if entry.evaluation is not None and entry.evaluation.verdict == "refuse" else None
    return None


class Registry:
    """A registry rooted at a directory. Safe for several processes: writers take a per-model lock."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @classmethod
    def from_env(cls, root: str | None = None) -> Registry:
        """``root`` if given, else ``MODELGATE_REGISTRY``, else ``.modelgate/registry``."""
        return cls(root or os.environ.get(ENV_VAR) or DEFAULT_ROOT)

    # -- reading -----------------------------------------------------------------

    def _model_dir(self, name: str) -> Path:
        return self.root / "models" / check_name(name)

    def _version_dir(self, name: str, version: int) -> Path:
        return self._model_dir(name) / "versions" / str(version)

    def models(self) -> list[str]:
        """Names with at least one version, sorted."""
        base = self.root / "models"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if NAME_PATTERN.match(p.name) and self._versions_in(p))

    @staticmethod
    def _versions_in(model_dir: Path) -> list[int]:
        versions_dir = model_dir / "versions"
        if not versions_dir.is_dir():
            return []
        return sorted(int(p.name) for p in versions_dir.iterdir() if p.name.isascii() and p.name.isdigit())

    def versions(self, name: str) -> list[int]:
        versions = self._versions_in(self._model_dir(name))
        if not versions:
            raise ModelNotFound(f"model {name!r} not found in {self.root}; known: {self.models() or 'none'}")
        return versions

    def resolve(self, name: str, ref: str | int | None = None) -> int:
        """A version number from a number, ``champion``, ``challenger``, ``latest`` or None (champion)."""
        versions = self.versions(name)
        if ref is None or ref == "champion" or ref == "challenger":
            alias: Alias = "challenger" if ref == "challenger" else "champion"
            version = self.aliases(name).get(alias)
            if version is None:
                raise AliasError(f"model {name!r} has no {alias}; promote a version first")
            return version
        if ref == "latest":
            return versions[-1]
        try:
            version = int(ref)
        except (TypeError, ValueError):
            raise VersionNotFound(
                f"{ref!r} is not a version of {name!r}: use a number, champion, challenger or latest"
            ) from None
        if version not in versions:
            raise VersionNotFound(f"model {name!r} has no version {version}; versions: {versions}")
        return version

    def manifest(self, name: str, version: int) -> Manifest:
        self.resolve(name, version)
        path = self._version_dir(name, version) / MANIFEST_FILE
        try:
            return Manifest.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise IntegrityError(
                f"{name}:{version}: manifest invalid: {exc.error_count()} error(s), "
                f"first at {where}: {first['msg']}"
            ) from None
        except (OSError, ValueError) as exc:
            raise IntegrityError(f"{name}:{version}: manifest unreadable: {exc}") from exc

    def read_model(self, name: str, version: int) -> tuple[Manifest, bytes]:
        """The manifest and the ONNX bytes, after checking the bytes against the manifest's hash."""
        manifest = self.manifest(name, version)
        data = (self._version_dir(name, version) / manifest.model_file).read_bytes()
        digest = sha256_of(data)
        if digest != manifest.sha256 or len(data) != manifest.size_bytes:
            raise IntegrityError(
                f"{name}:{version}: {manifest.model_file} has sha256 {digest} ({len(data)} bytes); "
                f"the manifest says {manifest.sha256} ({manifest.size_bytes} bytes)"
            )
        return manifest, data

    def history(self, name: str) -> list[AuditEntry]:
        self.versions(name)
        return self._read_history(self._model_dir(name))

    def aliases(self, name: str) -> Aliases:
        return fold(self.history(name))

    def history_stamp(self, name: str) -> tuple[int, int] | None:
        """A cheap change marker for pollers: (size, mtime_ns) of the history file."""
        try:
            stat = (self._model_dir(name) / HISTORY_FILE).stat()
        except FileNotFoundError:
            return None
        return (stat.st_size, stat.st_mtime_ns)

    @staticmethod
    def _read_history(model_dir: Path) -> list[AuditEntry]:
        try:
            text = (model_dir / HISTORY_FILE).read_text()
        except FileNotFoundError:
            return []
        # Only newline-terminated lines were committed; a torn tail is a write a crash cut short.
        lines = text.split("\n")[:-1]
        return [AuditEntry.model_validate_json(line) for line in lines if line]

    def verify(self, name: str | None = None) -> list[Mismatch]:
        """Re-hash every stored file against SHA256SUMS and the manifest; every problem found."""
        problems: list[Mismatch] = []
        for model in [name] if name else self.models():
            for version in self.versions(model):
                problems.extend(self._verify_version(model, version))
        return problems

    def _verify_version(self, name: str, version: int) -> list[Mismatch]:
        directory = self._version_dir(name, version)
        problems = []
        try:
            listed: dict[str, str] = {}
            for line in (directory / CHECKSUMS_FILE).read_text().splitlines():
                digest, file = line.split("  ", 1)  # sha256sum's format: "<hex>  <file>"
                listed[file] = digest
        except (OSError, ValueError) as exc:
            return [Mismatch(name, version, CHECKSUMS_FILE, f"unreadable: {exc}")]
        present = {p.name for p in directory.iterdir()} - {CHECKSUMS_FILE}
        for extra in sorted(present - listed.keys()):
            problems.append(Mismatch(name, version, extra, "file not in SHA256SUMS"))
        for file, expected in sorted(listed.items()):
            path = directory / file
            if not path.is_file():
                problems.append(Mismatch(name, version, file, "missing"))
                continue
            actual = sha256_of(path.read_bytes())
            if actual != expected:
                problems.append(Mismatch(name, version, file, f"sha256 {actual}, expected {expected}"))
        if not problems:
            try:
                self.read_model(name, version)
            except IntegrityError as exc:
                problems.append(Mismatch(name, version, MODEL_FILE, str(exc)))
        return problems

    # -- writing -----------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, name: str, create: bool = False) -> Iterator[Path]:
        model_dir = self._model_dir(name)
        if create:
            model_dir.mkdir(parents=True, exist_ok=True)
        elif not self._versions_in(model_dir):
            self.versions(name)  # raises ModelNotFound
        with open(model_dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield model_dir
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _append_history(self, model_dir: Path, **fields: Any) -> AuditEntry:
        """Append one audit entry; the caller holds the model lock."""
        with open(model_dir / HISTORY_FILE, "a+b") as handle:
            handle.seek(0)
            data = handle.read()
            committed = data.rfind(b"\n") + 1
            if committed != len(data):
                handle.truncate(committed)  # drop a torn tail left by a crash
            entry = AuditEntry.model_validate(
                {"seq": data.count(b"\n", 0, committed) + 1, "at": datetime.now(UTC), **fields}
            )
            handle.write(entry.model_dump_json(by_alias=True).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        return entry

    def push(
        self,
        model_file: str | os.PathLike[str],
        name: str,
        reference: str | os.PathLike[str],
        *,
        description: str = "",
        metrics: dict[str, float | int | str] | None = None,
        target: str | None = None,
        actor: str | None = None,
        classes: tuple[str, ...] = (),
        time_column: str | None = None,
    ) -> Manifest:
        """Add version N+1 of ``name``. Everything is checked before the registry is touched.

        ``reference``: a table (.csv, .parquet) for a tabular model, tensors (.npz, .npy) for a tensor
        model (``registry.tensors``); ``classes`` names a tensor classifier's probability columns
        when the graph declares no labels (else they are 0, 1, ...); ``time_column`` names a table's
        column of when each row was seen, left out of the inputs: the numeric quantities are then
        also profiled per hour of the day, which windows are compared with."""
        check_name(name)
        model_path, reference_path = Path(model_file), Path(reference)
        if not model_path.is_file():
            raise InvalidModel(f"model file {str(model_path)!r} does not exist")
        model_bytes = model_path.read_bytes()
        session = load_session(model_bytes, intra_op_threads=1)
        tensors = reference_path.suffix.lower() in TENSOR_SUFFIXES
        times = None
        if tensors and time_column:
            raise InvalidReferenceData("a time column is read from a table (.csv, .parquet), not tensors")
        if tensors:
            arrays, truth = read_tensor_reference(reference_path, target)
            schema = tensor_schema(session.get_inputs(), arrays)
            feeds = reference_arrays(schema, arrays)
            output = tensor_output_spec(session, model_bytes, classes, {k: v[:256] for k, v in feeds.items()})
            frame = pd.DataFrame(all_summaries(schema, feeds))
        else:
            if classes:
                raise InvalidModel("classes are named only for tensor models (a .npz or .npy reference)")
            frame, truth = read_reference(reference_path, target)
            times = _time_column(frame, time_column) if time_column else None
            if times is not None:
                frame = frame.drop(columns=[times.name])
            schema = infer_schema(session, frame)
            output = output_spec(session, model_bytes)
        model = OnnxModel(session, schema, output)
        try:
            prediction = model.predict(feeds if tensors else reference_feeds(model, frame))
        except Exception as exc:
            raise InvalidModel(f"the model failed on the reference data: {exc}") from exc
        if prediction.labels is not None:
            unknown = set(map(str, np.unique(prediction.labels.astype(str)))) - set(output.classes)
            if unknown:
                raise InvalidModel(f"the model predicts labels {sorted(unknown)} not among its classes")
        profile = reference_profile(frame, schema, output, prediction, times)
        proto = onnx.load_from_string(model_bytes)
        reference_bytes = reference_path.read_bytes()
        actor = actor or default_actor()

        with self._locked(name, create=True) as model_dir:
            version = (self._versions_in(model_dir) or [0])[-1] + 1
            manifest = Manifest(
                name=name,
                version=version,
                created_at=datetime.now(UTC),
                created_by=actor,
                model_file=MODEL_FILE,
                sha256=sha256_of(model_bytes),
                size_bytes=len(model_bytes),
                opset=max(
                    (o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                    default=0,
                ),
                producer=f"{proto.producer_name} {proto.producer_version}".strip(),
                inputs=schema,
                output=output,
                lineage=Lineage(
                    reference_sha256=sha256_of(reference_bytes),
                    reference_rows=len(frame),
                    reference_file=reference_path.name,
                    description=description,
                    metrics=metrics or {},
                ),
                reference=profile,
                plausibility=default_rules(profile, output),
                calibration=calibration_of(output, prediction, truth),
            )
            self._write_version(model_dir, version, model_bytes, manifest)
            self._append_history(model_dir, actor=actor, action="push", to=version, reason=description)
        return manifest

    def _write_version(self, model_dir: Path, version: int, model_bytes: bytes, manifest: Manifest) -> None:
        staging_root = model_dir / ".staging"
        shutil.rmtree(staging_root, ignore_errors=True)  # leftovers of crashed pushes; we hold the lock
        staging = staging_root / uuid.uuid4().hex
        staging.mkdir(parents=True)
        try:
            manifest_bytes = manifest.model_dump_json(indent=2).encode()
            _write_file(staging / MODEL_FILE, model_bytes)
            _write_file(staging / MANIFEST_FILE, manifest_bytes)
            sums = "".join(
                f"{sha256_of(data)}  {file}\n"
                for file, data in ((MODEL_FILE, model_bytes), (MANIFEST_FILE, manifest_bytes))
            )
            _write_file(staging / CHECKSUMS_FILE, sums.encode())
            for path in staging.iterdir():
                path.chmod(0o444)
            versions_dir = model_dir / "versions"
            versions_dir.mkdir(exist_ok=True)
            os.rename(staging, versions_dir / str(version))
            _fsync_dir(versions_dir)
        finally:
            shutil.rmtree(staging_root, ignore_errors=True)

    def promote(
        self,
        name: str,
        version: int,
        alias: Alias,
        *,
        reason: str = "",
        actor: str | None = None,
        force: bool = False,
    ) -> AuditEntry:
        """Point ``alias`` at ``version``. Promoting the challenger to champion clears the challenger.

        A version whose latest evaluation against the current champion refused it is not made
        champion, unless ``force`` (the override is in the audit trail like any promotion)."""
        if alias not in ALIASES:
            raise AliasError(f"unknown alias {alias!r}; use one of {', '.join(ALIASES)}")
        with self._locked(name) as model_dir:
            version = self.resolve(name, version)
            history = self._read_history(model_dir)
            current = fold(history).get(alias)
            refused = refusal(history, version, current) if alias == "champion" and not force else None
            if refused is not None:
                assert refused.evaluation is not None
                raise AliasError(
                    f"{name}:{version} was refused by its evaluation against champion {current} "
                    f"(audit #{refused.seq}): {'; '.join(refused.evaluation.reasons)}; "
                    "evaluate it again on other data, or promote with --force"
                )
            return self._append_history(
                model_dir,
                actor=actor or default_actor(),
                action="promote",
                alias=alias,
                to=version,
                reason=reason,
                **{"from": current},
            )

    def record_evaluation(
        self, name: str, evaluation: Evaluation, *, reason: str = "", actor: str | None = None
    ) -> AuditEntry:
        """Keep an evaluation's figures and verdict in the model's audit trail."""
        with self._locked(name) as model_dir:
            self.resolve(name, evaluation.candidate_version)
            return self._append_history(
                model_dir,
                actor=actor or default_actor(),
                action="evaluate",
                to=evaluation.candidate_version,
                reason=reason,
                evaluation=evaluation,
                **{"from": evaluation.champion_version},
            )

    def record_trigger(
        self, name: str, version: int, trigger: Trigger, *, reason: str = "", actor: str | None = None
    ) -> AuditEntry:
        """Keep in the audit trail that an alert on ``version`` started a retraining action."""
        with self._locked(name) as model_dir:
            return self._append_history(
                model_dir, actor=actor or default_actor(), action="retrain", to=version, reason=reason,
                trigger=trigger,
            )  # fmt: skip

    def set_routing(
        self, name: str, policy: RoutingPolicy, *, reason: str = "", actor: str | None = None
    ) -> AuditEntry:
        """Store how ``name``'s requests are shared between champion and challenger (audited)."""
        with self._locked(name) as model_dir:
            aliases = fold(self._read_history(model_dir))
            if policy.mode != "off" and aliases.challenger is None:
                raise AliasError(
                    f"model {name!r} has no challenger to route to: promote a version to challenger "
                    f"first, or set the mode to off"
                )
            return self._append_history(
                model_dir,
                actor=actor or default_actor(),
                action="route",
                routing=policy,
                reason=reason,
            )

    def rollback(self, name: str, *, reason: str = "", actor: str | None = None) -> AuditEntry:
        """Put the champion back to the one before it."""
        with self._locked(name) as model_dir:
            aliases = fold(self._read_history(model_dir))
            if len(aliases.champion_stack) < 2:
                raise AliasError(f"model {name!r} has no previous champion to roll back to")
            return self._append_history(
                model_dir,
                actor=actor or default_actor(),
                action="rollback",
                alias="champion",
                to=aliases.champion_stack[-2],
                reason=reason,
                **{"from": aliases.champion},
            )
