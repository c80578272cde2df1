"""The model pool: swaps reuse warm sessions, load what is new, and keep serving on failure."""

from __future__ import annotations

from structlog.testing import capture_logs

from registry.store import Registry
from service.serving.pool import ModelPool


def pool_for(registry: Registry) -> ModelPool:
    pool = ModelPool(registry, threads=1)
    pool.refresh()
    return pool


def test_promoting_the_challenger_reuses_its_warm_session(cancer_registry):
    pool = pool_for(cancer_registry)
    challenger = pool.slots("cancer").challenger
    assert challenger is not None and challenger.row_ms > 0  # timed at warm-up: inline or in a thread
    cancer_registry.promote("cancer", 2, "champion")
    with capture_logs() as logs:
        pool.refresh()
    slots = pool.slots("cancer")
    assert slots.champion is challenger and slots.challenger is None
    assert [(e["event"], e["alias"], e["version"], e["load_ms"]) for e in logs] == [
        ("model.swapped", "champion", 2, 0.0)
    ]


def test_a_pinned_version_in_the_cache_is_reused_when_promoted(cancer_registry, cancer_model):
    cancer_registry.push(cancer_model.onnx, "cancer", cancer_model.reference)
    pool = pool_for(cancer_registry)
    pinned = pool.load_pinned("cancer", 3)
    assert pool.cached("cancer", 3) is pinned
    cancer_registry.promote("cancer", 3, "champion")
    pool.refresh()
    assert pool.champion("cancer") is pinned


def test_a_rollback_loads_the_previous_champion_again(cancer_registry):
    cancer_registry.promote("cancer", 2, "champion")
    pool = pool_for(cancer_registry)
    assert pool.champion("cancer").version == 2
    cancer_registry.rollback("cancer")
    pool.refresh()
    assert pool.champion("cancer").version == 1


def test_an_unchanged_history_is_not_read_again(cancer_registry, monkeypatch):
    pool = pool_for(cancer_registry)
    monkeypatch.setattr(
        cancer_registry, "aliases", lambda name: (_ for _ in ()).throw(AssertionError("read"))
    )
    pool.refresh()  # only a stat of the history file
    assert pool.champion("cancer").version == 1


def test_sessions_run_on_the_configured_providers(cancer_registry):
    pool = ModelPool(cancer_registry, threads=1, providers=("CPUExecutionProvider",))
    pool.refresh()
    assert pool.champion("cancer").model.session.get_providers() == ["CPUExecutionProvider"]
