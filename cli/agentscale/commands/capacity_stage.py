"""A capacity search's parts: its options, each stage as run and judged, what the search did."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agentscale.analysis import capacity as search
from agentscale.analysis.figures import Card
from agentscale.commands.execute import LoadOptions


@dataclass(frozen=True)
class CapacityOptions:
    load: LoadOptions  # out, seed, faults, toxiproxy, workers, remote hosts
    slos: list[search.Slo]
    start: float = 2.0  # requests/s
    maximum: float = 500.0
    stage: float = 30.0  # seconds, at least
    min_requests: int = 100  # arrivals per stage, at least (a slow stage runs longer)
    precision: float = 0.05  # bisection stops when first bad / last good <= 1 + precision
    peak: float | None = None
    headroom: float = 0.3
    baseline: Path | None = None
    tolerance: float = 0.10  # a sustainable rate this much below the baseline's regressed
    force: bool = False


@dataclass
class Stage:
    """One stage as it was run and judged."""

    index: int
    rate: float
    seconds: float
    started_at: float | None = None
    planned: int = 0
    # The engine's samples while loading: (seconds into the stage, requests in flight).
    in_flight: list[tuple[float, float]] = field(default_factory=list)
    card: Card | None = None
    outcome: search.StageOutcome | None = None
    trend: search.Trend | None = None
    mean_service_ms: float | None = None  # for Little's law: rate x mean time in the target
    achieved: float | None = None  # arrivals (sessions, for conversations) sent per second
    interrupted: bool = False
    sessions: bool = False  # a rate of conversations, each of several requests

    @property
    def littles_law(self) -> str | None:
        """Requests in flight against rate x latency; not for conversations, whose in-flight
        requests are turns of sessions that also think between them."""
        if self.sessions or self.card is None:
            return None
        return search.littles_law(self.steady_in_flight(), self.card["throughput_rps"] or 0.0,
                                  self.mean_service_ms)  # fmt: skip

    def steady_in_flight(self) -> float | None:
        """The mean in-flight count once the stage has filled: for its first p99 of time in
        the target the early requests are still out and the later ones not yet sent, so
        counting those samples reads low (2 s requests in a 10 s stage: 7.5%)."""
        if self.card is None:
            return None
        service = self.card["service_ms"]
        fill = (service["p99"] or self.mean_service_ms or 0.0) / 1000
        steady = [count for at, count in self.in_flight if at >= fill]
        return float(np.mean(steady)) if steady else None

    @property
    def result(self) -> str:
        assert self.outcome is not None
        if self.interrupted:
            return "interrupted"
        if self.outcome.invalid:
            return "invalid"
        return "pass" if self.outcome.passed else "fail"

    def as_json(self) -> dict[str, Any]:
        assert self.outcome is not None and self.card is not None
        c = self.card
        in_flight = self.steady_in_flight()
        rate = c.get("throughput_rps")
        found: dict[str, Any] = search.as_json({
            "stage": self.index,
            "offered_rps": self.rate,
            "seconds": self.seconds,
            "planned": self.planned,
            "requests": c.get("requests"),
            "achieved_rps": self.achieved,
            "dropped": c.get("dropped"),
            "success_rate": c.get("success_rate"),
            "latency_p50_ms": c.get("latency_p50_ms"),
            "latency_p95_ms": c.get("latency_p95_ms"),
            "latency_p99_ms": c.get("latency_p99_ms"),
            "trend_p50_ms": list(self.trend.p50_ms) if self.trend else None,
            "in_flight_mean": in_flight,
            "littles_in_flight": (
                rate * self.mean_service_ms / 1000
                if rate is not None and self.mean_service_ms is not None and not self.sessions
                else None
            ),
            "result": self.result,
            "reasons": (["stopped by a signal"] if self.interrupted
                        else self.outcome.invalid + self.outcome.failures),
        })  # fmt: skip
        return found


def settings(options: CapacityOptions, unit: str = "requests/s") -> dict[str, Any]:
    return {
        "unit": unit,
        "slo": [str(s) for s in options.slos],
        "start_rps": options.start,
        "max_rps": options.maximum,
        "stage_s": options.stage,
        "min_requests": options.min_requests,
        "precision": options.precision,
        "peak_rps": options.peak,
        "headroom": options.headroom,
        "workers": options.load.workers,
        "seed": options.load.seed,
        "faults": str(options.load.faults) if options.load.faults else None,
    }


@dataclass
class Searched:
    """What the search did: its stages, why it could not go on (empty when it ended as
    planned or was interrupted: the last stage says so), and what the run's spans and injected
    faults need to be joined (each dependency's kind and address)."""

    stages: list[Stage]
    invalid: list[str]
    kinds: dict[str, str]
    addresses: dict[str, str]
    scenario: Any  # the Scenario searched
    rate_limited: set[str]  # dependencies under a rate-limit window of the profile


def unit_of(scenario: Any) -> str:
    """What a stage's rate counts: requests, or conversations (``workload.sessions``)."""
    return "sessions/s" if scenario.workload.sessions is not None else "requests/s"
