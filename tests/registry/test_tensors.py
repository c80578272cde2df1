"""Per-sample summaries of tensor inputs: what a tensor model's monitoring sees of each sample."""

from __future__ import annotations

import numpy as np
import pytest

from registry.manifest import TensorSpec
from registry.tensors import summaries, summary_names

IMAGE = TensorSpec(name="image", dtype="float32", shape=(None, 3, 2, 2), sample_shape=(3, 2, 2), channels=3)
TOKENS = TensorSpec(name="ids", dtype="int64", shape=(None, 4), sample_shape=(4,))


def test_an_image_is_summarised_per_channel_and_a_nan_counted_not_spread():
    images = np.zeros((2, 3, 2, 2), dtype=np.float32)
    images[0, 1] = [[1, 2], [3, 4]]
    images[1, 2, 0, 0] = np.nan
    images[1, 2, 1, 1] = 8.0
    found = summaries(IMAGE, images)
    assert list(found) == summary_names(IMAGE)
    assert found["image.c1.mean"].tolist() == [2.5, 0.0] and found["image.c1.max"].tolist() == [4.0, 0.0]
    assert found["image.c1.std"][0] == pytest.approx(np.std([1, 2, 3, 4]))
    # the NaN is left out of its channel's statistics and counted apart
    assert found["image.c2.mean"][1] == pytest.approx(8 / 3) and found["image.c2.min"][1] == 0.0
    assert found["image.nonfinite"].tolist() == [0.0, 1 / 12]


def test_token_ids_are_summarised_whole_with_the_share_of_real_tokens():
    ids = np.array([[5, 7, 0, 0], [1, 2, 3, 4]])
    found = summaries(TOKENS, ids)
    assert summary_names(TOKENS) == ["ids.mean", "ids.std", "ids.min", "ids.max", "ids.nonzero"]
    assert found["ids.nonzero"].tolist() == [0.5, 1.0] and found["ids.max"].tolist() == [7.0, 4.0]
