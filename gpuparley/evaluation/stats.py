"""Means and Student-t confidence intervals over seeds (no scipy in the environment): of one
sample (`mean_ci`, also for paired differences) and of the difference of two independent
samples (`difference_ci`, Welch).

The t distribution's CDF has a closed form for integer degrees of freedom (Abramowitz & Stegun
26.7.3-4), which is all a CI over n seeds needs; the quantile is found by bisection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _central_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's T with `df` degrees of freedom (A&S 26.7.3-4), t >= 0."""
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    if df % 2 == 1:
        term, total = 1.0, 0.0
        if df > 1:
            term = math.cos(theta)
            total = term
            for k in range(3, df - 1, 2):
                term *= cos2 * (k - 1) / k
                total += term
        return 2 / math.pi * (theta + math.sin(theta) * total) if df > 1 else 2 * theta / math.pi
    term = total = 1.0
    for k in range(2, df - 1, 2):
        term *= cos2 * (k - 1) / k
        total += term
    return math.sin(theta) * total


def t_critical(df: int, confidence: float = 0.95) -> float:
    """The two-sided critical value t such that P(|T| <= t) = confidence."""
    if df < 1:
        raise ValueError("a t interval needs at least 1 degree of freedom")
    low, high = 0.0, 1.0
    while _central_mass(high, df) < confidence:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        if _central_mass(mid, df) < confidence:
            low = mid
        else:
            high = mid
        if high - low < 1e-12:
            break
    return (low + high) / 2


def mean_ci(
    values: Sequence[float | None], confidence: float = 0.95
) -> tuple[float | None, float | None]:
    """(mean, CI half-width) over the non-missing values; half-width None below two values."""
    sample = _sample(values)
    if not sample:
        return None, None
    mean = math.fsum(sample) / len(sample)
    if len(sample) < 2:
        return mean, None
    variance = math.fsum((v - mean) ** 2 for v in sample) / (len(sample) - 1)
    sem = math.sqrt(variance / len(sample))
    return mean, t_critical(len(sample) - 1, confidence) * sem


def _sample(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def difference_ci(
    first: Sequence[float | None], second: Sequence[float | None], confidence: float = 0.95
) -> tuple[float | None, float | None]:
    """(mean of `first` - mean of `second`, CI half-width) for two independent samples: Welch's
    interval, its degrees of freedom rounded down (conservative); half-width None when either
    sample has fewer than two values."""
    a, b = _sample(first), _sample(second)
    if not a or not b:
        return None, None
    difference = math.fsum(a) / len(a) - math.fsum(b) / len(b)
    if len(a) < 2 or len(b) < 2:
        return difference, None
    var_a, var_b = (
        math.fsum((v - math.fsum(s) / len(s)) ** 2 for v in s) / (len(s) - 1) for s in (a, b)
    )
    sem_a, sem_b = var_a / len(a), var_b / len(b)
    sem = math.sqrt(sem_a + sem_b)
    if sem == 0:
        return difference, 0.0
    df = (sem_a + sem_b) ** 2 / (sem_a**2 / (len(a) - 1) + sem_b**2 / (len(b) - 1))
    return difference, t_critical(max(1, int(df)), confidence) * sem
