"""The scenario schema: what to call, with what traffic, judged how."""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

import jmespath
import jmespath.exceptions
import orjson
from pydantic import Field, PositiveFloat, WithJsonSchema, create_model, field_validator

from agentscale.config.fields import ComparisonField, Duration, Fraction, PositiveDuration
from agentscale.config.metrics import (
    METRICS,
    MIN_REQUESTS,
    MIN_STEP_CALLS,
    MIN_WORKFLOW_REQUESTS,
    SLO_FIGURES,
)
from agentscale.config.shapes import Shape
from agentscale.config.strict import Strict
from agentscale.config.template import header_problem

DEFAULT_REQUIRE = "status != 'error'"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: what agentscale reaches without being told."""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_has_non_finite(item) for item in value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    return False


def url_problem(value: str) -> str | None:
    """Why ``value`` is not an http(s) URL agentscale can call, if it is not."""
    if _CONTROL.search(value):
        return "it has a control character (a line break?) in it"
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return "it is not an http(s) URL"
    try:
        _ = parts.port
    except ValueError:
        return "its port is not a number from 1 to 65535"
    if parts.path.startswith("//"):
        # Sent as is, "//agent" reads as a host to some servers; the HTTP client refuses it.
        return "its path starts with // (one slash, as in http://host/agent)"
    return None


HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,200}$")


def _check_jmespath(expression: str | None) -> str | None:
    if expression is None:
        return None
    try:
        jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as error:
        reason = str(error).splitlines()[0]
        raise ValueError(f"not a valid JMESPath expression ({reason})") from None
    except RecursionError:
        raise ValueError("a JMESPath expression nested too deeply to read") from None
    return expression


JMESPath = Annotated[str, Field(description="a JMESPath expression over the response JSON")]


class DemoBudgets(Strict):
    """Per-request budgets of the demo agent, in place of its profile's."""

    steps: int | None = Field(None, ge=1, description="LLM and tool calls per request")
    tokens: int | None = Field(None, ge=1, description="LLM tokens per request")
    time: PositiveDuration | None = Field(None, description="wall time per request")


class DemoOptions(Strict):
    profile: Literal["resilient", "naive"] = "resilient"
    time_scale: float = Field(1.0, ge=0)
    jitter: Fraction = Field(
        0.0, ge=0, le=1, description="each service call takes (1 +- jitter) of its time"
    )
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
    stream: bool = Field(
        False, description="call the streaming endpoint (POST /agent/stream, Server-Sent Events)"
    )
    telemetry: Literal["body", "otlp", "both"] = Field(
        "body",
        description="how the demo agent reports its trace: in the response body, as "
        "OpenTelemetry spans to agentscale's OTLP receiver, or both",
    )


class Target(Strict):
    url: str = Field(description='the agent endpoint, http://host:port/path, or "demo"')
    demo: DemoOptions | None = None
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(
        default_factory=dict, description="${VAR} comes from the environment and is never stored"
    )
    timeout: PositiveDuration = 30.0
    body: Any = Field(
        None,
        description="JSON body; {{tenant}}, {{prompt}}, {{workflow}}, {{request_id}}, {{canary}}; "
        "in conversations also {{session_id}}, {{turn}}, {{thread_id}}, {{history}}",
    )
    allow_remote: bool = Field(False, description="allow a host other than 127.0.0.1/localhost")
    stream: Literal["auto", "sse", "ndjson", "none"] = Field(
        "auto",
        description="how answers stream: Server-Sent Events, NDJSON, not at all, or (auto) as "
        "each answer's Content-Type says",
    )
    stream_idle_timeout: PositiveDuration = Field(
        10.0, description="a streamed answer silent for longer is an error (stream_stall)"
    )
    stream_end: JMESPath | None = Field(
        None, description="true of a stream's final event (besides the built-in end markers)"
    )

    _check_end = field_validator("stream_end")(_check_jmespath)

    @field_validator("body")
    @classmethod
    def _body(cls, value: Any) -> Any:
        try:
            orjson.dumps(value)
        except (TypeError, orjson.JSONEncodeError) as error:
            raise ValueError(f"the body cannot be sent as JSON ({error})") from None
        if _has_non_finite(value):
            raise ValueError("the body holds NaN or infinity, which JSON cannot carry")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a header name (letters, digits, - and _)")
            problem = header_problem(text)
            if problem is not None:
                raise ValueError(f"the value of {name}: {problem}")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value == "demo":
            return value
        problem = url_problem(value)
        if problem:
            raise ValueError(f"{value!r}: {problem}; write http://127.0.0.1:8080/agent")
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""


class TurnRange(Strict):
    min: int = Field(ge=1, le=1000)
    max: int = Field(ge=1, le=1000)

    @field_validator("max")
    @classmethod
    def _order(cls, value: int, info: Any) -> int:
        low = info.data.get("min")
        if low is not None and value < low:
            raise ValueError(f"max ({value}) is below min ({low})")
        return value


_TURN_COUNT = {"type": "integer", "minimum": 1, "maximum": 1000}
_TURNS_SCHEMA = {
    "anyOf": [
        _TURN_COUNT,
        {
            "type": "object",
            "properties": {"min": _TURN_COUNT, "max": _TURN_COUNT},
            "required": ["min", "max"],
            "additionalProperties": False,
        },
        {"type": "null"},
    ]
}


class Sessions(Strict):
    """Multi-turn conversations: an arrival (or a closed-model user's loop) is a session."""

    turns: Annotated[TurnRange | None, WithJsonSchema(_TURNS_SCHEMA)] = Field(
        None,
        description="turns per session: a number, or {min, max} drawn evenly; a conversation "
        "line's own turns if absent",
    )
    think_time: Duration = Field(0.0, description="pause between a session's turns")
    thread_from: JMESPath | None = Field(
        None, description="the thread id in a response ({{thread_id}} in later turns)"
    )
    history: Literal["none", "client"] = Field(
        "none", description="client: earlier turns are sent back as {{history}} (a JSON list)"
    )
    history_max_tokens: int = Field(
        4000,
        ge=1,
        description="the history sent back is cut to its latest whole turns within this many "
        "tokens (4 characters a token)",
    )
    drain: Duration = Field(
        60.0,
        le=3600,
        description="after the load ends, how long conversations under way may begin turns",
    )

    _check = field_validator("thread_from")(_check_jmespath)

    def turns_bounds(self) -> tuple[int, int] | None:
        return (self.turns.min, self.turns.max) if self.turns is not None else None

    @field_validator("turns", mode="before")
    @classmethod
    def _turns(cls, value: Any) -> Any:
        # A number is a range of one: one schema, so an error names one field.
        if isinstance(value, int) and not isinstance(value, bool):
            return {"min": value, "max": value}
        return value


class Workload(Strict):
    dataset: str = Field(
        description="JSONL golden set: prompt, workflow, expect per line (or turns: "
        "[{prompt, expect}] for a conversation)"
    )
    workflows: dict[str, PositiveFloat] | None = Field(
        None, description="weights by workflow; every workflow of the dataset, evenly, if absent"
    )
    sessions: Sessions | None = Field(
        None, description="multi-turn conversations instead of single requests"
    )


class Load(Strict):
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
    on_target_loss: Literal["invalid", "continue"] = Field(
        "invalid",
        description="a target that refuses connections for 5 s makes the run invalid, or not",
    )


class Success(Strict):
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


MAPPED = ("output", "status", "input_tokens", "output_tokens", "model", "steps", "events")


def _check_regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"not a valid regular expression ({error})") from None
    return value


class ErrorIf(Strict):
    attribute: str = Field(description="a span attribute, e.g. gen_ai.tool.call.result")
    matches: str = Field(description="a regular expression: a match marks the step failed")

    _check = field_validator("matches")(_check_regex)


class SpanRule(Strict):
    """How spans that match become steps (before the built-in conventions are tried)."""

    name: str | None = Field(None, description="a regular expression over the span's name")
    attributes: dict[str, str] = Field(
        default_factory=dict, description="attributes the span must carry, with these values"
    )
    kind: Literal["llm", "retrieval", "tool", "guardrail", "ignore"] = Field(
        description="the step kind; ignore drops the span"
    )
    name_from: str | None = Field(None, description="the attribute that names the step")
    model_from: str | None = Field(None, description="the attribute that names the model")
    error_if: ErrorIf | None = Field(
        None, description="a failure the agent swallowed: an attribute's text that means error"
    )

    _check = field_validator("name")(_check_regex)


class Otlp(Strict):
    """agentscale's OTLP/HTTP receiver for the agent's spans (POST /v1/traces)."""

    listen: str = Field(
        "127.0.0.1:0", description="host:port to listen on (port 0: a free one, printed)"
    )
    grace: PositiveDuration = Field(
        5.0, description="how long after the last response spans still count"
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"{value!r} is not host:port; write 127.0.0.1:4318")
        return value


class Telemetry(Strict):
    """Where the trace lives in a response of another shape (JMESPath expressions), and how
    requests carry their trace context."""

    output: JMESPath | None = None
    status: JMESPath | None = None
    input_tokens: JMESPath | None = None
    output_tokens: JMESPath | None = None
    model: JMESPath | None = None
    steps: JMESPath | None = None
    events: JMESPath | None = None
    propagate: Literal["traceparent", "none"] = Field(
        "traceparent",
        description="send a W3C traceparent (and baggage with the request id) on every request",
    )
    default_model: str | None = Field(
        None, description="the model of steps and usage that name none (for pricing)"
    )
    otlp: Otlp | None = Field(None, description="receive the agent's spans over OTLP/HTTP")
    spans: list[SpanRule] = Field(
        default_factory=list, description="rules that turn spans into steps, tried in order"
    )
    prefer: Literal["spans", "body"] = Field(
        "spans",
        description="a request with both spans and a body trace: whose steps are kept",
    )

    _check = field_validator(*MAPPED)(_check_jmespath)

    def mapping(self) -> dict[str, str]:
        """The JMESPath expressions the scenario sets, by what they find."""
        return {name: value for name in MAPPED if isinstance(value := getattr(self, name), str)}


class Price(Strict):
    input_per_mtok: float = Field(ge=0, description="USD per million input tokens")
    output_per_mtok: float = Field(ge=0, description="USD per million output tokens")
    cached_input_per_mtok: float | None = Field(None, ge=0)


class Change(Strict):
    max_increase: Fraction | None = Field(None, ge=0)
    max_decrease: Fraction | None = Field(None, ge=0)


class StepTolerance(Strict):
    """``gates.steps.<name or default>``: how much one step may get worse (unset: the default
    entry's value, else the built-in one, see ``gate/tolerance.py``)."""

    max_increase: Fraction | None = Field(None, ge=0, description="p95 latency, relative")
    min_change_ms: float | None = Field(None, ge=0, description="a p95 change below: noise")
    max_error_rate_increase: Fraction | None = Field(
        None, ge=0, le=1, description="tool steps: failed calls per call, absolute"
    )
    max_attempts_increase: Fraction | None = Field(
        None, ge=0, description="tool steps: attempts per call, relative"
    )
    max_tokens_increase: Fraction | None = Field(
        None, ge=0, description="LLM steps: tokens per call, relative"
    )


class WorkflowTolerance(Strict):
    """``gates.workflows.<name or default>``: how much one workflow may get worse."""

    max_increase: Fraction | None = Field(None, ge=0, description="p95 latency, relative")
    max_success_decrease: Fraction | None = Field(
        None, ge=0, le=1, description="success rate, absolute"
    )
    max_cost_increase: Fraction | None = Field(None, ge=0, description="cost per success, relative")


class GateSettings(Strict):
    """What ``gates:`` holds besides a tolerance per metric of ``METRICS``."""

    slo: dict[str, ComparisonField] = Field(
        default_factory=dict, description="limits on run-level figures: " + ", ".join(
            sorted(SLO_FIGURES))
    )  # fmt: skip

    @field_validator("slo")
    @classmethod
    def _slo_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if name not in SLO_FIGURES:
                near = difflib.get_close_matches(name, sorted(SLO_FIGURES), n=1)
                hint = f"; did you mean {near[0]}?" if near else ""
                raise ValueError(f"{name!r} is not a run-level figure{hint}")
        return value

    min_requests: int = Field(
        MIN_REQUESTS, ge=1, description="fewer requests make a check inconclusive"
    )
    steps: dict[str, StepTolerance] = Field(
        default_factory=dict, description="tolerances per step name; `default` for all"
    )
    workflows: dict[str, WorkflowTolerance] = Field(
        default_factory=dict, description="tolerances per workflow; `default` for all"
    )
    min_step_calls: int = Field(
        MIN_STEP_CALLS,
        ge=20,
        description="a step is checked with at least this many calls in both runs",
    )
    min_workflow_requests: int = Field(
        MIN_WORKFLOW_REQUESTS,
        ge=20,
        description="a workflow is checked with at least this many requests",
    )
    alpha: float = Field(
        0.05, gt=0, lt=0.5, description="family-wise false-alarm level of the baseline checks"
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


class Tenant(Strict):
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


class NoisyNeighbor(Strict):
    victim: str = Field(description="the tenant that must not suffer")
    neighbor: str = Field(description="the tenant whose own shape spikes")
    max_p95_increase: Fraction = Field(
        0.5, ge=0, description="victim p95 during the neighbour's spikes vs before them"
    )
    max_success_drop: Fraction = Field(0.02, ge=0, le=1, description="absolute drop allowed")


class Fairness(Strict):
    """Jain's index over the tenants (1 = equal, 1/n = one tenant has everything)."""

    success_rate: ComparisonField | None = None
    latency_p95_ms: ComparisonField | None = None


class GuardrailsUnderLoad(Strict):
    max_drop: Fraction = Field(
        0.1, ge=0, le=1, description="blocks and redactions per answer, high load vs low"
    )


class BudgetLimits(Strict):
    max_steps: int | None = Field(None, ge=1, description="LLM, retrieval and tool steps")
    max_tokens: int | None = Field(None, ge=1, description="input plus output tokens")
    max_service_time: PositiveDuration | None = None
    exhausted_share: ComparisonField | None = Field(
        None, description="share of answers that hit a budget, e.g. '>= 0.05'"
    )
    degraded_labelled: bool = Field(
        True, description="a request that hit a budget must answer with status degraded"
    )


class TenantExpectations(Strict):
    noisy_neighbor: NoisyNeighbor | None = None
    fairness: Fairness | None = None
    guardrails: GuardrailsUnderLoad | None = None
    budgets: BudgetLimits | None = None
    leakage: bool = Field(True, description="the cross-tenant canary probe (2+ tenants)")


def _one_tenant() -> dict[str, float | Tenant]:
    return {"default": 1.0}


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


class Scenario(Strict):
    api_version: Literal["agentscale/v1"] = Field(alias="apiVersion")
    kind: Literal["Scenario"]
    name: str = Field(pattern=NAME.pattern, description="letters, digits, . _ -")
    description: str | None = None
    seed: int | None = Field(
        None, ge=0, lt=2**63, description="fixes the request mix and Poisson arrivals"
    )
    target: Target
    workload: Workload
    tenants: dict[str, PositiveFloat | Tenant] = Field(
        default_factory=_one_tenant,
        min_length=1,
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
