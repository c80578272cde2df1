"""The benchmark's bad challengers against the registry: one that raises on any row outside its
training data is refused at push (its reference attributions run it on rows mixing reference
values), and pushes, as the shadow benchmark pushes it, without reference attributions."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the benchmarks are scripts, not a package

from load_tests import challengers
from registry import InvalidModel
from registry.demo import DEMO_MODEL


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_model_failing_off_its_reference_rows_is_refused_unless_pushed_without_attributions(
    registry, cancer_model, tmp_path
):
    registry.push(cancer_model.onnx, DEMO_MODEL, cancer_model.reference)
    registry.promote(DEMO_MODEL, 1, "champion")
    raising = tmp_path / "raising.onnx"
    raising.write_bytes(challengers.raising_model(registry))
    before = files(registry.root)
    with pytest.raises(
        InvalidModel, match=r"while its reference attributions were computed.*--no-attributions"
    ):
        registry.push(raising, DEMO_MODEL, cancer_model.reference)
    assert files(registry.root) == before  # refused before anything was written

    challengers.raising(registry)  # as the benchmark pushes it
    manifest = registry.manifest(DEMO_MODEL, registry.resolve(DEMO_MODEL, "challenger"))
    assert manifest.version == 2 and manifest.reference.attributions == {}
    assert manifest.reference.attribution_method is None
