"""Family-wise control of the baseline checks.

Each check asks: did the figure get worse at all (and, outside this module, by more than its
tolerance)? Its one-sided p-value is the chance of a change at least this bad if, in truth,
nothing changed. With dozens of step and workflow checks, judging each at 5% would fail almost
every run by chance; Holm's step-down method keeps the chance that *any* check regresses by
noise at ``alpha`` whatever the number of checks, without assuming they are independent
(steps of one request are not), and rejects at least as much as Bonferroni.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95%: the interval shown beside each check


def p_beyond(change: float, limit: float, se: float) -> float:
    """One-sided p-value of H0 "the bad change is at most ``limit``", normal approximation
    with the bootstrap's standard error ``se`` of the change."""
    if se <= 0 or not math.isfinite(se):
        return 0.0 if change > limit else 1.0
    return 0.5 * math.erfc((change - limit) / se / math.sqrt(2.0))


def holm(p_values: list[float], alpha: float) -> list[bool]:
    """Which hypotheses Holm's method rejects at family-wise level ``alpha``: sort the
    p-values, reject the k-th smallest while it is at most alpha / (m - k), stop at the first
    that is not."""
    m = len(p_values)
    rejected = [False] * m
    for k, i in enumerate(sorted(range(m), key=lambda j: p_values[j])):
        if p_values[i] > alpha / (m - k):
            break
        rejected[i] = True
    return rejected
