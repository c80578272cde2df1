"""Drift of a window of traffic against a version's reference profile: pure functions over arrays.

**What is tested.** Per numeric feature (and numeric prediction output): a
Mann-Whitney rank test (is the window shifted?) and a Kolmogorov-Smirnov test
(is its shape different?), both against the distribution function of the whole
reference (``NumericProfile.cdf_values``, exact to 1/1000). A numeric quantity
with at most 20 distinct reference values, each a support point (a count, a
flag, a rating), and every categorical one (and the predicted label), is tested
per value: Fisher's exact test of that value's share, window against reference,
with a last cell for every value the reference did not have. A numeric quantity
with one value holding half the reference or more (an amount that is mostly 0)
is tested as that value's share (Fisher's exact test) and the rank tests on the
other values, since the rank tests' normal approximation is anti-conservative
under such ties. Per quantity that has missing values in the
reference or the window, the missing rate is a statistic of its own, tested
the same exact way.

**Why these tests.** Each p-value is valid whatever the data: the rank tests
depend only on the order of values (and are conservative on ties), Fisher's test
is exact at any count. So the chance that a clean window raises an alarm is set
by ``alpha`` alone, at 100 rows as at 100,000, on a skewed or rounded feature as
on a Gaussian one. A fixed effect-size gate cannot do that: the PSI of a
100-row clean window is above 0.1 about 40% of the time, while a +0.25 sd shift
of a whole 1,000-row window has a PSI near 0.06, so a PSI gate both cries wolf
on small windows and misses small shifts on large ones.

**Calling drift.** The p-values of one model's features and outputs are adjusted
together with Benjamini-Hochberg at ``alpha`` (default 0.1%): on a clean window,
the chance that any quantity is called drifted is at most ``alpha``. Within one
quantity, the smallest p-value over its tests and window parts is multiplied by
how many there were (Bonferroni). The parts are the whole window and its most
recent half and quarter (each of at least ``min_rows`` rows): a shift that
started a few hundred rows ago is diluted by the older rows of a 1,000-row
window, and the most recent quarter sees it undiluted. A quantity is drifted
when its adjusted p-value is below ``alpha`` and the change is at least
``min_effect`` (2 points: of Cliff's delta, the KS distance, the share of rows
that changed category, or the missing rate), which only bites on windows of
tens of thousands of rows, where a test finds any difference "significant".

PSI and Jensen-Shannon distance on the reference's decile bins (or categories)
are reported beside the test, as descriptions of the change, not as its judge.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import special, stats
from scipy.spatial.distance import jensenshannon

from monitoring.baseline import Distribution, Reference, seasonal
from monitoring.report import DriftStatistic, Histogram, Kind, Test
from registry.manifest import NumericProfile
from registry.profile import missing_of, narrowed

#: Floor for bin proportions in PSI, so an empty bin does not make it infinite.
EPSILON = 1e-4
#: The chance that a clean window raises a false alarm, at most.
ALPHA = 0.001
#: The smallest change called drift, on each test's own 0-1 scale.
MIN_EFFECT = 0.02
#: Fewer rows than this are not tested, nor is a part of the window this small.
MIN_ROWS = 100
#: The window is tested whole, and its most recent 1/2 and 1/4.
PARTS = (1, 2, 4)

#: The other values' distribution is tested on a part of the window with at least this many of them.
MIN_OFF_ATOM = 10


def bin_counts(values: np.ndarray, edges: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """Counts in the reference's bins: (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    return np.bincount(np.searchsorted(np.asarray(edges), values, side="left"), minlength=len(edges) + 1)


def psi(reference: np.ndarray, current: np.ndarray, epsilon: float = EPSILON) -> float:
    """Population stability index of two count vectors over the same bins."""
    p = np.maximum(reference / max(reference.sum(), 1), epsilon)
    q = np.maximum(current / max(current.sum(), 1), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) of two count vectors over the same bins."""
    if reference.sum() == 0 or current.sum() == 0:
        return 0.0
    return float(jensenshannon(reference, current, base=2))


def parts(rows: int, min_rows: int) -> list[int]:
    """The window's most recent parts that are tested: whole, half, quarter, each of ``min_rows``."""
    return [rows // d for d in PARTS if d == 1 or rows // d >= min_rows]


@dataclass(frozen=True)
class Found:
    """One test over one part of the window."""

    test: Test
    rows: int
    effect: float
    p_value: float


def mann_whitney(distribution: Distribution, parts: list[np.ndarray]) -> list[Found]:
    """Are the values shifted against the reference? A part's mean mid-rank share of reference values
    below each value is 0.5 without drift; its variance is the two-sample Mann-Whitney one, corrected
    for ties. ``effect`` is Cliff's delta, in [0, 1]."""
    m = distribution.size
    n = np.array([part.size for part in parts], dtype=np.float64)
    means = np.empty(len(parts))
    for i, part in enumerate(parts):
        below, at = distribution.cdf(part)
        means[i] = np.mean((below + at) / 2)
    variance = distribution.tie_factor * (n + m + 1) / (12 * n * m)
    z = np.where(variance > 0, (means - 0.5) / np.sqrt(np.maximum(variance, 1e-300)), 0.0)
    p = 2 * special.ndtr(-np.abs(z))
    return [
        Found("mann-whitney", part.size, float(abs(2 * mean - 1)), float(pi))
        for part, mean, pi in zip(parts, means, p, strict=True)
    ]


def ks_distance(distribution: Distribution, values: np.ndarray) -> float:
    """The largest gap between the window's and the reference's distribution functions, looked for
    on both sides of every window value and support point (between them both are monotone)."""
    ordered = np.sort(values)
    n = ordered.size
    ref_below, ref_at = distribution.cdf(ordered)
    gaps = [
        np.abs(np.searchsorted(ordered, ordered, side="right") / n - ref_at),
        np.abs(np.searchsorted(ordered, ordered, side="left") / n - ref_below),
        np.abs(np.searchsorted(ordered, distribution.values, side="right") / n - distribution.at),
        np.abs(np.searchsorted(ordered, distribution.values, side="left") / n - distribution.below),
    ]
    return float(max(g.max() for g in gaps))


def kolmogorov_smirnov(distribution: Distribution, parts: list[np.ndarray]) -> list[Found]:
    """Is the shape different? The two-sample KS test, its p-value from the asymptotic distribution of
    the statistic at the effective sample size (as scipy's ``ks_2samp`` does for large samples)."""
    m = distribution.size
    d = np.array([ks_distance(distribution, part) for part in parts])
    effective = np.array([max(1, round(part.size * m / (part.size + m))) for part in parts])
    p = stats.kstwo.sf(d, effective)
    return [Found("ks", part.size, float(di), float(pi)) for part, di, pi in zip(parts, d, p, strict=True)]


def fisher(reference: np.ndarray, parts: list[np.ndarray], test: Test) -> list[Found]:
    """Each cell's share, a part of the window against the reference, by Fisher's exact test: a cell's
    count in the part is hypergeometric given the margins. Per part, the smallest two-sided p-value
    times the cells tested; ``effect``, the share of the part that would have to change cell (total
    variation). One call for every cell of every part: scipy's per-call cost is most of the time."""
    m = reference.sum()
    rows = [np.flatnonzero((reference + part) > 0) for part in parts]
    k = np.concatenate([(reference + part)[r] for part, r in zip(parts, rows, strict=True)])
    x = np.concatenate([part[r] for part, r in zip(parts, rows, strict=True)])
    n = np.concatenate([np.full(r.size, part.sum()) for part, r in zip(parts, rows, strict=True)])
    # P(X <= x) for the part, and P(X >= x) as P(K - X <= K - x) for the reference's side of the table
    tails = stats.hypergeom.cdf(np.concatenate([x, k - x]), np.concatenate([n, n]) + m,
                                np.concatenate([k, k]), np.concatenate([n, np.full(n.size, m)]))  # fmt: skip
    two_sided = np.minimum(1.0, 2 * np.minimum(tails[: x.size], tails[x.size :]))
    found, offset = [], 0
    for part, r in zip(parts, rows, strict=True):
        cells = r.size
        tries = 1 if cells <= 2 else cells  # of two cells, each one's test is the other's
        p = float(min(1.0, two_sided[offset : offset + cells].min() * tries)) if cells else 1.0
        offset += cells
        size = part.sum()
        effect = 0.5 * float(np.abs(part / max(size, 1) - reference / max(m, 1)).sum())
        found.append(Found(test, int(size), effect, p))
    return found


def _decisive(found: list[Found]) -> tuple[Found, float]:
    """The test and part with the smallest p-value, and that p-value times how many were tried."""
    best = min(found, key=lambda f: (f.p_value, -f.effect))
    return best, min(1.0, best.p_value * len(found))


def _statistic(name: str, kind: Kind, window: int, found: list[Found], ref_bins: np.ndarray,
               bins: np.ndarray, labels: list[str]) -> DriftStatistic:  # fmt: skip
    best, p = _decisive(found)
    return DriftStatistic(
        name=name, kind=kind, test=best.test, window=window, rows=best.rows, effect=best.effect,
        psi=psi(ref_bins, bins), js_distance=js_distance(ref_bins, bins), p_value=p, p_adjusted=1.0,
        drifted=False,
        histogram=Histogram(bins=labels, reference=ref_bins.tolist(), window=bins.tolist()),
    )  # fmt: skip


def _number(value: float) -> str:
    return f"{value:.4g}"


def bin_labels(edges: np.ndarray) -> list[str]:
    """The cells of ``bin_counts``: (-inf, e0], (e0, e1], ..., (e_last, +inf), in words."""
    if edges.size == 0:
        return ["all"]
    cut = [_number(float(e)) for e in edges]
    return [f"≤ {cut[0]}", *(f"{low} to {high}" for low, high in itertools.pairwise(cut)), f"> {cut[-1]}"]


def _category_labels(ref: Reference) -> list[str]:
    """The cells of ``_codes``: each category (a discrete quantity's support values), then "other"."""
    assert ref.categories is not None
    if ref.distribution is not None:
        return [*map(_number, ref.distribution.values.tolist()), "other"]
    return [*ref.categories.labels, "other"]


def _codes(ref: Reference, present: np.ndarray) -> np.ndarray:
    """Present values as category codes; the last code for every value the reference did not have."""
    assert ref.categories is not None
    if ref.distribution is not None:  # a discrete numeric quantity: its support values
        values = ref.distribution.values
        index = np.minimum(np.searchsorted(values, present), values.size - 1)
        return np.where(values[index] == present, index, values.size)
    labels = ref.categories.labels
    lookup = {label: code for code, label in enumerate(labels)}
    other = len(labels)
    return np.fromiter((lookup.get(value, other) for value in present), dtype=np.int64, count=present.size)


def distribution_drift(name: str, kind: Kind, ref: Reference, present: np.ndarray,
                       min_rows: int = MIN_ROWS) -> DriftStatistic | None:  # fmt: skip
    """The present values (in arrival order) against the reference's distribution or categories."""
    if present.size == 0 or (ref.distribution is None and ref.categories is None):
        return None
    tested = parts(present.size, min_rows)
    if ref.categories is not None:
        cells = ref.categories.counts.size
        codes = _codes(ref, present)
        counts = [np.bincount(codes[-rows:], minlength=cells).astype(np.float64) for rows in tested]
        found = fisher(ref.categories.counts, counts, "categories")
        return _statistic(
            name, kind, present.size, found, ref.categories.counts, counts[0], _category_labels(ref)
        )
    assert ref.distribution is not None
    recent = [present[-rows:] for rows in tested]
    atom = ref.distribution.atom
    if atom is None:
        found = mann_whitney(ref.distribution, recent) + kolmogorov_smirnov(ref.distribution, recent)
    else:
        found = _atom_and_rest(ref.distribution, atom, recent)
    window_bins = bin_counts(present, ref.edges).astype(float)
    return _statistic(name, kind, present.size, found, ref.bins, window_bins, bin_labels(ref.edges))


def _atom_and_rest(distribution: Distribution, atom: int, recent: list[np.ndarray]) -> list[Found]:
    """A quantity mostly at one value: that value's share by Fisher's exact test, and the other values
    against the reference's other values by the rank tests, on each part with ``MIN_OFF_ATOM`` of
    them. Together, not the rank tests over all: at 99% ties a 100-row window holds about one other
    value, and the rank tests' normal approximation called 0.3-0.8% of clean windows drifted at
    alpha 0.1%."""
    value = distribution.values[atom]
    share = distribution.at[atom] - distribution.below[atom]
    reference = np.round(np.array([1.0 - share, share]) * distribution.size)  # counts: hypergeometric
    cells = [np.array([float(np.sum(part != value)), float(np.sum(part == value))]) for part in recent]
    found = fisher(reference, cells, "atom")
    others = [part[part != value] for part in recent]
    others = [part for part in others if part.size >= MIN_OFF_ATOM]
    if others:
        rest = distribution.without(atom)
        found += mann_whitney(rest, others) + kolmogorov_smirnov(rest, others)
    return found


def missing_drift(name: str, kind: Kind, ref: Reference, missing: np.ndarray,
                  min_rows: int = MIN_ROWS) -> DriftStatistic | None:  # fmt: skip
    """The window's missing rate against the reference's; None when neither has a missing value."""
    if missing.size == 0 or (ref.missing == 0 and not missing.any()):
        return None
    counts = []
    for rows in parts(missing.size, min_rows):
        absent = float(missing[-rows:].sum())
        counts.append(np.array([rows - absent, absent]))
    found = fisher(ref.missing_cells, counts, "missing")
    return _statistic(name, kind, missing.size, found, ref.missing_cells, counts[0], ["present", "missing"])


def drift_of(name: str, kind: Kind, ref: Reference, values: np.ndarray, min_rows: int = MIN_ROWS,
             times: np.ndarray | None = None) -> list[DriftStatistic]:  # fmt: skip
    """The quantity's distribution and, where anything is missing, its missing rate: the window's
    values (in arrival order) against the reference, at the dtype the model receives; with
    ``times`` (when each value was seen, epoch seconds), against the same hours of the reference
    where it has them (:func:`seasonal`: a continuous quantity, not one mostly at one value)."""
    tested = ref
    if isinstance(ref.profile, NumericProfile):
        values = narrowed(values, ref.dtype)
        missing = np.isnan(values)
        present = values[~missing]
        whole = ref.distribution
        continuous = whole is not None and not whole.discrete and whole.atom is None
        if ref.by_hour and times is not None and continuous:
            tested, present = seasonal(ref, present, times[~missing])
    else:  # missing as the profile counts it: null, NaN or MISSING_STRING
        values = np.asarray(values, dtype=object)
        missing = missing_of(values)
        present = values[~missing].astype(str).astype(object)
    found = [
        distribution_drift(name, kind, tested, present, min_rows),
        missing_drift(name, kind, ref, missing, min_rows),
    ]
    return [s for s in found if s is not None]


def decide(statistics: list[DriftStatistic], alpha: float = ALPHA,
           min_effect: float = MIN_EFFECT) -> list[DriftStatistic]:  # fmt: skip
    """Benjamini-Hochberg over one model's statistics, then drifted = significant and large enough."""
    if not statistics:
        return []
    adjusted = stats.false_discovery_control([s["p_value"] for s in statistics], method="bh")
    return [
        {**s, "p_adjusted": float(p), "drifted": bool(p < alpha and s["effect"] >= min_effect)}
        for s, p in zip(statistics, adjusted, strict=True)
    ]
