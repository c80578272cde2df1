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

from pydantic import ValidationError

from registry.aliases import (
    ALIASES,
    Alias,
    Aliases,
    AuditEntry,
    Erasure,
    LogPolicy,
    RoutingPolicy,
    Trigger,
    fold,
)
from registry.errors import (
    AliasError,
    IntegrityError,
    InvalidModel,
    InvalidModelName,
    ModelNotFound,
    SchemaMismatch,
    VersionNotFound,
)
from registry.evaluation import Evaluation
from registry.manifest import Lineage, Manifest

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


def broken_links(lines: list[bytes]) -> list[str]:
    """What breaks the hash chain of audit lines (a history, or its export): each entry's ``prev``
    must be the SHA-256 of the line before it (of no bytes for the first). Entries written before
    the chain (no ``prev``) may only come first; one after a chained entry lost its link.

    A chain shows a line edited, inserted or deleted anywhere before the last: the last line
    edited, or the last lines cut off, leave a chain that still holds (compare the entry count and
    the last line's hash with a copy kept elsewhere)."""
    problems, chained, before = [], False, b""
    for number, line in enumerate(lines, 1):
        try:
            entry = AuditEntry.model_validate_json(line)
        except ValidationError as exc:
            problems.append(f"line {number}: not an audit entry ({exc.errors()[0]['msg']})")
            before, chained = line, True
            continue
        if entry.seq != number:
            problems.append(f"line {number}: entry seq {entry.seq}, expected {number}")
        if entry.prev is None:
            if chained:
                problems.append(f"line {number}: no prev hash after chained entries")
        elif entry.prev != sha256_of(before):
            of = f"line {number - 1}" if number > 1 else "no bytes (the first entry)"
            problems.append(f"line {number}: prev {entry.prev[:12]}... is not the SHA-256 of {of}")
        chained = chained or entry.prev is not None
        before = line
    return problems


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

    def history_lines(self, name: str) -> list[bytes]:
        """The audit history's committed lines as written (what ``registry audit`` exports)."""
        self.versions(name)
        try:
            data = (self._model_dir(name) / HISTORY_FILE).read_bytes()
        except FileNotFoundError:
            return []
        return [line for line in data.split(b"\n")[:-1] if line]

    def verify_history(self, name: str) -> list[str]:
        """Each break in the model's audit chain (see ``broken_links``)."""
        return broken_links(self.history_lines(name))

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
            last = data[data.rfind(b"\n", 0, committed - 1) + 1 : committed - 1] if committed else b""
            entry = AuditEntry.model_validate(
                {"seq": data.count(b"\n", 0, committed) + 1, "at": datetime.now(UTC),
                 "prev": sha256_of(last), **fields}
            )  # fmt: skip
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
        attributions: bool = True,
    ) -> Manifest:
        """Add version N+1 of ``name``. Everything is checked before the registry is touched.

        ``reference``: a table (.csv, .parquet) for a tabular model, tensors (.npz, .npy) for a tensor
        model (``registry.tensors``); ``classes`` names a tensor classifier's probability columns
        when the graph declares no labels (else they are 0, 1, ...); ``time_column`` names a table's
        column of when each row was seen, left out of the inputs: the numeric quantities are then
        also profiled per hour of the day, which windows are compared with; ``attributions=False``
        leaves out the reference attributions (a tabular model's explanations on its reference sample,
        which attribution drift is tested against): the model is then run on no row outside its
        reference data."""
        check_name(name)
        model_path, reference_path = Path(model_file), Path(reference)
        if not model_path.is_file():
            raise InvalidModel(f"model file {str(model_path)!r} does not exist")
        # imported here: reading a reference loads pandas, ONNX and scikit-learn, which the processes
        # that only read the registry (the log writer, the monitor) never need
        from registry.reference import examine

        model_bytes = model_path.read_bytes()
        examined = examine(model_bytes, reference_path, target, classes, time_column)
        reference_bytes = reference_path.read_bytes()
        actor = actor or default_actor()
        with self._locked(name, create=True) as model_dir:
            version = (self._versions_in(model_dir) or [0])[-1] + 1
            lineage = Lineage(
                reference_sha256=sha256_of(reference_bytes),
                reference_rows=len(examined.frame),
                reference_file=reference_path.name,
                description=description,
                metrics=metrics or {},
            )
            manifest = examined.manifest(
                name, version, actor, model_bytes, MODEL_FILE, lineage, attributions=attributions
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

    def set_log_policy(
        self, name: str, policy: LogPolicy, *, reason: str = "", actor: str | None = None
    ) -> AuditEntry:
        """Store what the prediction log keeps of ``name``'s requests (audited); every field it names
        must be an input feature of one of the model's versions."""
        with self._locked(name) as model_dir:
            known = {f for v in self._versions_in(model_dir) for f in self.manifest(name, v).inputs.names}
            unknown = sorted(set(policy.fields) - known)
            if unknown:
                raise SchemaMismatch(
                    f"log policy: {', '.join(map(repr, unknown))} is not an input feature of {name!r}"
                )
            return self._append_history(
                model_dir, actor=actor or default_actor(), action="govern", log_policy=policy, reason=reason
            )

    def record_erasure(self, name: str, erasure: Erasure, *, actor: str | None = None) -> AuditEntry:
        """Keep in the audit trail what an erasure removed of ``name``'s records: counts, no values."""
        with self._locked(name) as model_dir:
            return self._append_history(
                model_dir, actor=actor or default_actor(), action="erase", erasure=erasure,
                reason=f"erased {erasure.records} record(s) and {erasure.feedback} feedback by {erasure.by}",
            )  # fmt: skip

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
