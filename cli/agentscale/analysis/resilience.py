"""What a fault window did to the traffic: recovery time, retry amplification, event counts."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd

from agentscale.analysis.figures import Card

EVENT_COLUMNS = {
    "circuit_open": "circuit_opens",
    "fallback": "fallbacks",
    "budget_exhausted": "budget_exhausted",
}


def recovery_time(
    offsets: np.ndarray,
    latency: np.ndarray,
    success: np.ndarray,
    window_end: float,
    pre_success: float,
    pre_p95: float,
    horizon: float,
    *,
    span: float = 5.0,
    step: float = 0.5,
    success_slack: float = 0.02,
    latency_factor: float = 1.2,
    latency_slack_ms: float = 50.0,
    min_requests: int = 5,
) -> float | None:
    """Seconds from the window's end until a ``span``-long stretch of traffic is back within
    tolerance of the pre-window level: success rate within ``success_slack`` and p95 within
    ``latency_factor`` (plus ``latency_slack_ms``). None if it never is before ``horizon``."""
    start = window_end
    while start + span <= horizon + 1e-9:
        chosen = (offsets >= start) & (offsets < start + span)
        if chosen.sum() >= min_requests:
            rate = float(success[chosen].mean())
            p95 = float(np.nanpercentile(latency[chosen], 95))
            if rate >= pre_success - success_slack and (
                p95 <= pre_p95 * latency_factor + latency_slack_ms
            ):
                return round(start - window_end, 3)
        start += step
    return None


def event_count(requests: pd.DataFrame, event: str) -> int:
    """How many ``event`` events the agent reported in ``requests``."""
    column = EVENT_COLUMNS.get(event)
    if column is not None:
        return int(requests[column].sum())
    total = 0
    for text in requests["agent_events"].dropna():
        total += sum(1 for e in orjson.loads(text) if e.get("type") == event)
    return total


def amplification(before: Card | None, during: Card | None) -> float | None:
    """Tool attempts per request during the window over the same before it."""

    def attempts(card: Card | None) -> float | None:
        if card is None:
            return None
        calls, retries = card["tool_calls_per_request"], card["retries_per_tool_call"]
        if calls is None:
            return None
        return float(calls) * (1 + float(retries or 0))

    pre, now = attempts(before), attempts(during)
    return float(now / pre) if pre and now is not None else None
