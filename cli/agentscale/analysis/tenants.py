"""Tenant figures and their checks: fairness, noisy neighbours, cross-tenant leakage, guardrails
and budgets under load. Pure functions over a run's frames and its scenario."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from agentscale.analysis.figures import (
    Budgets,
    GroupStats,
    GuardrailsByLoad,
    Leakage,
    LeakPair,
    LoadSide,
    NoisyNeighbor,
    Scorecard,
    TenantFigures,
)
from agentscale.analysis.known import largest, quantile
from agentscale.config.scenario import Scenario
from agentscale.config.template import template_variables
from agentscale.config.traffic import levels
from agentscale.records.frames import RunFrames

MIN_SAMPLE = 20  # requests on each side of a comparison before it can be judged
DEPENDENCY_KINDS = ("llm", "retrieval", "tool")


def figures(frames: RunFrames, card: Scorecard, scenario: Scenario) -> TenantFigures:
    """The scorecard's ``tenants`` section."""
    by_tenant = card["by_tenant"]
    out: TenantFigures = {
        "fairness": {
            "tenants": len(by_tenant),
            "success_rate": jain_index([c["success_rate"] for c in by_tenant.values()]),
            "latency_p95_ms": jain_index([c["latency_p95_ms"] for c in by_tenant.values()]),
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


def probe_wired(scenario: Scenario) -> bool:
    """Whether a canary can reach the agent: carried by the requests, or planted."""
    target = scenario.target
    carried = "canary" in template_variables(target.body) | template_variables(target.headers)
    planted = any(t.canary for t in scenario.tenant_specs().values())
    return carried or planted


def leakage(frames: RunFrames, scenario: Scenario) -> Leakage:
    requests = frames.requests
    if "leaked_from" in requests:
        leaked = requests["leaked_from"].notna().to_numpy()
    else:  # a run recorded before the probe existed
        leaked = np.zeros(len(requests), dtype=bool)
    pairs: dict[tuple[str, str], LeakPair] = {}
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
                "excerpt": _text(row.get("output_excerpt")),
            },
        )
        found["responses"] += 1
    return {
        "probed": probe_wired(scenario) and len(scenario.tenants) >= 2,
        "responses_checked": int(frames.sent.sum()),
        "leaks": int(leaked.sum()),
        "pairs": sorted(pairs.values(), key=lambda p: -p["responses"]),
    }


def _stats(latency: np.ndarray, success: np.ndarray) -> GroupStats:
    n = int(latency.size)
    return {
        "requests": n,
        "latency_p95_ms": quantile(latency, 95),
        "success_rate": float(success.mean()) if n else None,
    }


def noisy_neighbor(
    frames: RunFrames, scenario: Scenario, victim: str, neighbor: str
) -> NoisyNeighbor:
    """The victim's requests while the neighbour spikes against those before its first spike.
    The neighbour spikes where its own level is in the upper half of its range."""
    shape = scenario.tenant_specs()[neighbor].shape
    a = frames.arrays
    offsets = a["offset"]
    mine = frames.sent & (frames.requests["tenant"] == victim).to_numpy(dtype=bool)
    result: NoisyNeighbor = {"victim": victim, "neighbor": neighbor}
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
    result["before"] = pre = _stats(a["latency_ms"][before], a["success"][before])
    result["during"] = now = _stats(a["latency_ms"][during], a["success"][during])
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


def guardrails_by_load(frames: RunFrames, scenario: Scenario) -> GuardrailsByLoad | None:
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
    answered = frames.sent & requests["status"].isin(["ok", "degraded"]).to_numpy(dtype=bool)
    at = levels(scenario, a["offset"], frames.duration)
    low, high = answered & (at <= middle), answered & (at > middle)
    action = frames.steps["action"]  # categorical: comparisons work on the codes
    workflow = pd.Categorical(requests["workflow"]).codes
    counts, expected = {}, {}
    for metric, act in (("blocks", "block"), ("redactions", "redact")):
        counts[metric] = _per_request(frames, (action == act).to_numpy(dtype=bool, na_value=False))
        expected[metric] = 0.0
        for flow in np.unique(workflow[low | high]):
            mine = workflow == flow
            n_low = int((low & mine).sum())
            if n_low:
                rate = counts[metric][low & mine].sum() / n_low
                expected[metric] += rate * int((high & mine).sum())

    def side(chosen: np.ndarray) -> LoadSide:
        n = int(chosen.sum())
        blocks, redactions = (int(counts[m][chosen].sum()) for m in ("blocks", "redactions"))
        return {
            "answers": n,
            "blocks": blocks,
            "blocks_per_answer": blocks / n if n else None,
            "redactions": redactions,
            "redactions_per_answer": redactions / n if n else None,
        }

    out: GuardrailsByLoad = {"levels": [low_level, high_level], "low": side(low)}
    out["high"] = side(high)
    out["high"]["blocks_expected"] = round(expected["blocks"], 2)
    out["high"]["redactions_expected"] = round(expected["redactions"], 2)
    return out


def budgets(frames: RunFrames) -> Budgets:
    """What each request spent, at most: steps, tokens, time; and how budget hits answered."""
    a = frames.arrays
    sent = frames.sent
    n = int(sent.sum())
    dependency = _per_request(
        frames, frames.steps["kind"].isin(DEPENDENCY_KINDS).to_numpy(dtype=bool)
    )
    tokens_known = sent & ~(np.isnan(a["input_tokens"]) & np.isnan(a["output_tokens"]))
    tokens = np.nan_to_num(a["input_tokens"]) + np.nan_to_num(a["output_tokens"])
    events_known = sent & ~np.isnan(a["budget_exhausted"])
    exhausted = events_known & (np.nan_to_num(a["budget_exhausted"]) > 0)
    unlabelled = exhausted & ~a["degraded"]
    known = int(events_known.sum())
    return {
        "requests": n,
        "max_steps": int(dependency[sent].max()) if n and frames.steps.size else None,
        "max_tokens": int(tokens[tokens_known].max()) if tokens_known.any() else None,
        # Known values only: a run of requests none of which was timed has no maximum (and
        # numpy warned on the terminal about an all-NaN slice).
        "max_service_ms": largest(a["service_ms"][sent]),
        "exhausted": int(exhausted.sum()),
        # Only requests that reported events say whether they hit a budget.
        "exhausted_share": float(exhausted.sum() / known) if known else None,
        "exhausted_not_degraded": int(unlabelled.sum()),
        "unlabelled_example": (
            str(frames.requests["request_id"].iloc[int(np.flatnonzero(unlabelled)[0])])
            if unlabelled.any()
            else None
        ),
    }


def jain_index(values: list[float | None]) -> float | None:
    """Jain's fairness index: (sum x)^2 / (n * sum x^2); 1 when every x is equal, 1/n when one
    tenant has everything. None without two values or when all are zero."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if x.size < 2:
        return None
    squares = float((x * x).sum())
    if squares == 0:
        return None
    return float(x.sum() ** 2 / (x.size * squares))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
