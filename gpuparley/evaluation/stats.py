"""Means and Student-t confidence intervals over seeds (no scipy in the environment).

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
    sample = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not sample:
        return None, None
    mean = math.fsum(sample) / len(sample)
    if len(sample) < 2:
        return mean, None
    variance = math.fsum((v - mean) ** 2 for v in sample) / (len(sample) - 1)
    sem = math.sqrt(variance / len(sample))
    return mean, t_critical(len(sample) - 1, confidence) * sem
