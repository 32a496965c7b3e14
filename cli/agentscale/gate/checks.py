"""One check of the verdict: a baseline comparison, an SLO, a window's expectation, a tenant
check or the security probe. ``verdict.json`` holds them in this shape."""

from __future__ import annotations

from typing import Literal, TypedDict

from agentscale.config.units import Comparison

Status = Literal["pass", "regressed", "improved", "inconclusive", "failed", "not measured"]
Kind = Literal["baseline", "slo", "expectation", "tenants", "budgets", "security", "run"]
FAILING: frozenset[str] = frozenset({"regressed", "failed"})


class Check(TypedDict):
    name: str
    kind: Kind
    metric: str
    status: Status
    expected: str | None  # the rule (SLO, expectation): "< 8000"
    value: float | None  # what the run measured
    baseline: float | None  # baseline comparisons: the two values, the change and its noise
    candidate: float | None
    change: float | None
    change_pct: float | None
    ci: list[float] | None
    noise: float | None
    tolerance: str | None
    detail: str  # why a check could not be judged, or what it found
    window: str | None
    optional: bool  # not measured here is listed, but does not make the run inconclusive
    scope: str | None  # baseline checks: run, step or workflow
    p_value: float | None  # baseline checks: one-sided, of "not worse" (Holm decides on it)


def new_check(
    name: str,
    kind: Kind,
    metric: str,
    status: Status = "inconclusive",
    *,
    expected: str | None = None,
    value: float | None = None,
    tolerance: str | None = None,
    detail: str = "",
    window: str | None = None,
    optional: bool = False,
) -> Check:
    return {
        "name": name,
        "kind": kind,
        "metric": metric,
        "status": status,
        "expected": expected,
        "value": value,
        "baseline": None,
        "candidate": None,
        "change": None,
        "change_pct": None,
        "ci": None,
        "noise": None,
        "tolerance": tolerance,
        "detail": detail,
        "window": window,
        "optional": optional,
        "scope": None,
        "p_value": None,
    }


def holds(rule: Comparison, value: float | None) -> Status:
    """pass or failed for a comparison rule; inconclusive when nothing was measured."""
    if value is None:
        return "inconclusive"
    return "pass" if rule.holds(value) else "failed"


VERDICT_SCHEMA = "agentscale/verdict/v1"


class Verdict(TypedDict):
    schema: str
    result: str  # pass | fail | invalid | inconclusive | interrupted
    exit_code: int
    created_at: str
    run_id: str
    candidate_runs: list[str]
    baseline: str | None
    baseline_file: str | None
    checks: list[Check]
    invalid_reasons: list[str]
    warnings: list[str]
    gated: bool  # False: no baseline, SLO or expectation was checked ("pass (nothing gated)")
