"""The scorecard's shape (``scorecard.json``, schema ``agentscale/scorecard/v1``), as types:
what the gate, the report and the terminal read."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NotRequired, TypedDict, cast


class Percentiles(TypedDict):
    p50: float | None
    p95: float | None
    p99: float | None


class StepFigures(TypedDict):
    kind: str
    count: int
    p95_ms: float | None
    mean_ms: float | None


class ToolFigures(TypedDict):
    calls: int
    retries: int | None  # None: the agent reported no attempts for this tool
    retries_per_call: float | None
    outcomes: dict[str, int]
    retry_reasons: dict[str, int]


class RetrievalFigures(TypedDict):
    top_k_mean: float | None
    chunk_tokens_mean: float | None


class GuardrailFigures(TypedDict):
    blocks: dict[str, int]
    redactions: dict[str, int]


class Card(TypedDict):
    """Every figure of one group of requests (the run, a workflow, a window...)."""

    requests: int
    successes: int
    success_rate: float | None
    expected_answer_rate: float | None
    errors: dict[str, int]
    dropped: int
    cancelled: int
    throughput_rps: float | None
    latency_ms: Percentiles
    service_ms: Percentiles
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    input_tokens_mean: float | None
    input_tokens_p95: float | None
    output_tokens_mean: float | None
    output_tokens_p95: float | None
    tool_calls_per_request: float | None
    tool_calls_p50: float | None
    tool_calls_p95: float | None
    retries_per_tool_call: float | None
    cost_usd: float | None
    cost_per_request_usd: float | None
    cost_per_success_usd: float | None
    degraded_share: float | None
    circuit_opens: int | None  # None: the agent reported no events
    fallbacks: int | None
    budget_exhausted: int | None
    steps: dict[str, StepFigures]
    tools: dict[str, ToolFigures]
    retrieval: RetrievalFigures | None
    guardrails: GuardrailFigures | None
    cache_hit_rate: float | None
    slowest_5pct_share: dict[str, float]
    # Streamed answers (None when no answer of the group streamed); from the intended start.
    ttft_p50_ms: NotRequired[float | None]
    ttft_p95_ms: NotRequired[float | None]
    ttfb_p95_ms: NotRequired[float | None]
    inter_event_p50_ms: NotRequired[float | None]  # every gap between events, pooled
    inter_event_p95_ms: NotRequired[float | None]
    inter_event_max_ms: NotRequired[float | None]
    stream_events_mean: NotRequired[float | None]
    coverage: NotRequired[dict[str, int]]  # requests that reported each kind of data
    faults_injected: NotRequired[int]  # a window's "during": responses the HTTP stage made up
    fault_hits: NotRequired[int]  # ... and the requests that met one of them
    # ... an http window's dependency: requests it got while the window was in place, per
    # request sent in the window (amplification), and the 429s of a rate_limit among them.
    dependency_requests: NotRequired[int]
    amplification: NotRequired[float | None]
    rate_limited: NotRequired[int]
    windows: NotRequired[dict[str, WindowTraffic]]  # the overall card: per http window
    bootstrap: NotRequired[dict[str, list[float]]]  # the overall card: replicates per figure
    gated: NotRequired[dict[str, GatedFigure]]  # ...the step and workflow figures the gate reads
    block_s: NotRequired[float]  # ...and the bootstrap's block length


class WindowTraffic(TypedDict):
    """An http window's traffic as the gate compares it with a baseline's."""

    requests: int  # agent requests sent during the window
    dependency_requests: int
    rate_limited: int
    amplification: float | None
    kind: NotRequired[str | None]  # the window's http fault kind (absent in older runs)


class GatedFigure(TypedDict):
    """A step's or workflow's figure as the gate compares it (analysis/gated.py)."""

    scope: str  # step | workflow
    group: str  # the step's or the workflow's name
    kind: str | None  # the step's kind
    figure: str  # p95_ms, error_rate, attempts_per_call, tokens_per_call; success_rate, ...
    value: float
    n: int  # calls (steps) or requests (workflows) it rests on


class GroupStats(TypedDict):
    requests: int
    latency_p95_ms: float | None
    success_rate: float | None


class Fairness(TypedDict):
    tenants: int
    success_rate: float | None
    latency_p95_ms: float | None


class LeakPair(TypedDict):
    tenant: str
    canary_of: str
    responses: int
    first_request_id: str
    excerpt: str | None


class Leakage(TypedDict):
    probed: bool
    responses_checked: int
    leaks: int
    pairs: list[LeakPair]


class NoisyNeighbor(TypedDict, total=False):
    victim: str
    neighbor: str
    first_spike_at_s: float
    before: GroupStats
    during: GroupStats
    p95_increase: float
    success_drop: float


class LoadSide(TypedDict, total=False):
    answers: int
    blocks: int
    blocks_per_answer: float | None
    blocks_expected: float
    redactions: int
    redactions_per_answer: float | None
    redactions_expected: float


class GuardrailsByLoad(TypedDict, total=False):
    levels: list[float]
    note: str
    low: LoadSide
    high: LoadSide


class Budgets(TypedDict):
    requests: int
    max_steps: int | None
    max_tokens: int | None
    max_service_ms: float | None
    exhausted: int
    exhausted_share: float | None
    exhausted_not_degraded: int
    unlabelled_example: str | None


class TenantFigures(TypedDict):
    fairness: Fairness
    leakage: Leakage
    guardrails_by_load: GuardrailsByLoad | None
    budgets: Budgets
    noisy_neighbor: NotRequired[NoisyNeighbor]


class TraceWarnings(TypedDict):
    requests: int  # requests with at least one field the agent sent that could not be used
    examples: list[str]  # the most frequent warnings, with how often they came


class TurnFigures(TypedDict):
    """One turn number of the run's conversations."""

    turn: int
    requests: int  # turns sent (answered or failed)
    success_rate: float | None
    latency_p95_ms: float | None
    ttft_p95_ms: float | None  # streamed answers only
    input_tokens_mean: float | None
    output_tokens_mean: float | None
    cost_per_turn_usd: float | None  # mean spend of this turn
    limits_hit: int | None  # turns that hit a budget or the context window; None: not reported


class ConversationFigures(TypedDict):
    sessions: int  # started, dropped ones included
    dropped: int  # arrivals that found every slot taken (no turn sent)
    complete: int  # every planned turn was sent
    truncated: int  # the run ended, or a turn got no answer, before the last turn
    successful: int  # complete, and every turn succeeded
    success_rate: float | None  # successful over sessions that were not dropped
    turns_mean: float | None  # turns sent per session
    cost_per_successful_conversation_usd: float | None
    input_tokens_per_turn: float | None  # slope of input tokens over the turn number
    first_limit_turn: int | None  # the first turn at which a budget or context limit was hit
    limit: str | None  # which limit that was
    by_turn: list[TurnFigures]


class Scorecard(TypedDict):
    schema: str
    overall: Card
    by_workflow: dict[str, Card]
    by_tenant: dict[str, Card]
    by_phase: dict[str, Card]
    by_window: dict[str, dict[str, Card]]
    tenants: NotRequired[TenantFigures]
    trace_warnings: NotRequired[TraceWarnings]
    notes: NotRequired[list[str]]  # what was done to the records before scoring them
    conversations: NotRequired[ConversationFigures]  # workload.sessions runs


# The data each figure needs from the agent (a key of ``Card.coverage``); figures not named
# here are agentscale's own measurements (latency, success, throughput...).
NEEDS = {
    "ttft_p50_ms": "stream",
    "ttft_p95_ms": "stream",
    "ttfb_p95_ms": "stream",
    "inter_event_p50_ms": "stream",
    "inter_event_p95_ms": "stream",
    "inter_event_max_ms": "stream",
    "stream_events_mean": "stream",
    "input_tokens_mean": "tokens",
    "input_tokens_p95": "tokens",
    "output_tokens_mean": "tokens",
    "output_tokens_p95": "tokens",
    "tool_calls_per_request": "tool_calls",
    "tool_calls_p50": "tool_calls",
    "tool_calls_p95": "tool_calls",
    "retries_per_tool_call": "retries",
    "cost_usd": "cost",
    "cost_per_request_usd": "cost",
    "cost_per_success_usd": "cost",
    "degraded_share": "status",
    "circuit_opens": "events",
    "fallbacks": "events",
    "budget_exhausted": "events",
    "expected_answer_rate": "expect",
    "cache_hit_rate": "cache",
}


def reported(card: Card, name: str) -> bool:
    """Whether any request reported the data behind figure ``name`` (cards written before
    coverage was recorded count as reported)."""
    need = NEEDS.get(name)
    if need is None or "coverage" not in card:
        return True
    return card["coverage"].get(need, 0) > 0


def figure(card: Card, name: str) -> float | None:
    """A run-level figure of ``card`` by name (a gated metric or an SLO's), None if absent."""
    value = cast("Mapping[str, object]", card).get(name)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def replicates(card: Card, name: str) -> list[float]:
    return card.get("bootstrap", {}).get(name, [])


NOT_REPORTED = "not reported"


def shown(card: Card, name: str, render: Callable[[float | None], str]) -> str:
    """Figure ``name`` of ``card`` as text for people: "not reported" when no request carried
    the data behind it (never a 0 that nobody measured)."""
    return render(figure(card, name)) if reported(card, name) else NOT_REPORTED
