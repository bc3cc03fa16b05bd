"""Intervals for the audit: exact per stratum, combined exactly across strata, and PPI++.

Each stratum ``h`` (a category's labels of one source and value) has ``size`` labels, of which
``n`` were audited: ``correct`` judged right, ``unresolved`` that the audit could not tell.

*Exact.* Per stratum, the Clopper–Pearson interval, with every unresolved label counted as wrong
for the lower bound and as right for the upper one, so it holds whatever the truth about them.
Across strata, a quantity monotone in the strata's rates (a weighted mean, or recall, a ratio of
weighted sums) gets the bounds it takes when every rate sits at its own bound, each rate's
interval taken at level ``1 - alpha / k`` for the ``k`` strata involved. By Bonferroni every rate is
inside its interval at once with probability at least ``1 - alpha``, and then so is the combined
quantity: a valid, conservative, finite-sample interval, with no assumption beyond random
sampling within each stratum.

*PPI++* (Angelopoulos, Duchi and Zrnic, arXiv 2311.01453). Per stratum, the mean of ``Y`` (label
right) with the prediction ``f`` (``labels.confidence``, the probability that the label is right)
known on the whole stratum: ``θ = λ·mean_N(f) + mean_n(Y − λf)``, ``λ`` chosen from the data as in
``ppi_py.ppi_mean_ci``, computed here from sums (the stratum's ``f`` is streamed into them, never
held), and equal to ``ppi_py`` on the same arrays (tests check it). Strata combine by their sizes:
``θ = Σ w_h θ_h`` with variance ``Σ w_h² σ_h²``; recall by the delta method. The intervals are
asymptotic (a normal approximation), so a stratum whose sample shows no error at all would get a
zero-width interval: the rectifier's variance is floored at that of the sample with ``z²/2``
pseudo-errors and ``z²/2`` pseudo-successes added (the Agresti–Coull guard), which changes
nothing once the sample shows both outcomes a few times.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import beta, norm


@dataclass(frozen=True)
class Sums:
    """Sufficient statistics of paired (Y, f) or of f alone."""

    count: float = 0  # fractional only with pseudo-observations
    y: float = 0.0
    f: float = 0.0
    yy: float = 0.0
    ff: float = 0.0
    yf: float = 0.0

    def add(self, y: float, f: float) -> Sums:
        return Sums(self.count + 1, self.y + y, self.f + f, self.yy + y * y, self.ff + f * f, self.yf + y * f)


@dataclass(frozen=True)
class Stratum:
    size: int  # labels in the stratum
    correct: int  # audited labels judged right
    wrong: int  # audited labels judged wrong
    unresolved: int  # audited labels the audit could not tell
    labeled: Sums  # (Y, f) over the resolved audited labels
    pool: Sums  # f over the whole stratum (count == size)

    @property
    def n(self) -> int:
        return self.correct + self.wrong + self.unresolved

    @property
    def resolved(self) -> int:
        return self.correct + self.wrong

    def estimate(self) -> float | None:
        return self.correct / self.resolved if self.resolved else None


@dataclass(frozen=True)
class Interval:
    estimate: float | None
    low: float
    high: float


def clopper_pearson(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """The exact two-sided interval for a binomial proportion at level ``1 - alpha``."""
    if trials == 0:
        return 0.0, 1.0
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high


def exact_rate(stratum: Stratum, alpha: float) -> tuple[float, float]:
    """The stratum's rate of right labels: unresolved ones counted against the bound in question."""
    low, _ = clopper_pearson(stratum.correct, stratum.n, alpha)
    _, high = clopper_pearson(stratum.correct + stratum.unresolved, stratum.n, alpha)
    return low, high


def weights(strata: Sequence[Stratum]) -> list[float]:
    total = sum(s.size for s in strata)
    return [s.size / total for s in strata]


def point_mean(strata: Sequence[Stratum]) -> float | None:
    """The stratified estimate Σ w_h p̂_h; strata with no resolved audit left out (and the weights
    renormalised), or ``None`` when none has one."""
    known = [s for s in strata if s.resolved and s.size]
    if not known:
        return None
    return sum(w * (s.correct / s.resolved) for w, s in zip(weights(known), known, strict=True))


def exact_mean(strata: Sequence[Stratum], alpha: float) -> Interval:
    """Σ w_h p_h over the strata: per-stratum Clopper–Pearson at ``alpha / k``, bounds weighted."""
    live = [s for s in strata if s.size]
    if not live:
        return Interval(None, 0.0, 1.0)
    bounds = [exact_rate(s, alpha / len(live)) for s in live]
    w = weights(live)
    low = sum(wh * b[0] for wh, b in zip(w, bounds, strict=True))
    high = sum(wh * b[1] for wh, b in zip(w, bounds, strict=True))
    return Interval(point_mean(live), min(max(low, 0.0), 1.0), min(max(high, 0.0), 1.0))


def _recall(true_positives: float, false_negatives: float) -> float:
    total = true_positives + false_negatives
    return true_positives / total if total > 0 else 1.0


def exact_recall(positives: Sequence[Stratum], negatives: Sequence[Stratum], alpha: float) -> Interval:
    """Recall = TP / (TP + FN), TP = Σ_pos N_h·p_h, FN = Σ_neg N_h·(1 − q_h): increasing in every
    precision ``p_h`` and every NPV ``q_h``, so its bounds are those at the rates' joint bounds."""
    live_pos = [s for s in positives if s.size]
    live_neg = [s for s in negatives if s.size]
    k = len(live_pos) + len(live_neg)
    if not live_pos:
        return Interval(None, 0.0, 1.0)
    pos = [exact_rate(s, alpha / k) for s in live_pos]
    neg = [exact_rate(s, alpha / k) for s in live_neg]
    tp_low = sum(s.size * b[0] for s, b in zip(live_pos, pos, strict=True))
    tp_high = sum(s.size * b[1] for s, b in zip(live_pos, pos, strict=True))
    fn_low = sum(s.size * (1 - b[1]) for s, b in zip(live_neg, neg, strict=True))
    fn_high = sum(s.size * (1 - b[0]) for s, b in zip(live_neg, neg, strict=True))
    return Interval(point_recall(live_pos, live_neg), _recall(tp_low, fn_high), _recall(tp_high, fn_low))


def point_recall(positives: Sequence[Stratum], negatives: Sequence[Stratum]) -> float | None:
    if not any(s.resolved for s in positives):
        return None
    tp = sum(s.size * (s.correct / s.resolved) for s in positives if s.resolved)
    fn = sum(s.size * (s.wrong / s.resolved) for s in negatives if s.resolved)
    return _recall(tp, fn)


# -- PPI++ ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PpiEstimate:
    estimate: float
    variance: float  # of the estimate


def ppi_mean(labeled: Sums, pool: Sums, floor_pseudo: float = 0.0) -> PpiEstimate | None:
    """PPI++ for one mean, from sums, as ``ppi_py.ppi_mean_ci`` computes it (λ tuned and clipped
    to [0, 1]). ``floor_pseudo`` > 0 floors the rectifier's variance at that of the sample with
    that many pseudo-errors and pseudo-successes added (f at the pool's mean)."""
    n, big_n = labeled.count, pool.count
    if n < 2 or big_n < 2:
        return None
    mean_y, mean_f = labeled.y / n, labeled.f / n
    mean_u = pool.f / big_n
    cov = labeled.yf / n - mean_y * mean_f
    both = n + big_n
    var_f = (labeled.ff + pool.ff - (labeled.f + pool.f) ** 2 / both) / (both - 1)
    lam = 0.0 if var_f <= 0 else min(max(cov / ((1 + n / big_n) * var_f), 0.0), 1.0)
    estimate = lam * mean_u + mean_y - lam * mean_f
    imputed = lam * lam * max(pool.ff / big_n - mean_u * mean_u, 0.0) / big_n
    rectifier = _rectifier_variance(labeled, lam)
    if floor_pseudo > 0:
        guarded = labeled
        for y in (0.0, 1.0):
            guarded = _add_weighted(guarded, y, mean_u, floor_pseudo)
        rectifier = max(rectifier, _rectifier_variance(guarded, lam))
    return PpiEstimate(estimate, imputed + rectifier / n)


def _rectifier_variance(sums: Sums, lam: float) -> float:
    """Population variance of Y − λf over the sample (``numpy.std`` squared)."""
    m = sums.count
    mean = (sums.y - lam * sums.f) / m
    second = (sums.yy - 2 * lam * sums.yf + lam * lam * sums.ff) / m
    return max(second - mean * mean, 0.0)


def _add_weighted(sums: Sums, y: float, f: float, weight: float) -> Sums:
    return Sums(
        sums.count + weight,
        sums.y + weight * y,
        sums.f + weight * f,
        sums.yy + weight * y * y,
        sums.ff + weight * f * f,
        sums.yf + weight * y * f,
    )


def z_value(alpha: float) -> float:
    return float(norm.ppf(1 - alpha / 2))


def ppi_mean_interval(labeled: Sums, pool: Sums, alpha: float, guard: bool = True) -> Interval | None:
    """One stratum's PPI++ interval; ``guard=False`` is exactly ``ppi_py.ppi_mean_ci``."""
    z = z_value(alpha)
    found = ppi_mean(labeled, pool, z * z / 2 if guard else 0.0)
    if found is None:
        return None
    half = z * math.sqrt(found.variance)
    return Interval(found.estimate, found.estimate - half, found.estimate + half)


def _stratum_ppi(stratum: Stratum, alpha: float) -> PpiEstimate | None:
    z = z_value(alpha)
    return ppi_mean(stratum.labeled, stratum.pool, z * z / 2)


def ppi_combined_mean(strata: Sequence[Stratum], alpha: float) -> Interval | None:
    live = [s for s in strata if s.size]
    if not live:
        return None
    found = [_stratum_ppi(s, alpha) for s in live]
    if any(f is None for f in found):
        return None
    w = weights(live)
    estimate = sum(wh * f.estimate for wh, f in zip(w, found, strict=True) if f is not None)
    variance = sum(wh * wh * f.variance for wh, f in zip(w, found, strict=True) if f is not None)
    half = z_value(alpha) * math.sqrt(variance)
    return Interval(estimate, max(estimate - half, 0.0), min(estimate + half, 1.0))


def ppi_recall(positives: Sequence[Stratum], negatives: Sequence[Stratum], alpha: float) -> Interval | None:
    live_pos = [s for s in positives if s.size]
    live_neg = [s for s in negatives if s.size]
    if not live_pos:
        return None
    pos = [_stratum_ppi(s, alpha) for s in live_pos]
    neg = [_stratum_ppi(s, alpha) for s in live_neg]
    if any(f is None for f in [*pos, *neg]):
        return None
    tp = sum(s.size * f.estimate for s, f in zip(live_pos, pos, strict=True) if f is not None)
    fn = sum(s.size * (1 - f.estimate) for s, f in zip(live_neg, neg, strict=True) if f is not None)
    tp, fn = max(tp, 0.0), max(fn, 0.0)
    var_tp = sum(s.size**2 * f.variance for s, f in zip(live_pos, pos, strict=True) if f is not None)
    var_fn = sum(s.size**2 * f.variance for s, f in zip(live_neg, neg, strict=True) if f is not None)
    total = tp + fn
    if total <= 0:
        return None
    recall = tp / total
    variance = (fn * fn * var_tp + tp * tp * var_fn) / total**4
    half = z_value(alpha) * math.sqrt(variance)
    return Interval(recall, max(recall - half, 0.0), min(recall + half, 1.0))
