"""Evidence that stays valid however often it is looked at: e-values of win counts, and contests.

A decision the monitor takes again on every pass (promote the challenger, step
a canary down, name the better arm) is a test repeated thousands of times a
day. A p-value read at every pass is wrong far more often than its alpha says
(a challenger no better than the champion was promoted on most simulated days
by a 5% test looked at every 2 s). An **e-value** is not: it is a running
product of likelihood ratios, a nonnegative supermartingale under the null
hypothesis, so by Ville's inequality the chance that it *ever* reaches
``1 / alpha``, over any number of looks and for as long as it runs, is at most
``alpha``.

**What is tested.** Every decision here is reduced to contests, each won by
one side or the other (ties are dropped), and the null hypothesis is that one
side wins a contest with probability at most ``p0``:

- shadow (paired): each labelled row both arms predicted is a contest, won by
  the arm that was right when the other was wrong (a classifier) or that had the
  smaller absolute error (a regressor). The challenger wins at most half of them
  exactly when its accuracy is at most the champion's (McNemar's hypothesis).
- A/B and canary (unpaired): each arm's labelled rows, or answered requests,
  are matched in arrival order (``Matcher``), one of each arm a contest.
  Independent arms, matched blind to their outcomes: the challenger wins at
  most half the contests exactly when its accuracy is at most the champion's,
  or its error is not stochastically smaller. An error contest (one arm's
  request failed, the other's did not) won by the canary with probability
  ``ratio / (1 + ratio)`` is a canary whose odds of failing are ``ratio``
  times the champion's.
- one arm against a fixed limit (a canary's error rate at most 5%): every
  request is a contest the limit "loses" when the request failed; ``p0`` is the
  limit. The same ratio bounds the mean of any quantity in [0, 1] (by
  convexity), so a row with a violation counts as a failed one.

**The e-value** is a mixture of likelihood ratios over alternatives
``p0 + (1 - p0) * g`` for ``g`` on a geometric grid from 1/128 to 1/2, weighted
alike: each is a test martingale under ``p = p0`` and a supermartingale under
any ``p <= p0``, so their average is too, and it grows about as fast as the
best of them, so small and large differences are both found (within a factor
of ``len(GRID)`` of knowing the difference in advance). It depends on the
counts alone, so the state a decision keeps is two integers.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
from scipy.special import logsumexp

#: the alternatives' distance from p0, as shares of the way to 1
GRID = np.array([1 / 128, 1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2])


def log_e_value(wins: np.ndarray | int, losses: np.ndarray | int, p0: float = 0.5) -> np.ndarray:
    """The natural log of the e-value against "a contest is won with probability at most ``p0``",
    after ``wins`` and ``losses`` (arrays of running counts give the e-value at each look)."""
    w = np.asarray(wins, dtype=np.float64)[..., None]
    l_ = np.asarray(losses, dtype=np.float64)[..., None]
    p = p0 + (1.0 - p0) * GRID
    ratios = w * np.log(p / p0) + l_ * np.log((1.0 - p) / (1.0 - p0))
    return np.asarray(logsumexp(ratios, axis=-1) - np.log(GRID.size))


def e_value(wins: int, losses: int, p0: float = 0.5) -> float:
    """The e-value of one look (see :func:`log_e_value`); reaching ``1 / alpha`` rejects at ``alpha``."""
    return math.exp(min(float(log_e_value(wins, losses, p0)), 700.0))


def won(champion: np.ndarray, challenger: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of row-aligned outcomes (``monitoring.compare.correct``: right or wrong, or absolute
    errors): whether the challenger won its contest (right where the champion was wrong, or a smaller
    error), and whether the champion did; a tie is won by neither."""
    if champion.dtype == bool:
        return challenger & ~champion, champion & ~challenger
    return challenger < champion, champion < challenger


def contests(champion: np.ndarray, challenger: np.ndarray) -> tuple[int, int]:
    """How many contests of row-aligned outcomes the challenger won, and how many the champion won."""
    by_challenger, by_champion = won(champion, challenger)
    return int(by_challenger.sum()), int(by_champion.sum())


T = TypeVar("T")


@dataclass
class Matcher(Generic[T]):
    """Two independent streams (one per arm, A/B or canary) matched in arrival order, one item of each a
    pair; at most ``limit`` items of one arm wait for the other's, the oldest dropped first (under a
    10% split the champion's stream runs ahead: pairs stay close in time). Which items pair depends
    on their order alone, never on their outcomes, so the pairs' contests are fair."""

    limit: int = 1000
    waiting: dict[str, deque[T]] = field(default_factory=lambda: {"champion": deque(), "challenger": deque()})

    def add(self, arm: str, items: list[T]) -> Iterator[tuple[T, T]]:
        """Add ``arm``'s items (``champion`` or ``challenger``); yield (champion, challenger) pairs."""
        other = "challenger" if arm == "champion" else "champion"
        mine, theirs = self.waiting[arm], self.waiting[other]
        for item in items:
            if theirs:
                first = theirs.popleft()
                yield (item, first) if arm == "champion" else (first, item)
            else:
                mine.append(item)
                if len(mine) > self.limit:
                    mine.popleft()
