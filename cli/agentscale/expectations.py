"""Resilience expectations of a fault profile, checked per window against the records."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from agentscale.chaos.profile import Expectation
from agentscale.scorecard import RunFrames
from agentscale.units import Comparison

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


def evaluate(
    expectations: list[Expectation], frames: RunFrames, card: dict[str, Any]
) -> list[dict[str, Any]]:
    """One check per expectation clause: pass, failed, or inconclusive (nothing to judge)."""
    requests = frames.requests
    sent = ~requests["dropped"].to_numpy(dtype=bool) & (requests["error_class"] != "cancelled")
    sent = np.asarray(sent, dtype=bool)
    offsets = requests["intended_start"].astype("int64").to_numpy() / 1e6 - frames.started_at
    latency = requests["latency_ms"].to_numpy(dtype=float, na_value=np.nan)
    success = requests["success"].to_numpy(dtype=bool)
    windows = {name: (start, end) for name, start, end in frames.windows}
    checks: list[dict[str, Any]] = []
    for expectation in expectations:
        name = expectation.window
        spans = card.get("by_window", {}).get(name, {})
        during, before = spans.get("during", {}), spans.get("before", {})
        start, end = windows.get(name, (0.0, 0.0))
        values: list[tuple[str, Comparison | None, float | None]] = [
            ("success_rate", expectation.success_rate, during.get("success_rate")),
            ("degraded_share", expectation.degraded_share, during.get("degraded_share")),
            (
                "retry_amplification",
                expectation.retry_amplification,
                _amplification(before, during),
            ),
        ]
        in_window = sent & (offsets >= start) & (offsets < end)
        for event, event_rule in expectation.events.items():
            count = float(_count(requests[in_window], event))
            values.append((f"events.{event}", event_rule, count))
        if expectation.recovery is not None:
            recovered = None
            if before.get("success_rate") is not None and before.get("latency_p95_ms"):
                seconds = recovery_time(
                    offsets[sent],
                    latency[sent],
                    success[sent],
                    end,
                    before["success_rate"],
                    before["latency_p95_ms"],
                    frames.duration,
                )
                # Never recovering within the run is a failure: an infinite recovery time.
                recovered = seconds * 1000 if seconds is not None else float("inf")
            values.append(("recovery_ms", expectation.recovery, recovered))
        for metric, rule, value in values:
            if rule is None:
                continue
            status = (
                "inconclusive" if value is None else ("pass" if rule.holds(value) else "failed")
            )
            checks.append(
                {
                    "name": f"{name}: {metric} {rule}",
                    "kind": "expectation",
                    "window": name,
                    "metric": metric,
                    "expected": str(rule),
                    "value": value,
                    "status": status,
                }
            )
    return checks


def _count(requests: Any, event: str) -> int:
    column = EVENT_COLUMNS.get(event)
    if column is not None:
        return int(requests[column].sum())
    total = 0
    for text in requests["agent_events"].dropna():
        total += sum(1 for e in orjson.loads(text) if e.get("type") == event)
    return total


def _amplification(before: dict[str, Any], during: dict[str, Any]) -> float | None:
    """Tool attempts per request during the window over the same before it."""

    def attempts(card: dict[str, Any]) -> float | None:
        calls, retries = card.get("tool_calls_per_request"), card.get("retries_per_tool_call")
        if calls is None:
            return None
        return float(calls) * (1 + float(retries or 0))

    pre, now = attempts(before), attempts(during)
    return float(now / pre) if pre and now is not None else None
