"""Run-level figures from the records, exactly (no buckets), and the engine's validity checks.

Pure functions over pandas frames; the scorecard builds on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from agentscale.jsondata import JsonObject
from agentscale.records.frames import RunFrames

CONNECTION_ERRORS = {"connection_refused", "connection_reset", "connection_error"}


def percentiles(
    values: pd.Series, points: tuple[int, ...] = (50, 95, 99)
) -> dict[str, float | None]:
    clean = values.dropna().to_numpy(dtype=float)
    if clean.size == 0:
        return {f"p{p}": None for p in points}
    found = np.percentile(clean, points)
    return {f"p{p}": float(v) for p, v in zip(points, found, strict=True)}


def _mean(values: pd.Series) -> float | None:
    clean = values.dropna()
    return float(clean.mean()) if len(clean) else None


@dataclass
class Summary:
    planned: int
    sent: int
    dropped: int
    cancelled: int
    successes: int
    success_rate: float | None
    achieved_rps: float | None
    latency_ms: dict[str, float | None]
    service_ms: dict[str, float | None]
    lag_ms: dict[str, float | None]
    errors: dict[str, int]
    input_tokens_mean: float | None
    output_tokens_mean: float | None
    tool_calls_mean: float | None
    cost_usd: float | None
    cost_per_success_usd: float | None
    with_trace: int
    arrivals: int | None = None  # conversations: sessions begun (the unit of the drop share)
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> JsonObject:
        found: JsonObject = dict(self.__dict__)
        return found


def summarize(frames: RunFrames, load_seconds: float, planned: int | None = None) -> Summary:
    requests, a = frames.requests, frames.arrays
    sent = requests[frames.sent]
    successes = int(sent["success"].fillna(False).sum())
    errors = {k: v for k, v in sent["error_class"].dropna().value_counts().items() if v}
    cost = sent["cost_usd"]
    # Cost per success is all spend divided by successes; an unpriced request makes it unknown.
    known_cost = len(sent) > 0 and not cost.isna().any()
    total_cost = float(cost.sum()) if known_cost else None
    return Summary(
        planned=int(planned if planned is not None else len(requests)),
        sent=len(sent),
        dropped=int(a["dropped"].sum()),
        cancelled=int(a["cancelled"].sum()),
        successes=successes,
        success_rate=successes / len(sent) if len(sent) else None,
        achieved_rps=len(sent) / load_seconds if load_seconds > 0 else None,
        latency_ms=percentiles(sent["latency_ms"]),
        service_ms=percentiles(sent["service_ms"]),
        lag_ms=percentiles(sent["lag_ms"], (50, 99)),
        errors={str(k): int(v) for k, v in errors.items()},
        input_tokens_mean=_mean(sent["input_tokens"]),
        output_tokens_mean=_mean(sent["output_tokens"]),
        tool_calls_mean=_mean(sent["tool_calls"]),
        cost_usd=total_cost,
        cost_per_success_usd=(total_cost / successes)
        if total_cost is not None and successes
        else None,
        with_trace=int((sent["steps"] > 0).sum()),
        arrivals=_sessions(requests),
    )


def _sessions(requests: pd.DataFrame) -> int | None:
    """Sessions begun, dropped ones included (each has a row for its first turn)."""
    if "turn" not in requests or not requests["turn"].notna().any():
        return None
    return int((requests["turn"] == 1).sum())


def validity_problems(
    summary: Summary, *, model: str, max_dropped: float, max_lag_ms: float
) -> list[str]:
    """Why the run cannot be trusted as a measurement (empty when it can)."""
    problems = []
    if summary.sent == 0:
        problems.append(
            f"no request completed: {summary.cancelled} were still in flight when the run"
            " stopped (cancelled)"
            if summary.cancelled
            else "no request was sent"
        )
        return problems
    unreachable = sum(summary.errors.get(name, 0) for name in CONNECTION_ERRORS)
    if unreachable == summary.sent:
        problems.append("every request failed to connect: the target is unreachable")
    offered = summary.arrivals if summary.arrivals is not None else summary.sent + summary.dropped
    what = "sessions" if summary.arrivals is not None else "arrivals"
    if offered and summary.dropped / offered > max_dropped:
        problems.append(
            f"{summary.dropped} of {offered} {what} dropped ({summary.dropped / offered:.1%}),"
            f" above max_dropped {max_dropped:.1%}: raise load.max_concurrency or lower the rate"
        )
    lag_p99 = summary.lag_ms.get("p99")
    if model == "open" and lag_p99 is not None and not math.isnan(lag_p99) and lag_p99 > max_lag_ms:
        problems.append(
            f"the load generator fell behind: scheduling lag p99 {lag_p99:.0f} ms"
            f" > {max_lag_ms:.0f} ms; lower the rate or raise load.max_lag_ms"
        )
    return problems
