"""The gateway's settings: one typed object read from the environment and an optional YAML file."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from monitoring.plausibility import INPUT_RULES, OUTPUT_RULES
from monitoring.store import is_postgres, redacted
from registry.store import DEFAULT_ROOT, ENV_VAR


def _boolean(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


@dataclass(frozen=True)
class BatchPolicy:
    """How far one model's requests may be merged: rows in one run, and the longest wait."""

    max_rows: int
    max_wait_s: float


def parse_policies(text: str) -> dict[str, BatchPolicy]:
    """``NAME:MAX_ROWS:MAX_WAIT_MS`` entries, comma-separated; ``ValueError`` saying what is wrong."""
    policies = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, _, rest = entry.partition(":")
        rows, _, wait = rest.partition(":")
        try:
            policy = BatchPolicy(int(rows), float(wait) / 1000)
        except ValueError:
            raise ValueError(
                f"setting batching: {entry!r} is not NAME:MAX_ROWS:MAX_WAIT_MS (e.g. breast-cancer:64:2)"
            ) from None
        if not name or policy.max_rows < 2 or not 0 < policy.max_wait_s <= 1:
            raise ValueError(
                f"setting batching: {entry!r}: a model name, at least 2 rows, and a wait above 0 and at "
                f"most 1000 ms"
            )
        policies[name] = policy
    return policies


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated setting's entries."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


@dataclass(frozen=True)
class Settings:
    """Every knob of a gateway process. Environment: ``MODELGATE_<FIELD>`` (upper case).

    ``MODELGATE_CONFIG`` names a YAML file of the same fields; the environment wins over it.
    """

    registry: Path = Path(DEFAULT_ROOT)
    workers: int = 1
    #: seconds between two looks at the registry for promotions and rollbacks
    poll_interval: float = 1.0
    #: rows one request may carry; more is refused with 413
    max_batch_rows: int = 10_000
    #: bytes one request body may carry; more is refused with 413
    max_body_bytes: int = 32 * 1024 * 1024
    #: seconds a request's body may take to arrive, once its head has; slower is refused with 408
    body_timeout: float = 30.0
    #: ``modelgate serve``: seconds from a connection's (or a request's) first byte to the end of the
    #: request's head (its line and headers); slower is closed with 408 (slow-loris clients)
    header_timeout: float = 10.0
    #: ``modelgate serve``: bytes a request's head (line and headers) may take; more is refused with 431
    max_header_bytes: int = 64 * 1024
    #: ``modelgate serve``: seconds an idle keep-alive connection stays open
    keep_alive_timeout: float = 5.0
    #: ``modelgate serve``: open connections (and requests in flight) a worker takes; past it, new
    #: requests are answered 503 at once
    max_connections: int = 2048
    #: rows run through a freshly loaded session before it takes traffic
    warmup_rows: int = 16
    #: seconds a version's warm-up may take; a model still running then is refused, not served
    warmup_timeout: float = 30.0
    #: versions outside champion/challenger kept loaded for pinned (versions/{v}) requests
    pinned_versions_cached: int = 4
    #: the share of answered requests (and of their shadow predictions) explained in the loop, off the
    #: request path, and logged for attribution drift and the champion/challenger comparison; 0: none
    explain_rate: float = 0.0
    #: the most rows one POST /explain explains (exact TreeSHAP takes well under a millisecond a row;
    #: sampling runs the model on some (features + 1) x 800 rows for each)
    explain_max_rows: int = 1000
    #: a batch the version should predict within this many milliseconds (its time a row, measured
    #: at warm-up, times the rows) runs on the event loop; a longer one in a thread, so one big
    #: request does not stall the loop. A thread hop costs more than a small model's whole run.
    inline_ms: float = 1.0
    #: ONNX Runtime execution providers in order of preference, comma-separated (e.g.
    #: "CUDAExecutionProvider,CPUExecutionProvider"); each must be in this ONNX Runtime build
    providers: str = "CPUExecutionProvider"
    #: adaptive batching, opt-in per model: NAME:MAX_ROWS:MAX_WAIT_MS entries, comma-separated
    #: (e.g. "breast-cancer:64:2"); concurrent requests merged into one session run
    batching: str = ""
    #: false: only serve; no prediction log, plausibility, drift, quality, alerts or modelgate_ metrics
    monitoring: bool = True
    #: the prediction log (SQLite); empty means predictions.sqlite3 inside the registry directory
    log_path: Path = Path()
    #: a postgresql:// URL: the prediction log and all monitoring state in PostgreSQL instead of the
    #: SQLite file, shared by every replica of a deployment (log_path is then unused)
    log_url: str = dataclasses.field(default="", repr=False)
    #: records queued for the log writer before the overflow policy applies
    log_queue_size: int = 10_000
    #: when the queue is full: "block" (a new request waits for room, then is refused with 503; nothing
    #: answered is lost) or "drop" (answered, its record discarded and counted)
    log_overflow: str = "block"
    #: seconds a new request waits for room in a full log queue (block) before its 503 and Retry-After
    log_block_seconds: float = 0.5
    #: when a prediction is answered 200: "queued" (its record is queued for the log; a crash loses
    #: the last ~50 ms) or "committed" (only once its record is committed: nothing answered is lost)
    log_ack: str = "queued"
    #: "committed": seconds an answer waits for its record's commit before it is refused with 503
    log_ack_timeout: float = 5.0
    #: requests of at most this many rows carry their inputs and outputs in the stdout log line
    log_payload_rows: int = 100
    #: the key of the HMAC that log policies' ``hash`` fields are written as (empty: such fields are
    #: dropped instead); keep it secret and fixed, or a person's old and new records stop matching
    log_hash_key: str = dataclasses.field(default="", repr=False)
    #: SQLite: each worker's log writer appends to a file of its own (<log>.parts/<n>.db), read
    #: together with the main file, so that workers' writers never wait for each other; false: all
    #: append to the one file, taking turns
    log_partitions: bool = True
    #: shadow-mode jobs waiting for the challenger per worker; more are shed (counted)
    shadow_queue_size: int = 256
    #: the share of time the shadow thread may spend running the challenger; the rest is shed
    shadow_budget: float = 0.1
    #: shadow predictions a second per worker at most (0: no cap); what comes faster is shed
    shadow_max_rate: float = 100.0
    #: seconds a challenger's shadow prediction may run; a longer one is stopped and logged as 504
    shadow_timeout: float = 1.0
    #: feedback items one POST /feedback may carry
    max_feedback_items: int = 10_000
    #: plausibility rules that refuse a request (422) instead of only flagging it, comma-separated:
    #: e.g. "probability_finite,input_range" (input rules apply to every feature)
    reject_rules: str = ""
    #: the monitor's window per model version: at most this many rows (a sample of its span if more) ...
    window_rows: int = 1000
    #: ... of the last this many seconds
    window_seconds: float = 3600.0
    #: no drift test on fewer rows than this
    drift_min_rows: int = 100
    #: the chance that a clean window is called drifted, at most (Benjamini-Hochberg across one
    #: model's features and outputs; docs/drift.md)
    drift_alpha: float = 0.001
    #: and the smallest change called drift (Cliff's delta, KS distance, share of rows, missing rate)
    drift_min_effect: float = 0.02
    #: a drift alert's false alarms: on clean traffic, at most one expected in this many days, at any
    #: traffic (each monitor pass's test at monitor_interval / this many days; docs/drift.md)
    drift_false_alert_days: float = 30.0
    #: significance of champion against challenger quality (the comparison and the promotion gate)
    compare_alpha: float = 0.05
    #: input features live quality is also measured per value of, comma-separated (e.g.
    #: "customer_group,region"); a model without such a feature ignores it. Categorical: the ten most
    #: frequent reference categories and "other"; numeric: the reference quintiles
    quality_segments: str = ""
    #: seconds between two monitor passes over the log
    monitor_interval: float = 2.0
    #: monitors that share the models, each looking after those of its shard (monitoring.shards),
    #: started by whichever workers of whichever replicas find a shard without one; the same on every
    #: replica
    monitor_shards: int = 1
    #: the alert rules and receivers (YAML); empty means the shipped monitoring/alerts.yml
    alert_rules: str = ""
    #: this gateway's address as on-call reaches it, for links in notifications
    external_url: str = ""
    #: the bearer token of the admin routes (promote, rollback, routing); empty disables them
    admin_token: str = dataclasses.field(default="", repr=False)
    #: when set, the bearer token /predict, v2 infer and /feedback require
    predict_token: str = dataclasses.field(default="", repr=False)

    #: the comma-separated settings above, parsed once (in ``__post_init__``, which checks them)
    rejected_rules: frozenset[str] = dataclasses.field(init=False, repr=False, compare=False)
    segment_features: tuple[str, ...] = dataclasses.field(init=False, repr=False, compare=False)
    batch_policies: dict[str, BatchPolicy] = dataclasses.field(init=False, repr=False, compare=False)
    execution_providers: tuple[str, ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parsed = {
            "rejected_rules": frozenset(_names(self.reject_rules)),
            "segment_features": _names(self.quality_segments),
            "batch_policies": parse_policies(self.batching),
            "execution_providers": _names(self.providers),
        }
        for name, value in parsed.items():
            object.__setattr__(self, name, value)  # frozen: set once, here
        if self.log_url and not is_postgres(self.log_url):
            raise ValueError(
                f"setting log_url: {redacted(self.log_url)!r} is not a postgresql:// URL "
                "(leave it empty for the SQLite file at log_path)"
            )
        if not self.drift_false_alert_days > 0:
            days = self.drift_false_alert_days
            raise ValueError(f"setting drift_false_alert_days: {days!r} is not above 0")
        if not 0.0 <= self.explain_rate <= 1.0:
            raise ValueError(f"setting explain_rate: {self.explain_rate!r} is not within 0..1")
        if self.explain_max_rows < 1:
            raise ValueError(f"setting explain_max_rows: {self.explain_max_rows!r} is below 1")
        if not 1 <= self.monitor_shards <= 64:
            raise ValueError(f"setting monitor_shards: {self.monitor_shards!r} is not within 1..64")
        if self.log_ack not in ("queued", "committed"):
            raise ValueError(f"setting log_ack: {self.log_ack!r} is not 'queued' or 'committed'")
        if self.log_overflow not in ("block", "drop"):
            raise ValueError(f"setting log_overflow: {self.log_overflow!r} is not 'block' or 'drop'")
        if self.execution_providers != ("CPUExecutionProvider",):
            from registry.onnx_model import check_providers  # ONNX Runtime: only to check others

            check_providers(self.execution_providers)
        unknown = self.rejected_rules - set(OUTPUT_RULES) - set(INPUT_RULES)
        if unknown:
            raise ValueError(
                f"setting reject_rules: unknown rules {sorted(unknown)}; "
                f"known: {', '.join(OUTPUT_RULES + INPUT_RULES)}"
            )

    @property
    def prediction_log(self) -> Path:
        return self.log_path if self.log_path != Path() else self.registry / "predictions.sqlite3"

    @property
    def store_location(self) -> str:
        """Where the monitoring state is: the PostgreSQL URL, or the SQLite file's path."""
        return self.log_url or str(self.prediction_log)

    def to_env(self) -> dict[str, str]:
        """These settings as the environment ``from_env`` reads back (for a child process)."""
        env = {}
        for field in fields(self):
            if not field.init:
                continue
            value = getattr(self, field.name)
            key = ENV_VAR if field.name == "registry" else f"MODELGATE_{field.name.upper()}"
            env[key] = str(value).lower() if isinstance(value, bool) else str(value)
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        values: dict[str, Any] = {}
        config = environ.get("MODELGATE_CONFIG")
        if config:
            loaded = yaml.safe_load(Path(config).read_text()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{config}: expected a mapping of settings")
            values.update(loaded)
        for field in fields(cls):
            if not field.init:
                continue
            key = ENV_VAR if field.name == "registry" else f"MODELGATE_{field.name.upper()}"
            if key in environ:
                values[field.name] = environ[key]
        known = {f.name: f for f in fields(cls) if f.init}
        unknown = set(values) - set(known)
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}; known: {sorted(known)}")
        converted: dict[str, Any] = {}
        for name, raw in values.items():
            kind = type(getattr(cls, name))
            try:
                converted[name] = _boolean(raw) if kind is bool else kind(raw)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"setting {name}: {raw!r} is not a valid {kind.__name__}") from exc
        return cls(**converted)
