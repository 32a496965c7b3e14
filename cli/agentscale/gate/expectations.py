"""A fault profile's resilience expectations, checked per window against the records.

A clause on data the agent never reported (events, a trace status, attempts) is "not
measured", never a pass or a fail on a zero nobody counted."""

from __future__ import annotations

import numpy as np

from agentscale.analysis.figures import Card, Scorecard, figure, reported
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
        in_window = sent & (offsets >= start) & (offsets < end)
        events_known = bool((in_window & ~np.isnan(frames.arrays["circuit_opens"])).any())
        values: list[tuple[str, Comparison | None, float | None, str | None]] = [
            ("success_rate", expectation.success_rate, _get(during, "success_rate"), None),
            (
                "degraded_share", expectation.degraded_share, _get(during, "degraded_share"),
                _missing(during, "degraded_share", "a trace status (ok, degraded, error)"),
            ),
            (
                "retry_amplification", expectation.retry_amplification,
                amplification(before, during),
                _missing(during, "retries_per_tool_call", "attempts on its tool steps"),
            ),
        ]  # fmt: skip
        unstaged = None if during is None or "amplification" in during else STAGE_HINT
        for clause in ("amplification", "rate_limited"):
            values.append((clause, getattr(expectation, clause), _get(during, clause), unstaged))
        for event, event_rule in expectation.events.items():
            count = float(event_count(requests[in_window], event))
            unseen = None if events_known else EVENTS_HINT
            values.append((f"events.{event}", event_rule, count if events_known else None, unseen))
        if expectation.recovery is not None:
            recovered = None
            pre_rate, pre_p95 = _get(before, "success_rate"), _get(before, "latency_p95_ms")
            if pre_rate is not None and pre_p95:
                # Recovery is measured up to the next window, never into it.
                horizon = min(
                    [frames.duration, *(a for n, a, _ in frames.windows if n != name and a >= end)]
                )
                seconds = recovery_time(
                    offsets[sent], latency[sent], success[sent], end, pre_rate, pre_p95, horizon
                )
                # Never recovering within the run is a failure: an infinite recovery time.
                recovered = seconds * 1000 if seconds is not None else float("inf")
            values.append(("recovery_ms", expectation.recovery, recovered, None))
        for metric, rule, value, missing in values:
            if rule is None:
                continue
            check = new_check(
                f"{name}: {metric} {rule}", "expectation", metric, holds(rule, value),
                expected=str(rule), value=value, window=name, optional=expectation.optional,
            )  # fmt: skip
            if missing:
                check["status"], check["detail"] = "not measured", missing
            checks.append(check)
    return checks


STAGE_HINT = (
    "the HTTP stage reported no traffic for this window (it counts at the window's end; a run "
    "stopped before then has no count)"
)
EVENTS_HINT = (
    "the agent reported no events in this window: map them with telemetry.events (JMESPath) "
    "or send them as spans, or mark the expectation optional"
)


def _missing(card: Card | None, name: str, what: str) -> str | None:
    """Why a figure of the window is not measured, if the agent did not report its data."""
    if card is None or reported(card, name):
        return None
    return f"the agent reported no {what} in this window"


def _get(card: Card | None, name: str) -> float | None:
    return figure(card, name) if card is not None else None
