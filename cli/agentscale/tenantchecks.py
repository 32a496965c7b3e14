"""Tenant figures and their checks: fairness, noisy neighbours, cross-tenant leakage, guardrails
and budgets under load. Pure functions over a run's frames and its scenario."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from agentscale.scenario import Scenario, TenantExpectations
from agentscale.scorecard import RunFrames
from agentscale.template import template_variables
from agentscale.tenancy import jain_index, levels
from agentscale.units import Comparison

MIN_SAMPLE = 20  # requests on each side of a comparison before it can be judged
DEPENDENCY_KINDS = ("llm", "retrieval", "tool")


def figures(frames: RunFrames, card: dict[str, Any], scenario: Scenario) -> dict[str, Any]:
    """The scorecard's ``tenants`` section."""
    by_tenant = card.get("by_tenant", {})
    out: dict[str, Any] = {
        "fairness": {
            "tenants": len(by_tenant),
            "success_rate": jain_index([c.get("success_rate") for c in by_tenant.values()]),
            "latency_p95_ms": jain_index([c.get("latency_p95_ms") for c in by_tenant.values()]),
        },
        "leakage": leakage(frames, scenario),
        "guardrails_by_load": guardrails_by_load(frames, scenario),
        "budgets": budgets(frames),
    }
    expect = scenario.expect
    if expect is not None and expect.noisy_neighbor is not None:
        pair = expect.noisy_neighbor
        out["noisy_neighbor"] = noisy_neighbor(frames, scenario, pair.victim, pair.neighbor)
    return out


def _sent(frames: RunFrames) -> np.ndarray:
    a = frames.arrays
    return np.asarray(~a["dropped"] & ~a["cancelled"], dtype=bool)


def probe_wired(scenario: Scenario) -> bool:
    """Whether a canary can reach the agent: carried by the requests, or planted."""
    target = scenario.target
    carried = "canary" in template_variables(target.body) | template_variables(target.headers)
    planted = any(t.canary for t in scenario.tenant_specs().values())
    return carried or planted


def leakage(frames: RunFrames, scenario: Scenario) -> dict[str, Any]:
    requests = frames.requests
    if "leaked_from" in requests:
        leaked = requests["leaked_from"].notna().to_numpy()
    else:  # a run recorded before the probe existed
        leaked = np.zeros(len(requests), dtype=bool)
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for position in np.flatnonzero(leaked):
        row = requests.iloc[position]
        key = (str(row["tenant"]), str(row["leaked_from"]))
        found = pairs.setdefault(
            key,
            {
                "tenant": key[0],
                "canary_of": key[1],
                "responses": 0,
                "first_request_id": str(row["request_id"]),
                "excerpt": row.get("output_excerpt"),
            },
        )
        found["responses"] += 1
    return {
        "probed": probe_wired(scenario) and len(scenario.tenants) >= 2,
        "responses_checked": int(_sent(frames).sum()),
        "leaks": int(leaked.sum()),
        "pairs": sorted(pairs.values(), key=lambda p: -p["responses"]),
    }


def _stats(latency: np.ndarray, success: np.ndarray) -> dict[str, Any]:
    n = int(latency.size)
    return {
        "requests": n,
        "latency_p95_ms": float(np.nanpercentile(latency, 95)) if n else None,
        "success_rate": float(success.mean()) if n else None,
    }


def noisy_neighbor(
    frames: RunFrames, scenario: Scenario, victim: str, neighbor: str
) -> dict[str, Any]:
    """The victim's requests while the neighbour spikes against those before its first spike.
    The neighbour spikes where its own level is in the upper half of its range."""
    shape = scenario.tenant_specs()[neighbor].shape
    a = frames.arrays
    offsets = a["offset"]
    mine = _sent(frames) & (frames.requests["tenant"] == victim).to_numpy(dtype=bool)
    result: dict[str, Any] = {"victim": victim, "neighbor": neighbor}
    if shape is None:
        return result
    grid = np.arange(0.0, frames.duration, 0.05)
    if grid.size == 0:
        return result
    grid_levels = shape.levels(grid, frames.duration)
    middle = (grid_levels.min() + grid_levels.max()) / 2
    high = grid_levels > middle
    if not high.any():
        return result
    first = float(grid[np.argmax(high)])
    spiking = shape.levels(offsets, frames.duration) > middle
    before = mine & (offsets < first)
    during = mine & spiking
    result["first_spike_at_s"] = round(first, 3)
    for name, chosen in (("before", before), ("during", during)):
        result[name] = _stats(a["latency_ms"][chosen], a["success"][chosen])
    pre, now = result["before"], result["during"]
    if pre["latency_p95_ms"] and now["latency_p95_ms"] is not None:
        result["p95_increase"] = now["latency_p95_ms"] / pre["latency_p95_ms"] - 1
    if pre["success_rate"] is not None and now["success_rate"] is not None:
        result["success_drop"] = pre["success_rate"] - now["success_rate"]
    return result


def _per_request(frames: RunFrames, chosen: Any) -> np.ndarray:
    """How many of the ``chosen`` steps each request has."""
    steps = frames.steps
    positions = steps["req"].to_numpy()[np.asarray(chosen, dtype=bool)]
    return np.bincount(positions, minlength=len(frames.requests))


def guardrails_by_load(frames: RunFrames, scenario: Scenario) -> dict[str, Any] | None:
    """Input blocks and output redactions per answered request at low and at high load: an
    agent that drops its guardrails when busy shows here. ``expected`` is what high load would
    show at low load's rates for its own mix of workflows, so a different mix is no excuse."""
    if frames.steps.empty or "action" not in frames.steps:
        return None
    a = frames.arrays
    grid = np.arange(0.0, max(frames.duration, 0.05), 0.05)
    grid_levels = levels(scenario, grid, frames.duration)
    low_level, high_level = float(grid_levels.min()), float(grid_levels.max())
    if high_level - low_level < 1e-9:
        return {"levels": [low_level, high_level], "note": "one load level: nothing to compare"}
    middle = (low_level + high_level) / 2
    requests = frames.requests
    answered = _sent(frames) & requests["status"].isin(["ok", "degraded"]).to_numpy(dtype=bool)
    at = levels(scenario, a["offset"], frames.duration)
    low, high = answered & (at <= middle), answered & (at > middle)
    action = frames.steps["action"]  # categorical: comparisons work on the codes
    workflow = pd.Categorical(requests["workflow"]).codes
    out: dict[str, Any] = {"levels": [low_level, high_level]}
    for name, chosen in (("low", low), ("high", high)):
        out[name] = {"answers": int(chosen.sum())}
    for metric, act in (("blocks", "block"), ("redactions", "redact")):
        counts = _per_request(frames, (action == act).to_numpy(dtype=bool, na_value=False))
        expected = 0.0
        for flow in np.unique(workflow[low | high]):
            mine = workflow == flow
            n_low = int((low & mine).sum())
            if n_low:
                expected += counts[low & mine].sum() / n_low * int((high & mine).sum())
        for name, chosen in (("low", low), ("high", high)):
            n = int(chosen.sum())
            out[name][metric] = int(counts[chosen].sum())
            out[name][f"{metric}_per_answer"] = float(counts[chosen].sum() / n) if n else None
        out["high"][f"{metric}_expected"] = round(expected, 2)
    return out


def budgets(frames: RunFrames) -> dict[str, Any]:
    """What each request spent, at most: steps, tokens, time; and how budget hits answered."""
    a = frames.arrays
    sent = _sent(frames)
    n = int(sent.sum())
    dependency = _per_request(
        frames, frames.steps["kind"].isin(DEPENDENCY_KINDS).to_numpy(dtype=bool)
    )
    tokens = np.nan_to_num(a["input_tokens"]) + np.nan_to_num(a["output_tokens"])
    exhausted = sent & (np.nan_to_num(a["budget_exhausted"]) > 0)
    unlabelled = exhausted & ~a["degraded"]
    return {
        "requests": n,
        "max_steps": int(dependency[sent].max()) if n else None,
        "max_tokens": int(tokens[sent].max()) if n else None,
        "max_service_ms": float(np.nanmax(a["service_ms"][sent])) if n else None,
        "exhausted": int(exhausted.sum()),
        "exhausted_share": float(exhausted.sum() / n) if n else None,
        "exhausted_not_degraded": int(unlabelled.sum()),
        "unlabelled_example": (
            str(frames.requests["request_id"].iloc[int(np.flatnonzero(unlabelled)[0])])
            if unlabelled.any()
            else None
        ),
    }


def _holds(rule: Comparison, value: float | None) -> str:
    return "inconclusive" if value is None else ("pass" if rule.holds(value) else "failed")


def _check(name: str, kind: str, expected: str, value: Any, status: str) -> dict[str, Any]:
    return {"name": name, "kind": kind, "metric": name.split(":")[0], "expected": expected,
            "value": value, "status": status}  # fmt: skip


def evaluate(expect: TenantExpectations | None, found: dict[str, Any]) -> list[dict[str, Any]]:
    """Security checks first (they head the report), then the tenant expectations."""
    expect = expect or TenantExpectations()
    checks: list[dict[str, Any]] = []
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
            value = fairness.get(metric)
            checks.append(_check(f"fairness: Jain index of {metric} {rule}", "tenants",
                                 str(rule), value, _holds(rule, value)))  # fmt: skip
    if expect.noisy_neighbor is not None:
        checks += _noisy_checks(expect, found.get("noisy_neighbor") or {})
    if expect.guardrails is not None:
        checks += _guardrail_checks(expect.guardrails.max_drop, found["guardrails_by_load"])
    if expect.budgets is not None:
        checks += _budget_checks(expect, found["budgets"])
    return checks


def _noisy_checks(expect: TenantExpectations, nn: dict[str, Any]) -> list[dict[str, Any]]:
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
        if not enough or value is None:
            status = "inconclusive"
        else:
            status = "pass" if value <= limit else "failed"
        checks.append(_check(f"{who}: {label}", "tenants", f"<= {limit:g}", value, status))
    return checks


def _guardrail_checks(max_drop: float, by_load: dict[str, Any] | None) -> list[dict[str, Any]]:
    checks = []
    low = (by_load or {}).get("low") or {}
    high = (by_load or {}).get("high") or {}
    for metric in ("blocks", "redactions"):
        name = f"guardrails under load: {metric} per answer, high load vs low"
        expected, seen = high.get(f"{metric}_expected") or 0.0, high.get(metric, 0)
        if min(low.get("answers", 0), high.get("answers", 0)) < MIN_SAMPLE or expected <= 0:
            checks.append(_check(name, "tenants", f"drop <= {max_drop:.0%}", None, "inconclusive"))
            continue
        drop = 1 - seen / expected
        # Counts are noisy: a drop fails only when it is also beyond two Poisson deviations.
        failed = drop > max_drop and expected - seen > 2 * math.sqrt(expected)
        checks.append(_check(name, "tenants", f"drop <= {max_drop:.0%}", round(drop, 4),
                             "failed" if failed else "pass"))  # fmt: skip
    return checks


def _budget_checks(expect: TenantExpectations, spent: dict[str, Any]) -> list[dict[str, Any]]:
    limits = expect.budgets
    assert limits is not None
    checks = []
    for label, value, bound in (
        ("steps", spent.get("max_steps"), limits.max_steps),
        ("tokens", spent.get("max_tokens"), limits.max_tokens),
        (
            "service time (ms)",
            spent.get("max_service_ms"),
            limits.max_service_time * 1000 if limits.max_service_time else None,
        ),
    ):
        if bound is None:
            continue
        status = "inconclusive" if value is None else ("pass" if value <= bound else "failed")
        checks.append(_check(f"budgets: most {label} of any request", "budgets",
                             f"<= {bound:g}", value, status))  # fmt: skip
    if limits.exhausted_share is not None:
        value = spent.get("exhausted_share")
        rule = limits.exhausted_share
        checks.append(_check(f"budgets: share of requests that hit a budget {rule}", "budgets",
                             str(rule), value, _holds(rule, value)))  # fmt: skip
    if limits.degraded_labelled:
        value = spent.get("exhausted_not_degraded", 0)
        example = spent.get("unlabelled_example")
        name = "budgets: a request that hit a budget answers as degraded" + (
            f" (not {example})" if example else ""
        )
        checks.append(_check(name, "budgets", "== 0", value, "failed" if value else "pass"))
    return checks
