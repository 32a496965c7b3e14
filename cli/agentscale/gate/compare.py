"""Baseline checks: run-level figures of a candidate against a baseline.

A change regresses only when it is beyond its tolerance, beyond the noise seen across repeated
runs, and its bootstrap confidence interval lies wholly on the bad side.
"""

from __future__ import annotations

from statistics import median

import numpy as np

from agentscale.analysis.figures import Card, figure, replicates, reported
from agentscale.config.metrics import DEFAULT_CHECKS, METRICS, MIN_REQUESTS, Metric, bad_direction
from agentscale.config.scenario import Gates
from agentscale.gate.checks import Check, new_check


def tolerances(gates: Gates | None) -> dict[str, Metric]:
    chosen = {name: METRICS[name] for name in DEFAULT_CHECKS}
    if gates is None:
        return chosen
    for name in METRICS:
        change = getattr(gates, name, None)
        if change is None:
            continue
        base = METRICS[name]
        limit = getattr(change, bad_direction(name))  # the loader checked it is the one given
        if limit is not None:
            chosen[name] = Metric(base.higher_is_worse, base.absolute, limit, base.floor)
    return chosen


def set_by(gates: Gates | None) -> frozenset[str]:
    """The metrics the scenario gave a tolerance of its own."""
    return frozenset(name for name in METRICS if getattr(gates, name, None) is not None)


def compare(
    baseline: list[Card],
    candidate: list[Card],
    metrics: dict[str, Metric],
    min_requests: int = MIN_REQUESTS,
    seed: int = 0,
    required: frozenset[str] = frozenset(),
) -> list[Check]:
    """``baseline`` and ``candidate``: the overall scorecard of each of their runs.
    ``required``: the metrics the scenario set a tolerance for (not measured: inconclusive)."""
    rng = np.random.default_rng(seed)
    checks = []
    base_n = min((c["requests"] for c in baseline), default=0)
    cand_n = min((c["requests"] for c in candidate), default=0)
    for name, metric in metrics.items():
        base_values = [v for c in baseline if (v := figure(c, name)) is not None]
        cand_values = [v for c in candidate if (v := figure(c, name)) is not None]
        check = new_check(
            name, "baseline", name, tolerance=describe(metric), optional=name not in required
        )
        checks.append(check)
        unreported = _unreported(baseline, candidate, name)
        if unreported:
            check["status"], check["detail"] = "not measured", unreported
            continue
        if not base_values or not cand_values:
            check["detail"] = "not measured in both runs"
            continue
        base, cand = median(base_values), median(cand_values)
        change = cand - base
        check["baseline"], check["candidate"], check["change"] = base, cand, change
        check["change_pct"] = change / abs(base) if base else None
        if min(base_n, cand_n) < min_requests:
            check["detail"] = f"too few requests ({min(base_n, cand_n)} < {min_requests}) to judge"
            continue
        base_reps = _pooled(baseline, name)
        cand_reps = _pooled(candidate, name)
        if base_reps.size < 20 or cand_reps.size < 20:
            check["detail"] = "no bootstrap replicates to estimate the noise"
            continue
        diffs = rng.choice(cand_reps, 2000) - rng.choice(base_reps, 2000)
        low, high = (float(x) for x in np.percentile(diffs, [2.5, 97.5]))
        noise = max(_spread(base_values), _spread(cand_values))
        check["ci"], check["noise"] = [low, high], noise
        limit = max(
            metric.tolerance if metric.absolute else metric.tolerance * abs(base),
            metric.floor,
            noise,
        )
        bad = change if metric.higher_is_worse else -change
        bad_low, bad_high = (low, high) if metric.higher_is_worse else (-high, -low)
        if bad > limit and bad_low > 0:
            check["status"] = "regressed"
        elif -bad > limit and bad_high < 0:
            check["status"] = "improved"
        else:
            check["status"] = "pass"
    return checks


def _unreported(baseline: list[Card], candidate: list[Card], name: str) -> str | None:
    """Why a figure cannot be compared because the agent did not report its data."""
    base = any(reported(c, name) for c in baseline)
    cand = any(reported(c, name) for c in candidate)
    if base and cand:
        return None
    if not base and not cand:
        return "the agent reported no data for it in either run"
    return f"the agent reported no data for it in the {'baseline' if cand else 'candidate'}"


def _pooled(cards: list[Card], name: str) -> np.ndarray:
    # Replicates of every run together: the spread then holds both the sampling noise within
    # a run and the differences between runs.
    return np.asarray([v for c in cards for v in replicates(c, name)], dtype=float)


def _spread(values: list[float]) -> float:
    return float(max(values) - min(values)) / 2 if len(values) >= 2 else 0.0


def describe(metric: Metric) -> str:
    word = "increase" if metric.higher_is_worse else "decrease"
    amount = f"{metric.tolerance:g}" if metric.absolute else f"{metric.tolerance:.0%}"
    return f"max {word} {amount}" + (f" (at least {metric.floor:g})" if metric.floor else "")
