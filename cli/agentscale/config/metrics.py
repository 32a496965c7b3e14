"""The run-level figures the gate compares: defined here once, for the scenario's ``gates:``
schema and for the gate itself."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    higher_is_worse: bool
    absolute: bool  # tolerance in the metric's own units (rates), else relative
    tolerance: float
    floor: float = 0.0  # the least change that counts, in the metric's units
    description: str = ""


METRICS = {
    "latency_p50_ms": Metric(True, False, 0.10, description="p50 latency from the intended start"),
    "latency_p95_ms": Metric(True, False, 0.10, description="p95 latency from the intended start"),
    "latency_p99_ms": Metric(True, False, 0.15, description="p99 latency from the intended start"),
    "success_rate": Metric(False, True, 0.01, description="successes per request sent"),
    "expected_answer_rate": Metric(False, True, 0.01, description="golden answers found"),
    "cost_per_success_usd": Metric(True, False, 0.05, description="all spend over successes"),
    "cost_per_request_usd": Metric(True, False, 0.05, description="spend per request sent"),
    "tool_calls_per_request": Metric(True, False, 0.10, description="mean tool calls"),
    "retries_per_tool_call": Metric(True, False, 0.10, floor=0.05, description="extra attempts"),
    "input_tokens_mean": Metric(True, False, 0.10, description="mean input tokens per request"),
    "output_tokens_mean": Metric(True, False, 0.10, description="mean output tokens per request"),
    "ttft_p95_ms": Metric(
        True, False, 0.10, floor=5.0, description="streamed: p95 time to the first content event"
    ),
    "inter_event_p95_ms": Metric(
        True, False, 0.20, floor=2.0, description="streamed: p95 gap between events"
    ),
}
# Checked by default only when a run streamed (silent, not "not measured", otherwise).
STREAM_METRICS = frozenset({"ttft_p95_ms", "inter_event_p95_ms"})
# Checked whatever the scenario says: speed, quality, cost and the agent's own behaviour.
DEFAULT_CHECKS = (
    "latency_p95_ms",
    "success_rate",
    "expected_answer_rate",
    "cost_per_success_usd",
    "retries_per_tool_call",
    "tool_calls_per_request",
    "input_tokens_mean",
    "ttft_p95_ms",
    "inter_event_p95_ms",
)
# Run-level figures an SLO may name (numbers of ``Card``, analysis/figures.py).
SLO_FIGURES = frozenset({
    "requests", "successes", "success_rate", "expected_answer_rate", "dropped", "cancelled",
    "throughput_rps", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "input_tokens_mean",
    "input_tokens_p95", "output_tokens_mean", "output_tokens_p95", "tool_calls_per_request",
    "tool_calls_p50", "tool_calls_p95", "retries_per_tool_call", "cost_usd",
    "cost_per_request_usd", "cost_per_success_usd", "degraded_share", "circuit_opens",
    "fallbacks", "budget_exhausted", "cache_hit_rate", "ttft_p50_ms", "ttft_p95_ms",
    "ttfb_p95_ms", "inter_event_p50_ms", "inter_event_p95_ms", "inter_event_max_ms",
    "stream_events_mean",
})  # fmt: skip
MIN_REQUESTS = 100
MIN_STEP_CALLS = 50  # a step is checked with this many calls in both runs
MIN_WORKFLOW_REQUESTS = 50  # ... a workflow with this many requests


def bad_direction(metric: str) -> str:
    """The tolerance field that makes sense for ``metric``: max_increase or max_decrease."""
    return "max_increase" if METRICS[metric].higher_is_worse else "max_decrease"
