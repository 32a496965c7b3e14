"""The bottleneck scorecard: pure functions over the run's frames (see docs/architecture.md).

Steps are tied to their request by position once (``attach_steps``), so that every group
(workflow, tenant, phase, fault window) selects its steps with one boolean take.
"""

from __future__ import annotations

import re
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from agentscale.analysis.conversations import conversation_figures
from agentscale.analysis.figures import (
    Card,
    GuardrailFigures,
    Percentiles,
    RetrievalFigures,
    Scorecard,
    StepFigures,
    ToolFigures,
    TraceWarnings,
    WindowTraffic,
)
from agentscale.analysis.gated import gated_figures
from agentscale.analysis.known import mean as _mean
from agentscale.analysis.known import quantile as _q
from agentscale.analysis.known import total as _total
from agentscale.records.frames import RunFrames

SCHEMA = "agentscale/scorecard/v1"


def card(frames: RunFrames, mask: np.ndarray, seconds: float) -> Card:
    """Every scorecard figure for the requests selected by ``mask``."""
    a = frames.arrays
    sent_mask = mask & frames.sent
    n = int(sent_mask.sum())
    success = a["success"][sent_mask]
    successes = int(success.sum())
    latency, service = a["latency_ms"][sent_mask], a["service_ms"][sent_mask]
    tokens_in, tokens_out = a["input_tokens"][sent_mask], a["output_tokens"][sent_mask]
    tool_calls, retries = a["tool_calls"][sent_mask], a["retries"][sent_mask]
    cost = a["cost_usd"][sent_mask]
    expect = a["expect"][sent_mask]
    spend = float(cost.sum()) if n and not np.isnan(cost).any() else None
    attempts_known = ~np.isnan(retries)
    calls = float(np.nansum(tool_calls[attempts_known]))
    status_known = a["status_known"][sent_mask]
    events = {
        name: a[name][sent_mask] for name in ("circuit_opens", "fallbacks", "budget_exhausted")
    }
    events_known = ~np.isnan(events["circuit_opens"])
    counts = np.bincount(
        a["error_code"][sent_mask] + 1, minlength=len(frames.error_classes or []) + 1
    )
    errors = dict(zip(frames.error_classes or [], counts[1:].tolist(), strict=True))
    steps = _step_figures(frames, sent_mask, latency)
    ttft = a["ttft_ms"][sent_mask]
    streamed = int((~np.isnan(a["ttfb_ms"][sent_mask])).sum())
    gaps = _gaps(frames, sent_mask)
    figures: Card = {
        "requests": n,
        "successes": successes,
        "success_rate": successes / n if n else None,
        "expected_answer_rate": _mean(expect),
        "errors": {str(k): int(v) for k, v in errors.items() if v},
        "dropped": int((mask & a["dropped"]).sum()),
        "cancelled": int((mask & a["cancelled"]).sum()),
        "throughput_rps": n / seconds if seconds > 0 else None,
        "latency_ms": _percentiles(latency),
        "service_ms": _percentiles(service),
        "latency_p50_ms": _q(latency, 50),
        "latency_p95_ms": _q(latency, 95),
        "latency_p99_ms": _q(latency, 99),
        "input_tokens_mean": _mean(tokens_in),
        "input_tokens_p95": _q(tokens_in, 95),
        "output_tokens_mean": _mean(tokens_out),
        "output_tokens_p95": _q(tokens_out, 95),
        "tool_calls_per_request": _mean(tool_calls),
        "tool_calls_p50": _q(tool_calls, 50),
        "tool_calls_p95": _q(tool_calls, 95),
        "retries_per_tool_call": float(np.nansum(retries)) / calls if calls else None,
        "cost_usd": spend,
        "cost_per_request_usd": spend / n if spend is not None and n else None,
        # All spend divided by successes: failed requests cost money too.
        "cost_per_success_usd": spend / successes if spend is not None and successes else None,
        "degraded_share": (
            float(a["degraded"][sent_mask][status_known].mean()) if status_known.any() else None
        ),
        "circuit_opens": _total(events["circuit_opens"]),
        "fallbacks": _total(events["fallbacks"]),
        "budget_exhausted": _total(events["budget_exhausted"]),
        "steps": steps["steps"],
        "tools": steps["tools"],
        "retrieval": steps["retrieval"],
        "guardrails": steps["guardrails"],
        "cache_hit_rate": steps["cache_hit_rate"],
        "slowest_5pct_share": steps["slowest_5pct_share"],
        "ttft_p50_ms": _q(ttft, 50),
        "ttft_p95_ms": _q(ttft, 95),
        "ttfb_p95_ms": _q(a["ttfb_ms"][sent_mask], 95),
        "inter_event_p50_ms": _q(gaps, 50),
        "inter_event_p95_ms": _q(gaps, 95),
        "inter_event_max_ms": float(gaps.max()) if gaps.size else None,
        "stream_events_mean": _mean(a["stream_events"][sent_mask]),
        # How many requests reported the data behind the figures: 0 is "not reported".
        "coverage": {
            "tokens": int((~np.isnan(tokens_in) | ~np.isnan(tokens_out)).sum()),
            "tool_calls": int((~np.isnan(tool_calls)).sum()),
            "retries": int(attempts_known.sum()),
            "cost": int((~np.isnan(cost)).sum()),
            "status": int(status_known.sum()),
            "events": int(events_known.sum()),
            "expect": int((~np.isnan(expect)).sum()),
            "cache": steps["cached_steps"],
            "stream": streamed,
        },
    }
    return figures


def _gaps(frames: RunFrames, mask: np.ndarray) -> np.ndarray:
    """The gaps between events of the streamed answers ``mask`` selects, pooled."""
    if frames.gaps is None:
        return np.empty(0)
    owner, values = frames.gaps
    chosen: np.ndarray = values[mask[owner]]
    return chosen


class _StepPart(TypedDict):
    cached_steps: int  # requests with a step that reported a cache hit or miss
    steps: dict[str, StepFigures]
    tools: dict[str, ToolFigures]
    retrieval: RetrievalFigures | None
    guardrails: GuardrailFigures | None
    cache_hit_rate: float | None
    slowest_5pct_share: dict[str, float]


def _percentiles(values: np.ndarray) -> Percentiles:
    return {"p50": _q(values, 50), "p95": _q(values, 95), "p99": _q(values, 99)}


def _step_figures(frames: RunFrames, sent_mask: np.ndarray, latency: np.ndarray) -> _StepPart:
    steps = frames.steps
    if len(steps) and not sent_mask.all():
        chosen = steps.iloc[np.flatnonzero(sent_mask[steps["req"].to_numpy()])]
    else:
        chosen = steps
    out: _StepPart = {
        "cached_steps": 0,
        "steps": {},
        "tools": {},
        "retrieval": None,
        "guardrails": None,
        "cache_hit_rate": None,
        "slowest_5pct_share": {},
    }
    if chosen.empty:
        return out
    by_name = chosen.groupby(["kind", "name"], observed=True)["latency_ms"]
    stats = by_name.agg(["count", "mean"]).join(by_name.quantile(0.95).rename("p95"))
    out["steps"] = {}
    for key, row in stats.iterrows():
        pair: tuple[Any, Any] = key  # type: ignore[assignment]  # grouped by two columns
        kind, name = pair
        out["steps"][str(name)] = {
            "kind": str(kind),
            "count": int(row["count"]),
            "p95_ms": _num(row["p95"]),
            "mean_ms": _num(row["mean"]),
        }
    tools = chosen[chosen["kind"] == "tool"]
    if not tools.empty:
        # Attempts the agent did not report are not "one attempt": unknown retries stay NaN.
        extra = (tools["attempts"].astype(float).clip(lower=1) - 1).rename("retries")
        grouped = pd.DataFrame(
            {"name": tools["name"], "retries": extra, "outcome": tools["outcome"]}
        ).groupby("name", observed=True)
        for name, group in grouped:
            reasons = tools.loc[group.index][extra.loc[group.index] > 0]["error"]
            known = group["retries"].notna().any()
            out["tools"][str(name)] = {
                "calls": len(group),
                "retries": int(group["retries"].sum()) if known else None,
                "retries_per_call": float(group["retries"].mean()) if known else None,
                "outcomes": {
                    str(k): int(v) for k, v in group["outcome"].value_counts().items() if v
                },
                "retry_reasons": {str(k): int(v) for k, v in reasons.value_counts().items() if v},
            }
    retrieval = chosen[chosen["kind"] == "retrieval"]
    if not retrieval.empty:
        out["retrieval"] = {
            "top_k_mean": _num(retrieval["top_k"].mean()),
            "chunk_tokens_mean": _num(retrieval["chunk_tokens"].mean()),
        }
    cached = chosen["cache"].isin(["hit", "miss"])
    # Coverage counts requests, as every other coverage figure does (not their cached steps).
    out["cached_steps"] = int(chosen.loc[cached, "req"].nunique())
    if cached.any():
        out["cache_hit_rate"] = float((chosen.loc[cached, "cache"] == "hit").mean())
    guards = chosen[chosen["kind"] == "guardrail"]
    if not guards.empty:
        blocks = guards[guards["action"] == "block"]["rule"].value_counts()
        redactions = guards[guards["action"] == "redact"]["rule"].value_counts()
        out["guardrails"] = {
            "blocks": {str(k): int(v) for k, v in blocks.items() if v},
            "redactions": {str(k): int(v) for k, v in redactions.items() if v},
        }
    out["slowest_5pct_share"] = slowest_share(chosen, frames.requests, sent_mask, latency)
    _unattributed(frames, sent_mask, latency, out)
    return out


UNATTRIBUTED = "(unattributed)"


def _unattributed(
    frames: RunFrames, sent_mask: np.ndarray, latency: np.ndarray, out: _StepPart
) -> None:
    """Service time no step accounts for, as a step of its own: where the agent's own
    instrumentation is blind."""
    if "unattributed_ms" not in frames.requests:
        return
    values = frames.requests["unattributed_ms"].to_numpy(dtype=float, na_value=np.nan)
    mine = values[sent_mask]
    known = mine[~np.isnan(mine)]
    if not known.size:
        return
    out["steps"][UNATTRIBUTED] = {
        "kind": "unattributed",
        "count": int(known.size),
        "p95_ms": float(np.percentile(known, 95)),
        "mean_ms": float(known.mean()),
    }
    if latency.size and not np.isnan(latency).all():
        slow = latency >= np.nanpercentile(latency, 95)
        total = float(np.nansum(latency[slow]))
        if total > 0:
            share = round(float(np.nansum(mine[slow])) / total, 4)
            out["slowest_5pct_share"][UNATTRIBUTED] = share


def slowest_share(
    steps: pd.DataFrame, requests: pd.DataFrame, sent_mask: np.ndarray, latency: np.ndarray
) -> dict[str, float]:
    """Each step's share of the time of the slowest 5% of requests (by latency)."""
    if latency.size == 0 or np.isnan(latency).all():
        return {}
    threshold = np.nanpercentile(latency, 95)
    positions = np.flatnonzero(sent_mask)
    slow = positions[latency >= threshold]
    total = float(np.nansum(latency[latency >= threshold]))
    if total <= 0:
        return {}
    is_slow = np.zeros(len(requests), dtype=bool)
    is_slow[slow] = True
    chosen = steps.iloc[np.flatnonzero(is_slow[steps["req"].to_numpy()])]
    shares = chosen.groupby("name", observed=True)["latency_ms"].sum() / total
    return {str(k): round(float(v), 4) for k, v in shares.sort_values(ascending=False).items()}


def _num(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def scorecard(frames: RunFrames, seed: int = 0) -> Scorecard:
    requests = frames.requests
    offset = frames.arrays["offset"]
    everything = np.ones(len(requests), dtype=bool)
    groups: dict[str, dict[str, Card]] = {}
    for column in ("workflow", "tenant", "phase"):
        column_values = requests[column]
        codes = pd.Categorical(
            column_values if column_values.dtype == "category" else column_values.astype("string")
        )
        found: dict[str, Card] = {}
        for code, value in enumerate(codes.categories):
            mask = codes.codes == code
            if not mask.any():
                continue
            seconds = frames.duration if column != "phase" else _span(offset[mask])
            found[str(value)] = card(frames, mask, seconds)
        groups[column] = found
    result: Scorecard = {
        "schema": SCHEMA,
        "overall": card(frames, everything, frames.duration),
        "by_workflow": groups["workflow"],
        "by_tenant": groups["tenant"],
        "by_phase": groups["phase"],
        "by_window": {},
    }
    gated_figures(frames, result["overall"], seed)
    warned = trace_warnings(requests)
    if warned["requests"]:
        result["trace_warnings"] = warned
    if frames.notes:
        result["notes"] = list(frames.notes)
    talks = conversation_figures(frames)
    if talks is not None:
        result["conversations"] = talks
    hits = requests["fault_hit"].astype("string") if "fault_hit" in requests else None
    for name, _, _ in frames.windows:
        spans = result["by_window"][name] = {
            when: card(frames, (offset >= lo) & (offset < hi), hi - lo)
            for when, (lo, hi) in window_spans(frames.windows, name, frames.duration).items()
            if hi > lo
        }
        if frames.injected is not None and "during" in spans:
            spans["during"]["faults_injected"] = int((frames.injected["window"] == name).sum())
            if hits is not None:
                met = hits.str.contains(rf"(?:^|,){re.escape(name)}(?:,|$)", regex=True)
                spans["during"]["fault_hits"] = int(met.fillna(False).sum())
        traffic = frames.traffic.get(name)
        if traffic is not None and "during" in spans:
            during = spans["during"]
            # Requests cut short by a stop were sent too: their calls are in the count.
            sent = window_traffic(during["requests"] + during["cancelled"], traffic)
            during["dependency_requests"] = sent["dependency_requests"]
            during["rate_limited"] = sent["rate_limited"]
            during["amplification"] = sent["amplification"]
            result["overall"].setdefault("windows", {})[name] = sent
    return result


def window_traffic(requests: int, traffic: dict[str, Any]) -> WindowTraffic:
    """The dependency's requests per agent request of the window: 5 when every call the agent
    makes is tried five times (a retry storm), about 1 when it backs off or falls back."""
    calls = int(traffic.get("requests") or 0)
    return {
        "requests": requests,
        "dependency_requests": calls,
        "rate_limited": int(traffic.get("rate_limited") or 0),
        "amplification": round(calls / requests, 4) if requests else None,
        "kind": traffic.get("kind"),
    }


def window_spans(
    windows: list[tuple[str, float, float]], name: str, duration: float
) -> dict[str, tuple[float, float]]:
    """A window's own time, and as long a time before and after it, each clipped so that it
    holds no other window: a "before" that runs into the previous window's tail would compare
    the fault with another fault."""
    start, end = next((a, b) for n, a, b in windows if n == name)
    length = end - start
    others = [(a, b) for n, a, b in windows if n != name]
    before_from = max([start - length, 0.0, *(b for a, b in others if a < start)])
    after_to = min([end + length, duration, *(a for a, b in others if b > end)])
    return {
        "before": (min(before_from, start), start),
        "during": (start, end),
        "after": (end, max(after_to, end)),
    }


def trace_warnings(requests: pd.DataFrame, examples: int = 5) -> TraceWarnings:
    """How many requests carried a field that could not be used, and the commonest reasons
    (each warning without its step number, so that the same fault counts as one)."""
    if "trace_warnings" not in requests:
        return {"requests": 0, "examples": []}
    # A request agentscale could not send or judge says why in this column too, but it is no
    # trace field of the agent's: the run's validity names it.
    own = (requests["error_class"] == "agentscale_error").to_numpy(dtype=bool, na_value=False)
    found = requests["trace_warnings"][~own].dropna()
    if found.empty:
        return {"requests": 0, "examples": []}
    reasons = found.astype(str).str.split("; ").explode()
    reasons = reasons.str.replace(r"\[\d+\]", "[i]", regex=True)
    top = reasons.value_counts().head(examples)
    return {
        "requests": len(found),
        "examples": [f"{reason} ({count:,}x)" for reason, count in top.items()],
    }


def _span(offsets: np.ndarray) -> float:
    if offsets.size < 2:
        return 0.0
    return float(offsets.max() - offsets.min())
