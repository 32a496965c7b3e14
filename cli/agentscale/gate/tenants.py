"""Tenant checks: the cross-tenant leakage probe (a security check, always first), fairness,
the noisy neighbour, guardrails and budgets under load."""

from __future__ import annotations

import math

from agentscale.analysis.figures import (
    Budgets,
    GuardrailsByLoad,
    LoadSide,
    NoisyNeighbor,
    TenantFigures,
)
from agentscale.config.scenario import TenantExpectations
from agentscale.gate.checks import Check, Kind, Status, holds, new_check

MIN_SAMPLE = 20  # requests on each side of a comparison before it can be judged


def _check(name: str, kind: Kind, expected: str, value: float | None, status: Status) -> Check:
    return new_check(name, kind, name.split(":")[0], status, expected=expected, value=value)


def evaluate(expect: TenantExpectations | None, found: TenantFigures) -> list[Check]:
    """Security checks first (they head the report), then the tenant expectations."""
    expect = expect or TenantExpectations()
    checks: list[Check] = []
    leak = found["leakage"]
    if expect.leakage and leak["probed"]:
        first = leak["pairs"][0] if leak["pairs"] else None
        detail = (
            f" ({first['tenant']} received {first['canary_of']}'s canary, first in "
            f"{first['first_request_id']})"
            if first
            else ""
        )
        checks.append(
            _check(f"cross-tenant leakage: responses carrying another tenant's canary{detail}",
                   "security", "== 0", leak["leaks"], "failed" if leak["leaks"] else "pass")
        )  # fmt: skip
    fairness = found["fairness"]
    for metric, rule in (
        ("success_rate", expect.fairness.success_rate if expect.fairness else None),
        ("latency_p95_ms", expect.fairness.latency_p95_ms if expect.fairness else None),
    ):
        if rule is not None:
            value = fairness["success_rate" if metric == "success_rate" else "latency_p95_ms"]
            checks.append(_check(f"fairness: Jain index of {metric} {rule}", "tenants",
                                 str(rule), value, holds(rule, value)))  # fmt: skip
    if expect.noisy_neighbor is not None:
        checks += _noisy_checks(expect, found.get("noisy_neighbor") or {})
    if expect.guardrails is not None:
        checks += _guardrail_checks(expect.guardrails.max_drop, found["guardrails_by_load"])
    if expect.budgets is not None:
        checks += _budget_checks(expect, found["budgets"])
    return checks


def _noisy_checks(expect: TenantExpectations, nn: NoisyNeighbor) -> list[Check]:
    pair = expect.noisy_neighbor
    assert pair is not None
    who = f"noisy neighbour: {pair.victim} while {pair.neighbor} spikes"
    before, during = nn.get("before", {}), nn.get("during", {})
    enough = min(before.get("requests", 0), during.get("requests", 0)) >= MIN_SAMPLE
    checks = []
    for label, value, limit in (
        ("p95 increase", nn.get("p95_increase"), pair.max_p95_increase),
        ("success rate drop", nn.get("success_drop"), pair.max_success_drop),
    ):
        status: Status
        if not enough or value is None:
            status = "inconclusive"
        else:
            status = "pass" if value <= limit else "failed"
        checks.append(_check(f"{who}: {label}", "tenants", f"<= {limit:g}", value, status))
    return checks


def _guardrail_checks(max_drop: float, by_load: GuardrailsByLoad | None) -> list[Check]:
    checks = []
    empty: LoadSide = {}
    low = (by_load or {}).get("low") or empty
    high = (by_load or {}).get("high") or empty
    for metric in ("blocks", "redactions"):
        name = f"guardrails under load: {metric} per answer, high load vs low"
        if metric == "blocks":
            expected, seen = high.get("blocks_expected") or 0.0, high.get("blocks", 0)
        else:
            expected, seen = high.get("redactions_expected") or 0.0, high.get("redactions", 0)
        if min(low.get("answers", 0), high.get("answers", 0)) < MIN_SAMPLE or expected <= 0:
            checks.append(_check(name, "tenants", f"drop <= {max_drop:.0%}", None, "inconclusive"))
            continue
        drop = 1 - seen / expected
        # Counts are noisy: a drop fails only when it is also beyond two Poisson deviations.
        failed = drop > max_drop and expected - seen > 2 * math.sqrt(expected)
        checks.append(_check(name, "tenants", f"drop <= {max_drop:.0%}", round(drop, 4),
                             "failed" if failed else "pass"))  # fmt: skip
    return checks


def _budget_checks(expect: TenantExpectations, spent: Budgets) -> list[Check]:
    limits = expect.budgets
    assert limits is not None
    checks = []
    budget: tuple[tuple[str, float | None, float | None], ...] = (
        ("steps", spent.get("max_steps"), limits.max_steps),
        ("tokens", spent.get("max_tokens"), limits.max_tokens),
        (
            "service time (ms)",
            spent.get("max_service_ms"),
            limits.max_service_time * 1000 if limits.max_service_time else None,
        ),
    )
    for label, value, bound in budget:
        if bound is None:
            continue
        status: Status = (
            "inconclusive" if value is None else ("pass" if value <= bound else "failed")
        )
        checks.append(_check(f"budgets: most {label} of any request", "budgets",
                             f"<= {bound:g}", value, status))  # fmt: skip
    if limits.exhausted_share is not None:
        value = spent.get("exhausted_share")
        rule = limits.exhausted_share
        checks.append(_check(f"budgets: share of requests that hit a budget {rule}", "budgets",
                             str(rule), value, holds(rule, value)))  # fmt: skip
    if limits.degraded_labelled:
        value = spent.get("exhausted_not_degraded", 0)
        example = spent.get("unlabelled_example")
        name = "budgets: a request that hit a budget answers as degraded" + (
            f" (not {example})" if example else ""
        )
        checks.append(_check(name, "budgets", "== 0", value, "failed" if value else "pass"))
    return checks
