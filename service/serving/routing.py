"""Which arm answers a request: the champion, or the challenger under an A/B or canary split.

A request with a routing key (the ``X-Routing-Key`` header, or a
``routing_key`` in the body) always lands on the same arm: the key, salted
with the model's name, hashes to a point in [0, 1) that goes to the
challenger when it lies below the challenger's weight. Raising the weight
(a canary stepping up) only moves keys from champion to challenger, never
back. Without a key the draw is random.
"""

from __future__ import annotations

import hashlib
import random

from registry.aliases import RoutingPolicy

#: modes in which the challenger answers a share of the requests
SPLIT_MODES = ("ab", "canary")


def key_point(model: str, key: str) -> float:
    """A routing key's fixed point in [0, 1) for this model."""
    digest = hashlib.blake2b(f"{model}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def to_challenger(policy: RoutingPolicy, model: str, key: str | None) -> bool:
    """Whether the challenger answers this request under ``policy``."""
    if policy.mode not in SPLIT_MODES or policy.challenger_weight <= 0.0:
        return False
    point = random.random() if key is None else key_point(model, key)
    return point < policy.challenger_weight
