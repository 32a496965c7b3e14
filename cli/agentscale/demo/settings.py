"""How the demo stack is configured: the profile's policies and where each dependency lives."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from agentscale.demo.resilience import RetryPolicy

DEPENDENCIES = ("llm", "kb_search", "crm_lookup", "billing", "logs_read")
KINDS = {"llm": "llm", "kb_search": "retrieval"}  # the others are tools
READ_ONLY_TOOLS = frozenset({"kb_search", "crm_lookup", "logs_read"})
Profile = Literal["resilient", "naive"]


@dataclass(frozen=True)
class Policy:
    """What the agent does about failure. ``resilient`` is the pattern catalogue; ``naive`` is
    the "before": no breaker, immediate retries up to 5 (each decided by an LLM call), no
    cache, no budgets, no bulkheads, no fallbacks."""

    retry: RetryPolicy
    breaker: bool
    breaker_threshold: int
    breaker_cooldown_s: float
    cache: bool
    cache_ttl_s: dict[str, float]  # per read-only tool: how stale its data may be
    fallbacks: bool
    bulkheads: bool
    tool_concurrency: int  # per tool, across requests
    tenant_concurrency: int  # agent requests in flight per tenant
    bulkhead_wait_s: float
    parallel_tools: int  # independent tool calls of one request at once
    max_steps: int | None
    max_tokens: int | None
    max_seconds: float | None
    runaway_cap: int  # a hard stop even without budgets, so the demo itself never hangs
    # The LLM decides each retry of a failed tool call: every retry costs a model call, so a
    # failing tool multiplies tokens and latency (the naive agent's retry storm).
    replan_on_error: bool = False
    # A conversation's context sent to the model is folded into a recap beyond this many
    # tokens (None: everything is sent, until the model's context window refuses it).
    thread_cap: int | None = None
    # Answers checked before they are trusted (a 200 with garbage is a failed call); without,
    # the agent takes whatever parses, and what does not parse takes it down.
    validate_outputs: bool = False
    # After a 429, calls wait out Retry-After together (client-side limiter) or fall back.
    honour_retry_after: bool = False
    # A streamed answer silent this long is given up (seconds at time scale 1); without, only
    # the call's whole timeout ends it. A stream without its end is refused, too.
    stream_idle_s: float | None = None


RESILIENT = Policy(
    retry=RetryPolicy(attempts=3, base=0.05, cap=0.5, jitter=True),
    breaker=True,
    breaker_threshold=5,
    breaker_cooldown_s=3.0,
    cache=True,
    cache_ttl_s={"kb_search": 30.0, "crm_lookup": 2.0, "logs_read": 5.0},
    fallbacks=True,
    bulkheads=True,
    tool_concurrency=64,
    tenant_concurrency=96,
    bulkhead_wait_s=0.25,
    parallel_tools=4,
    max_steps=14,
    max_tokens=12_000,
    max_seconds=20.0,
    runaway_cap=60,
    thread_cap=600,
    validate_outputs=True,
    honour_retry_after=True,
    stream_idle_s=1.5,
)
NAIVE = replace(
    RESILIENT,
    retry=RetryPolicy(attempts=5, base=0.0, cap=0.0, jitter=False),
    breaker=False,
    cache=False,
    fallbacks=False,
    bulkheads=False,
    parallel_tools=1,
    max_steps=None,
    max_tokens=None,
    max_seconds=None,
    replan_on_error=True,
    thread_cap=None,
    validate_outputs=False,
    honour_retry_after=False,
    stream_idle_s=None,
)
PROFILES: dict[str, Policy] = {"resilient": RESILIENT, "naive": NAIVE}

# Per-attempt timeouts (seconds at time scale 1); they never shrink below these.
LLM_TIMEOUT = 10.0
RATE_LIMIT_PATIENCE = 0.5  # real seconds a call may wait for its turn after a 429
TIMEOUTS = {
    "llm": LLM_TIMEOUT,
    "kb_search": 1.0,
    "crm_lookup": 1.0,
    "billing": 2.0,
    "logs_read": 3.0,
}
TOOL_CONFIG_VERSION = {"kb_search": "v3", "crm_lookup": "v2", "logs_read": "v1"}


@dataclass(frozen=True)
class DemoSettings:
    profile: Profile = "resilient"
    time_scale: float = 1.0
    jitter: float = 0.0  # each service call takes (1 +- jitter) of its time, at random
    host: str = "127.0.0.1"
    port: int = 0  # the agent's port; 0 picks a free one
    # Where the agent sends each dependency's calls; by default straight to the service. A
    # fault proxy goes in between by pointing a route at it.
    routes: dict[str, str] = field(default_factory=dict)
    cache_scope_bug: bool = False  # the leakage probe's target: a cache key without the tenant
    seed: int = 0
    llm_capacity: int | None = None  # completions the mock model serves at once
    # In place of the profile's: bulkheads on/off, per-tenant concurrency, budgets.
    bulkheads: bool | None = None
    tenant_concurrency: int | None = None
    max_steps: int | None = None
    max_tokens: int | None = None
    max_seconds: float | None = None
    telemetry: Literal["body", "otlp", "both"] = "body"  # how the agent reports its trace

    @property
    def policy(self) -> Policy:
        changes: dict[str, object] = {
            name: value
            for name in (
                "bulkheads",
                "tenant_concurrency",
                "max_steps",
                "max_tokens",
                "max_seconds",
            )
            if (value := getattr(self, name)) is not None
        }
        return replace(PROFILES[self.profile], **changes)  # type: ignore[arg-type]

    def scaled(self, seconds: float) -> float:
        return seconds * self.time_scale

    def timeout(self, seconds: float) -> float:
        return seconds * max(self.time_scale, 1.0)
