"""A fault profile's resilience expectations, checked per window against the records."""

from __future__ import annotations

from agentscale.analysis.figures import Card, Scorecard, figure
from agentscale.analysis.resilience import amplification, event_count, recovery_time
from agentscale.config.faults import Expectation
from agentscale.config.units import Comparison
from agentscale.gate.checks import Check, holds, new_check
from agentscale.records.frames import RunFrames


def evaluate(expectations: list[Expectation], frames: RunFrames, card: Scorecard) -> list[Check]:
    """One check per expectation clause: pass, failed, or inconclusive (nothing to judge)."""
    requests = frames.requests
    sent, offsets = frames.sent, frames.arrays["offset"]
    latency, success = frames.arrays["latency_ms"], frames.arrays["success"]
    windows = {name: (start, end) for name, start, end in frames.windows}
    checks: list[Check] = []
    for expectation in expectations:
        name = expectation.window
        spans = card["by_window"].get(name, {})
        during, before = spans.get("during"), spans.get("before")
        start, end = windows.get(name, (0.0, 0.0))
        values: list[tuple[str, Comparison | None, float | None]] = [
            ("success_rate", expectation.success_rate, _get(during, "success_rate")),
            ("degraded_share", expectation.degraded_share, _get(during, "degraded_share")),
            ("retry_amplification", expectation.retry_amplification, amplification(before, during)),
        ]
        in_window = sent & (offsets >= start) & (offsets < end)
        for event, event_rule in expectation.events.items():
            count = float(event_count(requests[in_window], event))
            values.append((f"events.{event}", event_rule, count))
        if expectation.recovery is not None:
            recovered = None
            pre_rate, pre_p95 = _get(before, "success_rate"), _get(before, "latency_p95_ms")
            if pre_rate is not None and pre_p95:
                seconds = recovery_time(
                    offsets[sent], latency[sent], success[sent], end, pre_rate, pre_p95,
                    frames.duration,
                )  # fmt: skip
                # Never recovering within the run is a failure: an infinite recovery time.
                recovered = seconds * 1000 if seconds is not None else float("inf")
            values.append(("recovery_ms", expectation.recovery, recovered))
        for metric, rule, value in values:
            if rule is None:
                continue
            checks.append(
                new_check(
                    f"{name}: {metric} {rule}", "expectation", metric, holds(rule, value),
                    expected=str(rule), value=value, window=name,
                )
            )  # fmt: skip
    return checks


def _get(card: Card | None, name: str) -> float | None:
    return figure(card, name) if card is not None else None
