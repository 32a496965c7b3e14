"""How much each gated figure may get worse: the run-level metrics (``gates.<metric>``), and
per step and per workflow (``gates.steps`` and ``gates.workflows``, by name or ``default``)."""

from __future__ import annotations

from typing import Any

from agentscale.analysis.figures import GatedFigure
from agentscale.config.metrics import DEFAULT_CHECKS, METRICS, Metric, bad_direction
from agentscale.config.scenario import Gates

# Built in, when neither the step's (workflow's) own entry nor ``default`` sets a field.
STEP_DEFAULTS = {
    "max_increase": 0.20,  # p95 of a step: relative
    "min_change_ms": 1.0,  # ... and never below this (sub-ms steps move 20% on a hiccup)
    "max_error_rate_increase": 0.02,  # tool steps: failed calls per call, absolute
    "max_attempts_increase": 0.10,  # tool steps: attempts per call, relative
    "max_tokens_increase": 0.10,  # LLM steps: tokens per call, relative
}
WORKFLOW_DEFAULTS = {
    "max_increase": 0.20,  # p95 of the workflow's requests, relative
    "max_success_decrease": 0.02,  # absolute
    "max_cost_increase": 0.10,  # cost per success, relative
}
LATENCY_FLOOR_MS = 5.0


def tolerances(gates: Gates | None) -> dict[str, Metric]:
    """The run-level metrics checked, each with its tolerance."""
    chosen = {name: METRICS[name] for name in DEFAULT_CHECKS}
    if gates is None:
        return chosen
    for name in METRICS:
        change = getattr(gates, name, None)
        if change is None:
            continue
        base = METRICS[name]
        limit = getattr(change, bad_direction(name))  # the loader checked it is the one given
        if limit is not None:
            chosen[name] = Metric(base.higher_is_worse, base.absolute, limit, base.floor)
    return chosen


def set_by(gates: Gates | None) -> frozenset[str]:
    """The metrics the scenario gave a tolerance of its own."""
    return frozenset(name for name in METRICS if getattr(gates, name, None) is not None)


def _setting(entries: dict[str, Any], group: str, field: str, built_in: dict[str, float]) -> float:
    for key in (group, "default"):
        entry = entries.get(key)
        value = getattr(entry, field, None) if entry is not None else None
        if value is not None:
            return float(value)
    return built_in[field]


def group_metric(gated: GatedFigure, gates: Gates | None) -> Metric:
    """The tolerance of one step or workflow figure."""
    group, figure = gated["group"], gated["figure"]
    if gated["scope"] == "step":
        steps: dict[str, Any] = dict(gates.steps) if gates else {}

        def step(field: str) -> float:
            return _setting(steps, group, field, STEP_DEFAULTS)

        if figure == "p95_ms":
            return Metric(True, False, step("max_increase"), step("min_change_ms"))
        if figure == "error_rate":
            return Metric(True, True, step("max_error_rate_increase"))
        if figure == "attempts_per_call":
            return Metric(True, False, step("max_attempts_increase"), 0.02)
        return Metric(True, False, step("max_tokens_increase"), 1.0)  # tokens_per_call
    flows: dict[str, Any] = dict(gates.workflows) if gates else {}

    def flow(field: str) -> float:
        return _setting(flows, group, field, WORKFLOW_DEFAULTS)

    if figure == "success_rate":
        return Metric(False, True, flow("max_success_decrease"))
    if figure == "latency_p95_ms":
        return Metric(True, False, flow("max_increase"), LATENCY_FLOOR_MS)
    return Metric(True, False, flow("max_cost_increase"))  # cost_per_success_usd


def describe(metric: Metric) -> str:
    word = "increase" if metric.higher_is_worse else "decrease"
    amount = f"{metric.tolerance:g}" if metric.absolute else f"{metric.tolerance:.0%}"
    return f"max {word} {amount}" + (f" (at least {metric.floor:g})" if metric.floor else "")
