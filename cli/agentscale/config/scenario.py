"""The scenario schema: what to call, with what traffic, judged how."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

import jmespath
import jmespath.exceptions
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, create_model, field_validator

from agentscale.config.fields import ComparisonField, Duration, Fraction, PositiveDuration
from agentscale.config.metrics import METRICS, MIN_REQUESTS
from agentscale.config.shapes import Shape

DEFAULT_REQUIRE = "status != 'error'"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _check_jmespath(expression: str | None) -> str | None:
    if expression is None:
        return None
    try:
        jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as error:
        reason = str(error).splitlines()[0]
        raise ValueError(f"not a valid JMESPath expression ({reason})") from None
    return expression


JMESPath = Annotated[str, Field(description="a JMESPath expression over the response JSON")]


class DemoBudgets(_Strict):
    """Per-request budgets of the demo agent, in place of its profile's."""

    steps: int | None = Field(None, ge=1, description="LLM and tool calls per request")
    tokens: int | None = Field(None, ge=1, description="LLM tokens per request")
    time: PositiveDuration | None = Field(None, description="wall time per request")


class DemoOptions(_Strict):
    profile: Literal["resilient", "naive"] = "resilient"
    time_scale: float = Field(1.0, ge=0)
    bulkheads: bool | None = Field(None, description="per-tenant and per-tool bulkheads on/off")
    tenant_concurrency: int | None = Field(
        None, ge=1, description="agent requests in flight per tenant (bulkheads on)"
    )
    llm_capacity: int | None = Field(
        None, ge=1, description="completions the shared model serves at once; unlimited if absent"
    )
    budgets: DemoBudgets | None = None
    cache_scope_bug: bool = Field(
        False, description="a tool cache keyed without the tenant: a real cross-tenant leak"
    )


class Target(_Strict):
    url: str = Field(description='the agent endpoint, http://host:port/path, or "demo"')
    demo: DemoOptions | None = None
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(
        default_factory=dict, description="${VAR} comes from the environment and is never stored"
    )
    timeout: PositiveDuration = 30.0
    body: Any = Field(
        None,
        description="JSON body; {{tenant}}, {{prompt}}, {{workflow}}, {{request_id}}, {{canary}}",
    )
    allow_remote: bool = Field(False, description="allow a host other than 127.0.0.1/localhost")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value == "demo":
            return value
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL; write http://127.0.0.1:8080/agent")
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""


class Workload(_Strict):
    dataset: str = Field(description="JSONL golden set: prompt, workflow, expect per line")
    workflows: dict[str, PositiveFloat] | None = Field(
        None, description="weights by workflow; every workflow of the dataset, evenly, if absent"
    )


class Load(_Strict):
    model: Literal["open", "closed"] = Field(
        "open", description="open: arrival rate (default); closed: concurrent users"
    )
    shape: Shape
    duration: PositiveDuration
    max_concurrency: int = Field(200, ge=1, le=100_000, description="open model: in-flight cap")
    arrivals: Literal["even", "poisson"] = Field(
        "even", description="open model: evenly spaced arrivals, or a Poisson process"
    )
    think_time: Duration = Field(0.0, description="closed model: pause between a user's requests")
    max_dropped: Fraction = Field(0.01, ge=0, le=1, description="dropped share before invalid")
    max_lag_ms: float = Field(100.0, gt=0, description="scheduling lag p99 before invalid")
    on_worker_loss: Literal["invalid", "continue"] = Field(
        "invalid", description="--workers: a worker that dies makes the run invalid, or not"
    )


class Success(_Strict):
    status: list[Annotated[int, Field(ge=100, le=599)]] | None = Field(
        None, description="HTTP statuses that can succeed; any 2xx if absent"
    )
    require: JMESPath | None = Field(
        DEFAULT_REQUIRE, description="must be true of the response JSON"
    )
    expect: Literal["contains", "exact", "regex", "none"] = Field(
        "contains", description="how the golden set's expected answer is checked"
    )

    _check = field_validator("require")(_check_jmespath)


class Telemetry(_Strict):
    """Where the trace lives in a response of another shape (JMESPath expressions)."""

    output: JMESPath | None = None
    status: JMESPath | None = None
    input_tokens: JMESPath | None = None
    output_tokens: JMESPath | None = None
    model: JMESPath | None = None
    steps: JMESPath | None = None
    events: JMESPath | None = None

    _check = field_validator("*")(_check_jmespath)


class Price(_Strict):
    input_per_mtok: float = Field(ge=0, description="USD per million input tokens")
    output_per_mtok: float = Field(ge=0, description="USD per million output tokens")
    cached_input_per_mtok: float | None = Field(None, ge=0)


class Change(_Strict):
    max_increase: Fraction | None = Field(None, ge=0)
    max_decrease: Fraction | None = Field(None, ge=0)


class GateSettings(_Strict):
    """What ``gates:`` holds besides a tolerance per metric of ``METRICS``."""

    slo: dict[str, ComparisonField] = Field(default_factory=dict)
    min_requests: int = Field(
        MIN_REQUESTS, ge=1, description="fewer requests make a check inconclusive"
    )


if TYPE_CHECKING:
    Gates = GateSettings
else:
    # One field per gated metric, from the one list of them.
    Gates = create_model(
        "Gates",
        __base__=GateSettings,
        **{
            name: (Change | None, Field(None, description=metric.description))
            for name, metric in METRICS.items()
        },
    )


class Tenant(_Strict):
    weight: PositiveFloat = Field(1.0, description="share of load.shape's traffic")
    shape: Shape | None = Field(
        None, description="open model: this tenant's own arrivals, on top of load.shape"
    )
    canary: str | None = Field(
        None,
        min_length=8,
        max_length=200,
        description="a marker planted in this tenant's data; a fresh one per run if absent",
    )


class NoisyNeighbor(_Strict):
    victim: str = Field(description="the tenant that must not suffer")
    neighbor: str = Field(description="the tenant whose own shape spikes")
    max_p95_increase: Fraction = Field(
        0.5, ge=0, description="victim p95 during the neighbour's spikes vs before them"
    )
    max_success_drop: Fraction = Field(0.02, ge=0, le=1, description="absolute drop allowed")


class Fairness(_Strict):
    """Jain's index over the tenants (1 = equal, 1/n = one tenant has everything)."""

    success_rate: ComparisonField | None = None
    latency_p95_ms: ComparisonField | None = None


class GuardrailsUnderLoad(_Strict):
    max_drop: Fraction = Field(
        0.1, ge=0, le=1, description="blocks and redactions per answer, high load vs low"
    )


class BudgetLimits(_Strict):
    max_steps: int | None = Field(None, ge=1, description="LLM, retrieval and tool steps")
    max_tokens: int | None = Field(None, ge=1, description="input plus output tokens")
    max_service_time: PositiveDuration | None = None
    exhausted_share: ComparisonField | None = Field(
        None, description="share of answers that hit a budget, e.g. '>= 0.05'"
    )
    degraded_labelled: bool = Field(
        True, description="a request that hit a budget must answer with status degraded"
    )


class TenantExpectations(_Strict):
    noisy_neighbor: NoisyNeighbor | None = None
    fairness: Fairness | None = None
    guardrails: GuardrailsUnderLoad | None = None
    budgets: BudgetLimits | None = None
    leakage: bool = Field(True, description="the cross-tenant canary probe (2+ tenants)")


def _one_tenant() -> dict[str, float | Tenant]:
    return {"default": 1.0}


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


class Scenario(_Strict):
    api_version: Literal["agentscale/v1"] = Field(alias="apiVersion")
    kind: Literal["Scenario"]
    name: str = Field(pattern=NAME.pattern, description="letters, digits, . _ -")
    description: str | None = None
    seed: int | None = Field(None, description="fixes the request mix and Poisson arrivals")
    target: Target
    workload: Workload
    tenants: dict[str, PositiveFloat | Tenant] = Field(
        default_factory=_one_tenant,
        description="tenant weights, or per tenant {weight, shape, canary}",
    )
    load: Load
    success: Success = Field(default_factory=Success)
    telemetry: Telemetry | None = None
    pricing: dict[str, Price] = Field(default_factory=dict)
    faults: str | None = Field(None, description="a fault profile, relative to this file")
    gates: Gates | None = None
    expect: TenantExpectations | None = None

    def tenant_specs(self) -> dict[str, Tenant]:
        """Every tenant as a ``Tenant`` (a bare number is a weight)."""
        return {
            name: spec if isinstance(spec, Tenant) else Tenant(weight=spec)
            for name, spec in self.tenants.items()
        }
