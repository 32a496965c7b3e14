"""The gate: run-level figures of a candidate against a baseline, and absolute SLOs.

Each check is ``pass``, ``regressed``, ``improved`` or ``inconclusive``. A change regresses
only when it is beyond its tolerance, beyond the noise seen across repeated runs, and its
bootstrap confidence interval lies wholly on the bad side.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median
from typing import Any

import numpy as np

from agentscale.scenario import Gates


@dataclass(frozen=True)
class Metric:
    higher_is_worse: bool
    absolute: bool  # tolerance in the metric's own units (rates), else relative
    tolerance: float
    floor: float = 0.0  # the least change that counts, in the metric's units


METRICS = {
    "latency_p50_ms": Metric(True, False, 0.10),
    "latency_p95_ms": Metric(True, False, 0.10),
    "latency_p99_ms": Metric(True, False, 0.15),
    "success_rate": Metric(False, True, 0.01),
    "expected_answer_rate": Metric(False, True, 0.01),
    "cost_per_success_usd": Metric(True, False, 0.05),
    "cost_per_request_usd": Metric(True, False, 0.05),
    "tool_calls_per_request": Metric(True, False, 0.10),
    "retries_per_tool_call": Metric(True, False, 0.10, floor=0.05),
    "input_tokens_mean": Metric(True, False, 0.10),
    "output_tokens_mean": Metric(True, False, 0.10),
}
# Checked whatever the scenario says: speed, quality, cost and the agent's own behaviour.
DEFAULT_CHECKS = (
    "latency_p95_ms",
    "success_rate",
    "expected_answer_rate",
    "cost_per_success_usd",
    "retries_per_tool_call",
    "tool_calls_per_request",
    "input_tokens_mean",
)
MIN_REQUESTS = 100


def tolerances(gates: Gates | None) -> dict[str, Metric]:
    chosen = {name: METRICS[name] for name in DEFAULT_CHECKS}
    if gates is None:
        return chosen
    for name, change in gates.model_dump(exclude={"slo", "min_requests"}).items():
        if change is None or name not in METRICS:
            continue
        base = METRICS[name]
        limit = change[bad_direction(name)]  # the loader has checked it is the one given
        if limit is not None:
            chosen[name] = Metric(base.higher_is_worse, base.absolute, limit, base.floor)
    return chosen


def bad_direction(metric: str) -> str:
    """The tolerance field that makes sense for ``metric``: max_increase or max_decrease."""
    return "max_increase" if METRICS[metric].higher_is_worse else "max_decrease"


def compare(
    baseline: list[dict[str, Any]],
    candidate: list[dict[str, Any]],
    metrics: dict[str, Metric],
    min_requests: int = MIN_REQUESTS,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """``baseline`` and ``candidate``: the overall scorecard of each of their runs."""
    rng = np.random.default_rng(seed)
    checks = []
    base_n = min((c["requests"] for c in baseline), default=0)
    cand_n = min((c["requests"] for c in candidate), default=0)
    for name, metric in metrics.items():
        base_values = [c[name] for c in baseline if c.get(name) is not None]
        cand_values = [c[name] for c in candidate if c.get(name) is not None]
        check: dict[str, Any] = {
            "name": name,
            "kind": "baseline",
            "metric": name,
            "baseline": None,
            "candidate": None,
            "change": None,
            "change_pct": None,
            "ci": None,
            "noise": None,
            "tolerance": _describe(metric),
            "status": "inconclusive",
            "detail": "",
        }
        checks.append(check)
        if min(base_n, cand_n) < min_requests:
            check["detail"] = f"too few requests ({min(base_n, cand_n)} < {min_requests}) to judge"
            continue
        if not base_values or not cand_values:
            check["detail"] = "not measured in both runs"
            continue
        base, cand = median(base_values), median(cand_values)
        change = cand - base
        check.update(
            baseline=base,
            candidate=cand,
            change=change,
            change_pct=change / abs(base) if base else None,
        )
        base_reps = _pooled(baseline, name)
        cand_reps = _pooled(candidate, name)
        if base_reps.size < 20 or cand_reps.size < 20:
            check["detail"] = "no bootstrap replicates to estimate the noise"
            continue
        diffs = rng.choice(cand_reps, 2000) - rng.choice(base_reps, 2000)
        low, high = (float(x) for x in np.percentile(diffs, [2.5, 97.5]))
        noise = max(_spread(base_values), _spread(cand_values))
        check.update(ci=[low, high], noise=noise)
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


def slo_checks(gates: Gates | None, candidate: list[dict[str, Any]]) -> list[dict[str, Any]]:
    checks = []
    for name, rule in gates.slo.items() if gates else []:
        values = [float(c[name]) for c in candidate if c.get(name) is not None]
        value = median(values) if values else None
        status = "inconclusive" if value is None else ("pass" if rule.holds(value) else "failed")
        checks.append(
            {
                "name": f"slo: {name} {rule}",
                "kind": "slo",
                "metric": name,
                "expected": str(rule),
                "value": value,
                "status": status,
            }
        )
    return checks


def decide(checks: list[dict[str, Any]], invalid: list[str]) -> tuple[str, int]:
    """(result, exit code): invalid 3, regressed or failed 1, inconclusive 3, else 0."""
    if any(c.get("kind") == "security" and c["status"] == "failed" for c in checks):
        return "fail", 1
    if invalid:
        return "invalid", 3
    statuses = {c["status"] for c in checks}
    if statuses & {"regressed", "failed"}:
        return "fail", 1
    if "inconclusive" in statuses:
        return "inconclusive", 3
    return "pass", 0


def _pooled(cards: list[dict[str, Any]], name: str) -> np.ndarray:
    # Replicates of every run together: the spread then holds both the sampling noise within
    # a run and the differences between runs.
    values = [v for c in cards for v in (c.get("bootstrap") or {}).get(name, [])]
    return np.asarray(values, dtype=float)


def _spread(values: list[float]) -> float:
    return float(max(values) - min(values)) / 2 if len(values) >= 2 else 0.0


def _describe(metric: Metric) -> str:
    word = "increase" if metric.higher_is_worse else "decrease"
    amount = f"{metric.tolerance:g}" if metric.absolute else f"{metric.tolerance:.0%}"
    return f"max {word} {amount}" + (f" (at least {metric.floor:g})" if metric.floor else "")
