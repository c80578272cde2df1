"""What a window is tested against: a version's reference profile of one quantity, prepared once
(its distribution function at the model's dtype, its categories, its decile bins, its hours of the
day and of the week), for the drift tests of ``monitoring.drift``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from registry.manifest import CategoricalProfile, FeatureDType, HourDistribution, NumericProfile, Profile
from registry.profile import narrowed, support

#: A numeric quantity with at most this many distinct reference values is tested value by value.
DISCRETE_VALUES = 20
#: A numeric quantity with one value holding at least this share of the reference (a claim amount
#: that is mostly 0) is tested in two parts: that value's share, and the other values' distribution.
ATOM_SHARE = 0.5


@dataclass(frozen=True)
class Distribution:
    """A reference's distribution function at its support points: ``below`` / ``at`` are the
    shares of the ``size`` values below / at or below each of ``values`` (sorted)."""

    values: np.ndarray
    below: np.ndarray
    at: np.ndarray
    size: int
    tie_factor: float

    @classmethod
    def of(cls, profile: NumericProfile | HourDistribution, dtype: FeatureDType) -> Distribution | None:
        """The profile's distribution function at the model's dtype; None when it has no values."""
        if profile.cdf_values:
            values = np.asarray(profile.cdf_values, dtype=np.float64)
            below = np.asarray(profile.cdf_below, dtype=np.float64)
            at = np.asarray(profile.cdf_at, dtype=np.float64)
            tie_factor = profile.tie_factor if isinstance(profile, NumericProfile) else 1.0
        elif isinstance(profile, NumericProfile):  # a manifest from before the whole reference was kept
            sample = np.array([v for v in profile.sample if v is not None], dtype=np.float64)
            values, below, at, tie_factor = support(narrowed(sample, dtype))
        else:
            return None
        if not values.size or at[-1] == 0:
            return None
        values = narrowed(values, dtype)
        # narrowing may merge neighbouring points (a manifest profiled in float64): keep the ends
        values, first = np.unique(values, return_index=True)
        last = np.append(first[1:] - 1, below.size - 1)
        size = float(at[-1])
        return cls(values, below[first] / size, at[last] / size, int(size), tie_factor)

    @property
    def discrete(self) -> bool:
        """Few distinct values, every reference value one of them: test value by value. (A profile can
        have few support points and many values between them: a feature that is mostly one value, in
        a manifest profiled before ``support`` spaced its points over the other values.)"""
        on_points = round(float(np.sum(self.at - self.below)) * self.size)
        return self.values.size <= DISCRETE_VALUES and on_points == self.size

    @property
    def atom(self) -> int | None:
        """The support point holding at least ``ATOM_SHARE`` of the reference, if one does."""
        shares = self.at - self.below
        top = int(np.argmax(shares))
        return top if shares[top] >= ATOM_SHARE else None

    def without(self, index: int) -> Distribution:
        """The distribution of the reference values other than those at support point ``index``
        (its tie factor from the support points' own ties: those between points are small)."""
        mass = self.at[index] - self.below[index]
        rest = 1.0 - mass
        below = np.delete(np.where(self.values > self.values[index], self.below - mass, self.below), index)
        at = np.delete(np.where(self.values > self.values[index], self.at - mass, self.at), index)
        shares = (at - below) / max(rest, 1e-12)
        tie_factor = 1.0 - float(np.sum(shares**3))
        size = round(self.size * rest)
        return Distribution(np.delete(self.values, index), below / rest, at / rest, size, tie_factor)

    def cdf(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The shares of reference values below ``x`` and at or below it; between two support points,
        interpolated linearly."""
        n = self.values.size
        index = np.searchsorted(self.values, x, side="left")
        inside = np.clip(index, 1, n - 1) if n > 1 else np.zeros_like(index)
        lo, hi = self.values[inside - 1], self.values[inside]
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(hi > lo, (x - lo) / (hi - lo), 0.0)
        between = self.at[inside - 1] + np.clip(share, 0.0, 1.0) * (self.below[inside] - self.at[inside - 1])
        between = np.where(index == 0, 0.0, np.where(index >= n, 1.0, between))
        at_index = np.minimum(index, n - 1)
        exact = (index < n) & (self.values[at_index] == x)
        return (
            np.where(exact, self.below[at_index], between),
            np.where(exact, self.at[at_index], between),
        )


@dataclass(frozen=True)
class Categories:
    """A reference's counts per value, the last entry for every other value. ``labels`` name a
    categorical quantity's values; a discrete numeric one's are its distribution's support points."""

    labels: tuple[str, ...]
    counts: np.ndarray


@dataclass(frozen=True)
class Reference:
    """What one quantity is tested against, prepared once per version (see :func:`reference`)."""

    profile: Profile
    dtype: FeatureDType
    #: numeric quantities
    distribution: Distribution | None
    #: categorical ones, and numeric ones with few distinct values
    categories: Categories | None
    missing: int
    #: a numeric quantity's decile edges at ``dtype`` and its counts in them (PSI, Jensen-Shannon)
    edges: np.ndarray
    bins: np.ndarray
    #: present and missing reference values, for the missing-rate test
    missing_cells: np.ndarray
    #: a numeric quantity's distribution per hour of the day (UTC, "H") and of the week ("D-H"), where
    #: the reference had a time column (``ReferenceProfile.by_hour``): see :func:`seasonal`
    by_hour: dict[str, Distribution] = field(default_factory=dict)


def reference(profile: Profile, dtype: FeatureDType = "float64",
              by_hour: dict[str, HourDistribution] | None = None) -> Reference:  # fmt: skip
    """The tests' view of a profile: its distribution function at ``dtype``, or its categories; and
    ``by_hour``, its distribution per hour of the day and of the week, where there is one."""
    missing = round(profile.missing_rate * profile.count)
    missing_cells = np.array([profile.count - missing, missing], dtype=np.float64)
    if isinstance(profile, CategoricalProfile):
        counts = np.append(np.asarray(profile.counts, dtype=np.float64), profile.other_count)
        categories = Categories(profile.categories, counts)
        return Reference(profile, dtype, None, categories, missing, np.empty(0), np.empty(0), missing_cells)
    distribution = Distribution.of(profile, dtype)
    discrete = None
    if distribution is not None and distribution.discrete:
        counts = np.append(np.round((distribution.at - distribution.below) * distribution.size), 0.0)
        discrete = Categories((), counts)
    edges = narrowed(np.asarray(profile.edges), dtype)
    bins = np.asarray(profile.counts, dtype=np.float64)
    hours = {slot: Distribution.of(part, dtype) for slot, part in (by_hour or {}).items()}
    seasonal = {slot: part for slot, part in hours.items() if part is not None}
    return Reference(profile, dtype, distribution, discrete, missing, edges, bins, missing_cells, seasonal)


def slots(ref: Reference, times: np.ndarray) -> np.ndarray:
    """The reference slot each time (epoch seconds) falls in: its hour of that day of the week ("D-H",
    UTC, Monday 0) where the reference has it, else its hour of the day ("H"), else "" (the whole)."""
    ts = np.asarray(times, dtype=np.float64)
    hours = (ts % 86_400 // 3_600).astype(np.int64)
    weekdays = ((ts // 86_400 + 3) % 7).astype(np.int64)  # 1970-01-01 was a Thursday
    weekly = np.char.add(np.char.add(weekdays.astype(str), "-"), hours.astype(str))
    daily = hours.astype(str)
    known = np.array(list(ref.by_hour), dtype=str)
    return np.where(np.isin(weekly, known), weekly, np.where(np.isin(daily, known), daily, ""))


def seasonal(ref: Reference, present: np.ndarray, times: np.ndarray) -> tuple[Reference, np.ndarray]:
    """A quantity with daily or weekly cycles, compared with the hours it was seen at: each value's
    mid-rank share under its slot's reference distribution (:func:`slots`). Without drift these
    shares are uniform on [0, 1] whatever mix of hours the window holds, so they are tested against
    the uniform distribution, as large as the smallest slot's reference used (the rank tests'
    variance then errs on the safe side)."""
    assert ref.distribution is not None
    shares = np.empty(present.size)
    sizes = []
    found = slots(ref, times)
    for slot in np.unique(found):
        rows = found == slot
        distribution = ref.by_hour.get(str(slot), ref.distribution)
        below, at = distribution.cdf(present[rows])
        shares[rows] = (below + at) / 2
        sizes.append(distribution.size)
    size = min(sizes, default=ref.distribution.size)
    uniform = Distribution(np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.array([0.0, 1.0]), size, 1.0)
    edges = np.linspace(0.1, 0.9, 9)
    return replace(ref, distribution=uniform, edges=edges, bins=np.full(10, size / 10)), shares
