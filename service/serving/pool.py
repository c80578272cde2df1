"""The models a gateway process serves, kept in step with the registry's aliases.

Each process polls the registry (a stat of each model's history file; a fold of
it only when it changed). A version named by a new alias is loaded, hash-checked
and warmed up off the request path, then swapped in by replacing one immutable
``ModelSlots`` object: a request holds the ``ServedVersion`` it started with, so
none fails during a swap. A version that fails any step is not swapped in; the
previous one keeps serving and the failure is logged as an error.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import numpy as np
import onnxruntime as ort
import structlog

from monitoring.plausibility import PlausibilityChecker
from registry.aliases import LogPolicy, RoutingPolicy
from registry.errors import RegistryError
from registry.manifest import NUMPY_DTYPE, Manifest
from registry.onnx_model import CPU, OnnxModel, load_session
from registry.prediction import Prediction
from registry.profile import sample_columns
from registry.store import Registry
from registry.tensors import all_summaries
from service.errors import NotFound, Unavailable, from_registry, quoted
from service.serving.validation import Batch, values_per_row

log = structlog.get_logger("modelgate.pool")

#: timed runs of the warm-up batch, after an untimed one
WARMUP_TIMINGS = 3


@dataclass(frozen=True)
class ServedVersion:
    """One loaded, verified, warmed-up model version, with its plausibility rules ready to check."""

    manifest: Manifest
    model: OnnxModel
    label_datatype: str | None
    checker: PlausibilityChecker
    #: milliseconds a row takes, from the warm-up (the fastest of a few runs): what decides whether a
    #: batch runs on the event loop or in a thread
    row_ms: float = 0.0

    @functools.cached_property
    def values_per_row(self) -> int:
        return values_per_row(self.manifest.inputs)

    @functools.cached_property
    def feature_names(self) -> tuple[str, ...]:
        """The schema's feature names, built once rather than on every request's record."""
        return self.manifest.inputs.names

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    def predict(self, batch: Batch, options: ort.RunOptions | None = None) -> Prediction:
        return self.model.predict(self.model.feeds(batch.columns, batch.matrix, batch.tensors), options)


@dataclass(frozen=True)
class ModelSlots:
    """What one model serves now, and what the registry said when we last looked."""

    champion: ServedVersion | None
    challenger: ServedVersion | None
    stamp: tuple[int, int] | None
    #: how requests are shared between the two, as the registry says
    routing: RoutingPolicy = field(default_factory=RoutingPolicy)
    #: the last load failure per alias, shown by the status route until a load succeeds
    errors: dict[str, str] = field(default_factory=dict)
    #: what the log keeps of its requests; None: everything (the default policy)
    log_policy: LogPolicy | None = None


def warmup_batch(manifest: Manifest, rows: int) -> Batch:
    """Whole rows from the reference sample, shaped like a validated request (a tensor model: zeros
    of a reference sample's shape, which time a run as well as any values)."""
    take = max(1, min(rows, manifest.reference.sample_rows))
    if manifest.inputs.layout == "tensor":
        tensors = {t.name: np.zeros((take, *t.sample_shape), dtype=t.dtype) for t in manifest.inputs.tensors}
        return Batch(rows=take, tensors=tensors, columns=all_summaries(manifest.inputs, tensors))
    columns = sample_columns(manifest.inputs, manifest.reference, take)
    if manifest.inputs.layout == "matrix":
        assert manifest.inputs.tensor_dtype is not None
        matrix = np.column_stack([columns[n] for n in manifest.inputs.names])
        return Batch(rows=take, matrix=matrix.astype(NUMPY_DTYPE[manifest.inputs.tensor_dtype]))
    return Batch(rows=take, columns=columns)


def load_version(
    registry: Registry,
    name: str,
    version: int,
    warmup_rows: int,
    threads: int,
    warmup_timeout: float = 30.0,
    providers: tuple[str, ...] = CPU,
) -> ServedVersion:
    """Read, hash-check, open (``threads`` intra-op threads, on ``providers``) and warm up one version;
    raises on failure.

    A warm-up still running after ``warmup_timeout`` seconds is stopped and the version refused:
    a model that hangs must not hold the thread that keeps every model in step with the registry.
    """
    manifest, data = registry.read_model(name, version)
    session = load_session(data, threads, providers)
    model = OnnxModel(session, manifest.inputs, manifest.output)
    label_datatype = None
    if manifest.output.label_output is not None:
        label_type = next(o.type for o in session.get_outputs() if o.name == manifest.output.label_output)
        label_datatype = "BYTES" if label_type == "tensor(string)" else "INT64"
    checker = PlausibilityChecker(manifest.inputs, manifest.plausibility, manifest.output.classes)
    served = ServedVersion(manifest=manifest, model=model, label_datatype=label_datatype, checker=checker)
    batch = warmup_batch(manifest, warmup_rows)
    options = ort.RunOptions()
    options.log_severity_level = 4  # a stopped warm-up is reported by the error below
    deadline = threading.Timer(warmup_timeout, setattr, (options, "terminate", True))
    deadline.start()
    took = []
    try:
        # one row, then the batch a few times: the fastest of those is the version's time a row
        for warm in (batch.head(1), *[batch] * (1 + WARMUP_TIMINGS)):
            started = time.perf_counter()
            try:
                prediction = served.predict(warm, options)
            except Exception:
                if options.terminate:
                    raise RegistryError(
                        f"{name}:{version}: the warm-up on {warm.rows} reference row(s) did not finish "
                        f"within {warmup_timeout:g} s (MODELGATE_WARMUP_TIMEOUT)"
                    ) from None
                raise
            took.append(time.perf_counter() - started)
            if prediction.rows != warm.rows:
                raise RegistryError(f"{name}:{version}: warm-up gave {prediction.rows} rows for {warm.rows}")
    finally:
        deadline.cancel()
    return replace(served, row_ms=1000 * min(took[-WARMUP_TIMINGS:]) / batch.rows)


class ModelPool:
    """The served models of one process. ``refresh`` runs in a thread; readers never block on it."""

    def __init__(
        self,
        registry: Registry,
        *,
        threads: int,
        warmup_rows: int = 16,
        warmup_timeout: float = 30.0,
        pinned_cached: int = 4,
        providers: tuple[str, ...] = CPU,
    ) -> None:
        if warmup_timeout <= 0:
            raise ValueError(f"warm-up timeout {warmup_timeout}: seconds, above 0")
        self.registry = registry
        self.threads = threads
        self.warmup_rows = warmup_rows
        self.warmup_timeout = warmup_timeout
        self.pinned_cached = pinned_cached
        self.providers = providers
        self._slots: dict[str, ModelSlots] = {}
        self._pinned: OrderedDict[tuple[str, int], ServedVersion] = OrderedDict()
        self._pinned_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self.refreshed_at = 0.0

    # -- reading, on the request path ----------------------------------------------

    @property
    def names(self) -> list[str]:
        return sorted(self._slots)

    def slots(self, name: str) -> ModelSlots:
        slots = self._slots.get(name)
        if slots is None:
            served = ", ".join(self.names) or "none"
            raise NotFound(f"model {quoted(name)} is not served; served models: {served}", field="model")
        return slots

    def loaded(self, name: str | None = None) -> list[ServedVersion]:
        """The champions and challengers loaded now, of ``name`` or of every model."""
        chosen = self._slots.values() if name is None else [self._slots[name]] if name in self._slots else []
        return [v for s in chosen for v in (s.champion, s.challenger) if v is not None]

    def champion(self, name: str) -> ServedVersion:
        champion = self.slots(name).champion
        if champion is None:
            raise Unavailable(f"model {quoted(name)} has no champion loaded; promote a version to champion")
        return champion

    def ready(self) -> bool:
        """At least one model has its champion loaded. A model without one (just pushed, not yet
        promoted) is reported by ``states`` and its own ready route; it must not take the models
        that can serve out of every load balancer."""
        return any(s.champion is not None for s in self._slots.values())

    def states(self) -> dict[str, dict[str, object]]:
        """Each model's readiness: the champion version serving, or why none is."""
        states: dict[str, dict[str, object]] = {}
        for name, slots in sorted(self._slots.items()):
            if slots.champion is not None:
                states[name] = {"ready": True, "champion": slots.champion.version}
            else:
                failed = slots.errors.get("champion")
                states[name] = {"ready": False, "reason": failed or "no champion: promote a version"}
        return states

    def cached(self, name: str, version: int) -> ServedVersion | None:
        """A pinned version if it is loaded already (as champion, challenger or in the cache)."""
        slots = self.slots(name)
        for served in (slots.champion, slots.challenger):
            if served is not None and served.version == version:
                return served
        with self._pinned_lock:
            served = self._pinned.get((name, version))
            if served is not None:
                self._pinned.move_to_end((name, version))
            return served

    def load_pinned(self, name: str, version: int) -> ServedVersion:
        """Load a version for pinned requests and cache it (bounded, least recently used out).

        Blocking: callers on the event loop run it in a thread.
        """
        try:
            self.registry.resolve(name, version)
        except RegistryError as exc:
            raise from_registry(exc, field="version") from None
        try:
            served = self._load(name, version)
        except Exception as exc:
            log.error("model.load_failed", model=name, version=version, error=str(exc))
            raise Unavailable(f"version {version} of {name!r} cannot be served: {exc}") from exc
        with self._pinned_lock:
            self._pinned[(name, version)] = served
            while len(self._pinned) > self.pinned_cached:
                self._pinned.popitem(last=False)
        return served

    def _load(self, name: str, version: int) -> ServedVersion:
        return load_version(
            self.registry, name, version, self.warmup_rows, self.threads, self.warmup_timeout, self.providers
        )

    def single_threaded(self, served: ServedVersion) -> ServedVersion:
        """``served`` on a session with one intra-op thread: itself when the pool's sessions have one,
        else a session of its own, read (hash-checked) and warmed up again. For work that must not
        spread over the cores requests are answered on (shadow predictions)."""
        if self.threads == 1:
            return served
        _, data = self.registry.read_model(served.name, served.version)
        model = OnnxModel(
            load_session(data, 1, self.providers), served.manifest.inputs, served.manifest.output
        )
        twin = replace(served, model=model)
        twin.predict(warmup_batch(served.manifest, 1))
        return twin

    # -- keeping in step with the registry, off the request path -------------------

    def refresh(self) -> None:
        """Load what the registry's aliases name now; keep the old version on any failure."""
        with self._refresh_lock:
            for name in self.registry.models():
                try:
                    self._refresh_model(name)
                except Exception as exc:  # one broken model must not stop the others
                    log.error("model.refresh_failed", model=name, error=str(exc))
            self.refreshed_at = time.time()

    def _loaded(self, name: str, slots: ModelSlots | None) -> dict[int, ServedVersion]:
        """Every version of ``name`` this process holds warm: aliases and the pinned cache."""
        with self._pinned_lock:
            loaded = {version: served for (model, version), served in self._pinned.items() if model == name}
        for served in (slots.champion, slots.challenger) if slots else ():
            if served is not None:
                loaded[served.version] = served
        return loaded

    def _refresh_model(self, name: str) -> None:
        stamp = self.registry.history_stamp(name)
        current = self._slots.get(name)
        if current is not None and current.stamp == stamp:
            return
        aliases = self.registry.aliases(name)
        loaded = self._loaded(name, current)
        served: dict[str, ServedVersion | None] = {}
        errors: dict[str, str] = {}
        for alias, wanted in (("champion", aliases.champion), ("challenger", aliases.challenger)):
            old: ServedVersion | None = getattr(current, alias) if current else None
            if wanted is None:
                served[alias] = None
            elif wanted in loaded:  # already warm here: the swap is a reference change
                served[alias] = loaded[wanted]
                if old is None or old.version != wanted:
                    log.info("model.swapped", model=name, alias=alias, version=wanted,
                             previous_version=old.version if old else None, load_ms=0.0)  # fmt: skip
            else:
                new = self._load_for_alias(name, alias, wanted, old, errors)
                if new is not None and new is not old:
                    loaded[wanted] = new
                served[alias] = new
        self._slots[name] = ModelSlots(
            champion=served["champion"],
            challenger=served["challenger"],
            stamp=stamp,
            routing=aliases.routing,
            errors=errors,
            log_policy=aliases.log_policy if aliases.log_policy != LogPolicy() else None,
        )

    def _load_for_alias(
        self, name: str, alias: str, version: int, old: ServedVersion | None, errors: dict[str, str]
    ) -> ServedVersion | None:
        started = time.perf_counter()
        try:
            new = self._load(name, version)
        except Exception as exc:
            errors[alias] = f"version {version} not swapped in: {exc}"
            log.error(
                "model.swap_failed",
                model=name,
                alias=alias,
                version=version,
                kept_version=old.version if old else None,
                error=str(exc),
            )
            return old
        log.info(
            "model.swapped" if old else "model.loaded",
            model=name,
            alias=alias,
            version=version,
            previous_version=old.version if old else None,
            load_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return new
