"""The capacity search, pure: which rate to try next, whether a stage held, where the knee is,
which step gave way first, and how many replicas a peak needs.

A stage is one constant open-model rate for a stretch of time. It holds when every SLO holds,
no more than ``DROP_LIMIT`` of its arrivals were dropped, and its latency did not keep rising
through it (a queue building up: the rate is above what the target drains, even if the
stage's p95 still looks fine). The search doubles the rate from ``start`` until a stage fails
(or ``maximum`` holds), then bisects between the last good and the first bad rate until they
are within ``precision`` of each other.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agentscale.analysis.figures import Card, figure, reported
from agentscale.config.metrics import SLO_FIGURES
from agentscale.config.units import Comparison, parse_comparison
from agentscale.formatting import num

DROP_LIMIT = 0.001  # share of a stage's arrivals that may be dropped before it fails
RISE_RATIO = 1.5  # last third's median latency over the first's, for a queue building up
RISE_MIN_MS = 25.0  # ... and by at least this much
MIN_TREND_REQUESTS = 30  # fewer sent requests: no trend is judged
KNEE_MIN_RISE = 1.10  # p95 must grow by 10% between levels to count towards the knee
LITTLE_TOLERANCE = 0.25  # in-flight vs rate x latency: a wider gap is named


@dataclass(frozen=True)
class Slo:
    name: str  # a run-level figure of the scorecard (config.metrics.SLO_FIGURES)
    rule: Comparison

    def __str__(self) -> str:
        return f"{self.name} {self.rule}"


def parse_slos(text: str) -> list[Slo]:
    """``latency_p95_ms < 8000, success_rate >= 0.99``: comma-separated figure-rule pairs of
    the scorecard's run-level figures. Raises ValueError naming the part at fault."""
    slos = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, rule = part.partition(" ")
        for op in ("<=", ">=", "==", "!=", "<", ">"):  # also without a space: p95<8000
            if op in name:
                name, _, rest = name.partition(op)
                rule = op + rest + " " + rule
                break
        if name not in SLO_FIGURES:
            near = difflib.get_close_matches(name, sorted(SLO_FIGURES), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ValueError(f"{name!r} is not a run-level figure{hint}")
        try:
            slos.append(Slo(name, parse_comparison(rule.strip())))
        except ValueError:
            raise ValueError(f"{part!r}: write a figure, a comparison and a number, "
                             "e.g. 'latency_p95_ms < 8000'") from None  # fmt: skip
    if not slos:
        raise ValueError("no SLO given")
    return slos


@dataclass(frozen=True)
class Trend:
    """Median latency (from the intended start) in each third of a stage's sent requests, in
    the order they were meant to start."""

    p50_ms: tuple[float, float, float]

    @property
    def rising(self) -> bool:
        first, middle, last = self.p50_ms
        return middle > first and last >= RISE_RATIO * first and last - first >= RISE_MIN_MS

    def describe(self) -> str:
        first, middle, last = (f"{v:,.0f}" for v in self.p50_ms)
        return f"median latency rose through the stage ({first} → {middle} → {last} ms by thirds)"


def trend(offsets: np.ndarray, latency: np.ndarray) -> Trend | None:
    """The trend of the sent requests given by their intended offsets and latencies."""
    known = ~np.isnan(latency)
    if int(known.sum()) < MIN_TREND_REQUESTS:
        return None
    ordered = latency[known][np.argsort(offsets[known], kind="stable")]
    thirds = np.array_split(ordered, 3)
    first, middle, last = (float(np.median(part)) for part in thirds)
    return Trend((first, middle, last))


@dataclass
class StageOutcome:
    passed: bool
    failures: list[str] = field(default_factory=list)  # why it did not hold
    invalid: list[str] = field(default_factory=list)  # why it measured nothing trustworthy


def judge_stage(
    card: Card,
    planned: int,
    slos: list[Slo],
    found_trend: Trend | None,
    problems: list[str],
) -> StageOutcome:
    """Whether a stage held; ``problems``: what made its measurement untrustworthy (the load
    generator fell behind, a fault was not applied, the target was lost)."""
    outcome = StageOutcome(passed=True, invalid=list(problems))
    if not card["requests"]:
        outcome.invalid.append(
            f"no request completed ({card['cancelled']} cancelled at the stage's end)"
            if card["cancelled"]
            else "no request was sent"
        )
    elif not card["successes"]:
        outcome.failures.append("no request succeeded")
    for slo in slos:
        value = figure(card, slo.name)
        if not reported(card, slo.name) or value is None:
            outcome.invalid.append(f"the SLO {slo} cannot be judged: the agent reported no data")
        elif not slo.rule.holds(value):
            outcome.failures.append(f"{slo.name} {num(value)} breaks {slo}")
    dropped = card["dropped"]
    if planned and dropped / planned > DROP_LIMIT:
        outcome.failures.append(
            f"{dropped:,} of {planned:,} arrivals dropped ({dropped / planned:.1%}): every "
            "in-flight slot (load.max_concurrency) was taken"
        )
    if found_trend is not None and found_trend.rising:
        outcome.failures.append(found_trend.describe() + ": a queue building up")
    outcome.passed = not outcome.failures and not outcome.invalid
    return outcome


class Search:
    """The rates to try: doubling from ``start``, then bisection between the last good and the
    first bad rate until ``bad / good <= 1 + precision``."""

    def __init__(self, start: float, maximum: float, precision: float, factor: float = 2.0) -> None:
        self.start, self.maximum = start, maximum
        self.precision, self.factor = precision, factor
        self.good: float | None = None
        self.bad: float | None = None
        self.tried: list[tuple[float, bool]] = []

    def next(self) -> float | None:
        """The next rate, or None when the search is over."""
        if not self.tried:
            return self.start
        if self.bad is None:
            assert self.good is not None
            if self.good >= self.maximum:
                return None
            return min(self.good * self.factor, self.maximum)
        if self.good is None or self.converged:
            return None
        middle = float(f"{(self.good + self.bad) / 2:.4g}")  # rates as people write them
        if not self.good < middle < self.bad or middle in (r for r, _ in self.tried):
            middle = (self.good + self.bad) / 2  # closer than 4 digits tell apart
        if not self.good < middle < self.bad:
            return None  # as close as numbers go: the search is over
        return middle

    @property
    def converged(self) -> bool:
        return (
            self.good is not None
            and self.bad is not None
            and (
                self.bad / self.good <= 1 + self.precision + 1e-9
                or not self.good < (self.good + self.bad) / 2 < self.bad
            )
        )

    def record(self, rate: float, passed: bool) -> None:
        self.tried.append((rate, passed))
        if passed:
            self.good = max(rate, self.good or 0.0)
        else:
            self.bad = rate if self.bad is None else min(rate, self.bad)

    @property
    def result(self) -> str:
        """found (converged), max_reached (--max held) or lowest_failed."""
        if self.good is None:
            return "lowest_failed"
        if self.bad is None:
            return "max_reached"
        return "found"


@dataclass(frozen=True)
class Level:
    """One stage's figures, as the knee and the bottleneck need them."""

    rate: float  # offered requests/s
    p95_ms: float | None
    steps: dict[str, tuple[str, float | None, float]]  # name -> (kind, p95 ms, slowest share)

    @property
    def outside_share(self) -> float:
        """The slowest 5%'s time that no reported step accounts for."""
        return max(0.0, 1.0 - sum(share for _, _, share in self.steps.values()))


def knee(levels: list[Level]) -> Level | None:
    """The lowest level whose p95 rose faster than the rate since the level below it (and by
    at least ``KNEE_MIN_RISE``): where the curve bends."""
    ordered = sorted((v for v in levels if v.p95_ms), key=lambda v: v.rate)
    for below, level in itertools.pairwise(ordered):
        assert below.p95_ms and level.p95_ms
        if level.rate <= below.rate:
            continue
        rise = level.p95_ms / below.p95_ms
        if rise >= KNEE_MIN_RISE and math.log(rise) / math.log(level.rate / below.rate) > 1:
            return level
    return None


@dataclass(frozen=True)
class Bottleneck:
    step: str
    kind: str
    p95_ms: tuple[float | None, float | None]  # at the reference level, at the compared one
    share: tuple[float, float]  # of the slowest 5% of requests
    reference_rps: float
    compared_rps: float
    runner_up: tuple[str, float] | None = None  # a step whose p95 grew nearly as much (ms)

    @property
    def growth_ms(self) -> float:
        before, after = self.p95_ms
        return (after or 0.0) - (before or 0.0)


OUTSIDE = "(outside the reported steps)"
EXPLAINS = 0.5  # a step must account for this much of the end-to-end p95's growth
NEAR = 0.9  # a second step whose growth is within 10% of the first's is named beside it


def bottleneck(reference: Level, compared: Level) -> Bottleneck | None:
    """The step whose p95 grew the most from ``reference`` (the lowest rate) to ``compared``
    (the knee); ties go to the step whose share of the slowest 5% grew the most. When no
    reported step's p95 grew by half as much as the end-to-end p95 and the reported steps
    hold less than half of the slowest 5%'s time at ``compared``, the time outside them is
    named: a queue, lock or pool inside the agent that its trace does not show."""
    if not compared.steps:
        return None  # the agent reports no steps: nothing to name
    found: list[tuple[float, float, Bottleneck]] = []
    for name, (kind, p95, share) in compared.steps.items():
        if p95 is None:
            continue
        _, before, before_share = reference.steps.get(name, (kind, None, 0.0))
        item = Bottleneck(
            name, kind, (before, p95), (before_share, share), reference.rate, compared.rate
        )
        found.append((item.growth_ms, share - before_share, item))
    found.sort(key=lambda entry: (entry[0], entry[1]), reverse=True)
    best = found[0][2] if found else None
    grown = (compared.p95_ms or 0.0) - (reference.p95_ms or 0.0)
    weak = best is None or best.growth_ms < EXPLAINS * grown
    if grown > 0 and weak and compared.outside_share > 0.5:
        return Bottleneck(
            OUTSIDE, "unattributed", (reference.p95_ms, compared.p95_ms),
            (reference.outside_share, compared.outside_share), reference.rate, compared.rate,
        )  # fmt: skip
    if best is not None and len(found) > 1 and best.growth_ms > 0:
        second = found[1][2]
        if second.growth_ms >= NEAR * best.growth_ms:
            best = dataclasses.replace(best, runner_up=(second.step, second.growth_ms))
    return best


SHARED_KINDS = {"llm": "the shared model endpoint", "tool": "a tool", "retrieval": "a store"}


def shared_by_replicas(step: Bottleneck, rate_limited: set[str]) -> str | None:
    """What the replicas share in this bottleneck, in words; None when more replicas add to it
    (a step inside the agent: guardrails, its own queue). ``rate_limited``: the dependencies
    under a rate-limit window, and ``kind:<kind>`` for the kinds among them (a model step's
    name is not its endpoint's)."""
    if step.kind == "llm":
        limited = step.step in rate_limited or "kind:llm" in rate_limited
        limit = ", under a rate limit" if limited else ""
        return f"the shared model endpoint ({step.step}{limit})"
    if step.kind in ("tool", "retrieval"):
        limit = ", under a rate limit" if step.step in rate_limited else ""
        return f"the {step.kind} {step.step}{limit}, which every replica calls"
    return None


LEVERS = {
    "llm": "raise the model endpoint's quota or concurrency (or add a second endpoint), cut "
    "the tokens per request (shorter context, summaries), cache answers, and send simple "
    "steps to a smaller model",
    "tool": "cache its answers (scoped by tenant), give it a timeout and a fallback, batch or "
    "deduplicate calls, or raise its own capacity or quota",
    "retrieval": "cache retrievals, lower top_k or chunk size, or scale the store itself",
}
REPLICA_LEVER = "more replicas: the limit is inside each replica"


def lever(step: Bottleneck, rate_limited: set[str]) -> str:
    if shared_by_replicas(step, rate_limited) is None:
        if step.kind == "unattributed":
            return (
                "raise the agent's own concurrency (its workers, connection pools, locks), or "
                "add replicas: each brings its own"
            )
        return REPLICA_LEVER
    return LEVERS[step.kind]


def replicas_needed(peak_rps: float, headroom: float, sustainable_rps: float) -> int:
    """Replicas for ``peak_rps`` with ``headroom`` (0.3 = 30%) to spare, each holding
    ``sustainable_rps``."""
    return max(1, math.ceil(peak_rps * (1 + headroom) / sustainable_rps - 1e-9))


def littles_law(in_flight: float | None, rate: float, mean_service_ms: float | None) -> str | None:
    """A gap between the in-flight count the engine saw and rate x latency, in words (None
    when they agree, or either is unknown)."""
    if in_flight is None or mean_service_ms is None or rate <= 0:
        return None
    expected = rate * mean_service_ms / 1000
    if max(in_flight, expected) < 2:
        return None  # a handful in flight: sampling alone tells them apart
    if abs(in_flight - expected) <= LITTLE_TOLERANCE * max(in_flight, expected):
        return None
    return (
        f"in flight {in_flight:,.1f} on average, but rate x latency says {expected:,.1f} "
        "(Little's law): the records or the sampling miss something"
    )


def level_of(rate: float, card: Card) -> Level:
    """A stage's card as a level (the agent's unattributed time counts as a step of its own)."""
    shares = card.get("slowest_5pct_share") or {}
    steps: dict[str, tuple[str, float | None, float]] = {
        name: (s["kind"], s["p95_ms"], float(shares.get(name, 0.0)))
        for name, s in (card.get("steps") or {}).items()
    }
    return Level(rate, card.get("latency_p95_ms"), steps)


def as_json(value: Any) -> Any:
    """Floats rounded for capacity.json (NaN as null)."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 3)
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    return value
