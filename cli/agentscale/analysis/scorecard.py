"""The bottleneck scorecard: pure functions over the run's frames (see docs/architecture.md).

Steps are tied to their request by position once (``attach_steps``), so that every group
(workflow, tenant, phase, fault window) selects its steps with one boolean take.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
from agentscale.analysis.gated import GateFigures, gated_figures
from agentscale.analysis.known import mean as _mean
from agentscale.analysis.known import quantile as _q
from agentscale.analysis.known import quantiles as _qs
from agentscale.analysis.known import total as _total
from agentscale.records.frames import RunFrames, StepArrays

SCHEMA = "agentscale/scorecard/v1"


def card(frames: RunFrames, mask: np.ndarray, seconds: float) -> Card:
    """Every scorecard figure for the requests selected by ``mask``."""
    a = frames.arrays
    sent_mask = mask & frames.sent
    take = _taker(_positions(sent_mask))
    n = int(sent_mask.sum())
    success = take(a["success"])
    successes = int(success.sum())
    latency, service = take(a["latency_ms"]), take(a["service_ms"])
    tokens_in, tokens_out = take(a["input_tokens"]), take(a["output_tokens"])
    tool_calls, retries = take(a["tool_calls"]), take(a["retries"])
    cost = take(a["cost_usd"])
    expect = take(a["expect"])
    spend = float(cost.sum()) if n and not np.isnan(cost).any() else None
    attempts_known = ~np.isnan(retries)
    calls = float(np.nansum(tool_calls[attempts_known]))
    status_known = take(a["status_known"])
    events = {name: take(a[name]) for name in ("circuit_opens", "fallbacks", "budget_exhausted")}
    events_known = ~np.isnan(events["circuit_opens"])
    counts = np.bincount(take(a["error_code"]) + 1, minlength=len(frames.error_classes or []) + 1)
    errors = dict(zip(frames.error_classes or [], counts[1:].tolist(), strict=True))
    steps = _step_figures(frames, sent_mask, latency)
    ttft = take(a["ttft_ms"])
    streamed = int((~np.isnan(take(a["ttfb_ms"]))).sum())
    gaps = _gaps(frames, sent_mask)
    lat = _percentiles(latency)
    ttft_p50, ttft_p95 = _qs(ttft, (50, 95))
    calls_p50, calls_p95 = _qs(tool_calls, (50, 95))
    gap_p50, gap_p95 = _qs(gaps, (50, 95))
    figures: Card = {
        "requests": n,
        "successes": successes,
        "success_rate": successes / n if n else None,
        "expected_answer_rate": _mean(expect),
        "errors": {str(k): int(v) for k, v in errors.items() if v},
        "dropped": int((mask & a["dropped"]).sum()),
        "cancelled": int((mask & a["cancelled"]).sum()),
        "throughput_rps": n / seconds if seconds > 0 else None,
        "latency_ms": lat,
        "service_ms": _percentiles(service),
        "latency_p50_ms": lat["p50"],
        "latency_p95_ms": lat["p95"],
        "latency_p99_ms": lat["p99"],
        "input_tokens_mean": _mean(tokens_in),
        "input_tokens_p95": _q(tokens_in, 95),
        "output_tokens_mean": _mean(tokens_out),
        "output_tokens_p95": _q(tokens_out, 95),
        "tool_calls_per_request": _mean(tool_calls),
        "tool_calls_p50": calls_p50,
        "tool_calls_p95": calls_p95,
        "retries_per_tool_call": float(np.nansum(retries)) / calls if calls else None,
        "cost_usd": spend,
        "cost_per_request_usd": spend / n if spend is not None and n else None,
        # All spend divided by successes: failed requests cost money too.
        "cost_per_success_usd": spend / successes if spend is not None and successes else None,
        "degraded_share": (
            float(take(a["degraded"])[status_known].mean()) if status_known.any() else None
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
        "ttft_p50_ms": ttft_p50,
        "ttft_p95_ms": ttft_p95,
        "ttfb_p95_ms": _q(take(a["ttfb_ms"]), 95),
        "inter_event_p50_ms": gap_p50,
        "inter_event_p95_ms": gap_p95,
        "inter_event_max_ms": float(gaps.max()) if gaps.size else None,
        "stream_events_mean": _mean(take(a["stream_events"])),
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


def _positions(mask: np.ndarray) -> np.ndarray | None:
    """The positions ``mask`` holds, ascending; None when it holds every row."""
    return None if mask.all() else np.flatnonzero(mask)


def _taker(chosen: np.ndarray | None) -> Callable[[np.ndarray], np.ndarray]:
    """A function that selects the rows at ``chosen`` (None: all) from an array. A random
    boolean mask over millions of rows is slow to apply (a branch per row); its positions,
    found once, are taken from each array several times faster."""
    if chosen is None:
        return lambda values: values
    return lambda values: values.take(chosen)


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
    p50, p95, p99 = _qs(values, (50, 95, 99))
    return {"p50": p50, "p95": p95, "p99": p99}


def _step_figures(frames: RunFrames, sent_mask: np.ndarray, latency: np.ndarray) -> _StepPart:
    """The per-step figures of the requests ``sent_mask`` selects, on the steps' arrays: one
    pass over the rows in (kind, name) order, never a copy of the steps frame per group."""
    out: _StepPart = {
        "cached_steps": 0,
        "steps": {},
        "tools": {},
        "retrieval": None,
        "guardrails": None,
        "cache_hit_rate": None,
        "slowest_5pct_share": {},
    }
    s = frames.step_arrays
    if not s.req.size:
        return out
    # Everything below reads the steps in (kind, name) order: a group is a contiguous run.
    positions = _positions(sent_mask[s.in_order("req")])
    pick = _taker(positions)
    rows, lat = pick(s.order), pick(s.in_order("latency"))
    if not rows.size:
        return out
    # Where each (kind, name) pair's run starts: the chosen rows' positions in the order are
    # ascending, so a binary search maps the whole order's bounds to theirs.
    bounds = s.pair_bounds if positions is None else np.searchsorted(positions, s.pair_bounds)
    names = max(len(s.names_of("name")), 1)
    kinds = s.names_of("kind")
    tool, retrieval = s.code("kind", "tool"), s.code("kind", "retrieval")
    guardrail = s.code("kind", "guardrail")
    found: list[np.ndarray] = []
    guards: list[np.ndarray] = []
    # bounds[0]: the steps without a kind or a name, which sort first and count in no group.
    for pair, (low, high) in enumerate(itertools.pairwise(bounds[1:].tolist())):
        if low == high:
            continue
        kind_code, name_code = divmod(pair, names)
        name = s.categories["name"][name_code]
        values = lat[low:high]
        known = values[~np.isnan(values)]
        out["steps"][name] = {
            "kind": kinds[kind_code],
            "count": int(known.size),
            "p95_ms": float(np.percentile(known, 95)) if known.size else None,
            "mean_ms": float(known.mean()) if known.size else None,
        }
        if kind_code == tool:
            out["tools"][name] = _tool(s, rows[low:high])
        elif kind_code == retrieval:
            found.append(rows[low:high])
        elif kind_code == guardrail:
            guards.append(rows[low:high])
    if found:
        retrieved = np.concatenate(found)
        out["retrieval"] = {
            "top_k_mean": _nanmean(s.top_k[retrieved].astype(float)),
            "chunk_tokens_mean": _nanmean(s.subset("chunk_tokens", retrieved)),
        }
    cache = pick(s.in_order("cache"))
    hit, miss = s.code("cache", "hit"), s.code("cache", "miss")
    cached = (cache == hit) | (cache == miss)
    if cached.any():
        # Coverage counts requests, as every other coverage figure does (not their steps).
        seen = np.zeros(len(frames.requests), dtype=bool)
        seen[pick(s.in_order("req"))[cached]] = True
        out["cached_steps"] = int(seen.sum())
        out["cache_hit_rate"] = float((cache[cached] == hit).mean())
    if guards:
        guarded = np.concatenate(guards)
        action = s.code_of("action")[guarded]
        rule = s.code_of("rule")[guarded]
        out["guardrails"] = {
            "blocks": _counts(rule[action == s.code("action", "block")], s, "rule"),
            "redactions": _counts(rule[action == s.code("action", "redact")], s, "rule"),
        }
    out["slowest_5pct_share"] = _slowest(s, rows, len(frames.requests), sent_mask, latency)
    _unattributed(frames, sent_mask, latency, out)
    return out


def _tool(s: StepArrays, rows: np.ndarray) -> ToolFigures:
    # Attempts the agent did not report are not "one attempt": unknown retries stay NaN.
    extra = np.clip(s.attempts[rows].astype(float), 1, None) - 1
    known = ~np.isnan(extra)
    retried = rows[known & (extra > 0)]
    return {
        "calls": int(rows.size),
        "retries": int(extra[known].sum()) if known.any() else None,
        "retries_per_call": float(extra[known].mean()) if known.any() else None,
        "outcomes": _counts(s.code_of("outcome")[rows], s, "outcome"),
        "retry_reasons": _counts(s.code_of("error")[retried], s, "error"),
    }


def _counts(codes: np.ndarray, s: StepArrays, column: str) -> dict[str, int]:
    """How often each value occurs (nulls left out), most frequent first."""
    counts = np.bincount(codes[codes >= 0], minlength=len(s.names_of(column)))
    order = sorted((-int(n), code) for code, n in enumerate(counts) if n)
    return {s.categories[column][code]: -n for n, code in order}


def _nanmean(values: np.ndarray) -> float | None:
    known = values[~np.isnan(values)]
    return float(known.mean()) if known.size else None


UNATTRIBUTED = "(unattributed)"


def _unattributed(
    frames: RunFrames, sent_mask: np.ndarray, latency: np.ndarray, out: _StepPart
) -> None:
    """Service time no step accounts for, as a step of its own: where the agent's own
    instrumentation is blind."""
    if "unattributed_ms" not in frames.requests:
        return
    mine = frames.arrays["unattributed_ms"][sent_mask]
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
    return _slowest(StepArrays(steps), np.arange(len(steps)), len(requests), sent_mask, latency)


def _slowest(
    s: StepArrays, rows: np.ndarray, requests: int, sent_mask: np.ndarray, latency: np.ndarray
) -> dict[str, float]:
    """``slowest_share`` on the steps' arrays; ``rows``: the steps of the requests
    ``sent_mask`` selects, whose latencies are ``latency``."""
    if latency.size == 0 or np.isnan(latency).all():
        return {}
    threshold = np.nanpercentile(latency, 95)
    slow_latency = latency >= threshold
    total = float(np.nansum(latency[slow_latency]))
    if total <= 0:
        return {}
    is_slow = np.zeros(requests, dtype=bool)
    is_slow[np.flatnonzero(sent_mask)[slow_latency]] = True
    mine = rows[is_slow[s.req[rows]]]
    names = s.code_of("name")[mine]
    named = names >= 0
    weights = np.nan_to_num(s.latency[mine][named])
    count = len(s.names_of("name"))
    sums = np.bincount(names[named], weights=weights, minlength=count)
    present = np.bincount(names[named], minlength=count) > 0
    shares = [(round(float(sums[c]) / total, 4), c) for c in np.flatnonzero(present)]
    shares.sort(key=lambda item: -item[0])
    return {s.categories["name"][int(c)]: share for share, c in shares}


def _unknown_cost(frames: RunFrames) -> list[str]:
    """Why the run's spend is unknown, when some requests reported theirs and others not: one
    answer without usage (an error page, a timeout) leaves the total, and cost per success,
    unknown, never a sum that took it for $0."""
    a = frames.arrays
    cost, sent = a["cost_usd"], frames.sent
    unknown = sent & np.isnan(cost)
    missing, priced = int(unknown.sum()), int((sent & ~np.isnan(cost)).sum())
    if not missing or not priced:
        return []  # all known, or none: "not reported" says it
    tokens = ~np.isnan(a["input_tokens"]) | ~np.isnan(a["output_tokens"])
    unpriced = int((unknown & tokens).sum())
    classes = frames.requests["error_class"].to_numpy(dtype=object)[unknown & ~tokens]
    named = pd.Series(classes).fillna("no error").value_counts()
    why = ", ".join(f"{n:,} {name}" for name, n in named.items())
    parts = [f"{missing - unpriced:,} reported no usage ({why})"] if missing > unpriced else []
    if unpriced:
        parts.append(f"{unpriced:,} used a model without a price")
    return [
        f"cost unknown: {missing:,} of {missing + priced:,} requests have no cost: "
        + "; ".join(parts)
        + ". Their spend is not known, so neither is the run's, nor cost per success"
    ]


def _num(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def scorecard(frames: RunFrames, seed: int = 0) -> Scorecard:
    requests = frames.requests
    offset = frames.arrays["offset"]
    # Every card first, as (group, value) -> (mask, seconds): they are independent, and
    # numpy lets go of the interpreter lock in the long passes (take, partition, bincount),
    # so the cards of a million-request run share the machine's cores.
    jobs: dict[tuple[str, str], tuple[np.ndarray, float]] = {
        ("overall", ""): (np.ones(len(requests), dtype=bool), frames.duration)
    }
    for column in ("workflow", "tenant", "phase"):
        column_values = requests[column]
        codes = pd.Categorical(
            column_values if column_values.dtype == "category" else column_values.astype("string")
        )
        for code, value in enumerate(codes.categories):
            mask = codes.codes == code
            if mask.any():
                seconds = frames.duration if column != "phase" else _span(offset[mask])
                jobs[(column, str(value))] = (mask, seconds)
    for name, _, _ in frames.windows:
        for when, (lo, hi) in window_spans(frames.windows, name, frames.duration).items():
            if hi > lo:
                jobs[(f"window {name}", when)] = ((offset >= lo) & (offset < hi), hi - lo)
    cards, gated = _cards(frames, jobs, seed)
    groups: dict[str, dict[str, Card]] = {"workflow": {}, "tenant": {}, "phase": {}}
    for (column, value), found in cards.items():
        if column in groups:
            groups[column][value] = found
    result: Scorecard = {
        "schema": SCHEMA,
        "overall": cards[("overall", "")],
        "by_workflow": groups["workflow"],
        "by_tenant": groups["tenant"],
        "by_phase": groups["phase"],
        "by_window": {},
    }
    result["overall"]["gated"] = gated["gated"]
    result["overall"]["bootstrap"] = gated["bootstrap"]
    result["overall"]["block_s"] = gated["block_s"]
    warned = trace_warnings(requests)
    if warned["requests"]:
        result["trace_warnings"] = warned
    notes = [*frames.notes, *_unknown_cost(frames)]
    if notes:
        result["notes"] = notes
    talks = conversation_figures(frames)
    if talks is not None:
        result["conversations"] = talks
    hits = requests["fault_hit"].astype("string") if "fault_hit" in requests else None
    for name, _, _ in frames.windows:
        spans = result["by_window"][name] = {
            when: found for (column, when), found in cards.items() if column == f"window {name}"
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


def _cards(
    frames: RunFrames, jobs: dict[tuple[str, str], tuple[np.ndarray, float]], seed: int
) -> tuple[dict[tuple[str, str], Card], GateFigures]:
    """Each job's card, and the gate's figures, on as many threads as there are cores (never
    more: each card holds temporaries of the steps' size). This thread computes the gate's
    figures first, as the only one that changes the warning filters (which are global),
    then takes cards with the others."""
    _warm(frames)
    pending = iter(jobs.items())
    lock = threading.Lock()

    def drain() -> dict[tuple[str, str], Card]:
        done: dict[tuple[str, str], Card] = {}
        while True:
            with lock:
                job = next(pending, None)
            if job is None:
                return done
            key, (mask, seconds) = job
            done[key] = card(frames, mask, seconds)

    others = max(_cores() - 1, 1)
    with ThreadPoolExecutor(others, thread_name_prefix="scorecard") as pool:
        helpers = [pool.submit(drain) for _ in range(others)]
        gated = gated_figures(frames, seed)
        found = drain()
        for helper in helpers:
            found.update(helper.result())
    return {key: found[key] for key in jobs}, gated


def _warm(frames: RunFrames) -> None:
    """Make the arrays that every card reads and caches on first use, before the cards run
    side by side (so that none is made twice, or raced for)."""
    frames.arrays  # noqa: B018
    s = frames.step_arrays
    for column in ("kind", "name", "outcome", "error", "cache", "action", "rule"):
        s.code_of(column)
    if s.req.size:
        for name in ("req", "latency", "cache"):
            s.in_order(name)
        s.attempts  # noqa: B018
        s.top_k  # noqa: B018


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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
