"""The fault profile schema (README "Faults").

Toxic attributes and their units are Toxiproxy's own: latency, jitter, delays and timeouts in
milliseconds, bandwidth in KB/s, sizes in bytes, the slicer's delay in microseconds.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, ValidationError, field_validator, model_validator

from agentscale.config.fields import ComparisonField, Duration, Fraction, PositiveDuration
from agentscale.config.strict import Strict

# Bounds of what toxiproxy-server takes (it parses attributes as int64 and refuses more with
# HTTP 400), kept to what a fault can sensibly mean: a day of delay, 10 GB/s, 1 GiB slices.
MAX_MILLIS = 86_400_000
MAX_RATE_KBPS = 10_000_000
MAX_SLICE_BYTES = 1 << 30
MAX_SLICE_DELAY_US = 60_000_000
MAX_LIMIT_BYTES = 1 << 62
Millis = Annotated[
    StrictInt, Field(ge=0, le=MAX_MILLIS, description="milliseconds (at most a day)")
]
ADDRESS = re.compile(r"^[A-Za-z0-9.\-]+:[0-9]{1,5}$")


class ToxicBase(Strict):
    stream: Literal["upstream", "downstream"] = Field(
        "downstream", description="downstream: server to client; upstream: client to server"
    )
    toxicity: float = Field(1.0, ge=0, le=1, description="share of connections affected")

    def attributes(self) -> dict[str, Any]:
        return self.model_dump(exclude={"type", "stream", "toxicity"})


class Latency(ToxicBase):
    type: Literal["latency"]
    latency: Millis = Field(description="added delay, ms")
    jitter: Millis = Field(0, description="+/- jitter, ms")


class Bandwidth(ToxicBase):
    type: Literal["bandwidth"]
    rate: StrictInt = Field(ge=0, le=MAX_RATE_KBPS, description="KB/s")


class SlowClose(ToxicBase):
    type: Literal["slow_close"]
    delay: Millis = Field(description="delay before the connection closes, ms")


class Timeout(ToxicBase):
    """With ``stream: upstream`` the request is dropped and the client hangs; downstream,
    Toxiproxy 2.12 closes a new connection at once."""

    type: Literal["timeout"]
    timeout: Millis = Field(description="close after this long, ms; 0 holds the data forever")


class ResetPeer(ToxicBase):
    type: Literal["reset_peer"]
    timeout: Millis = Field(0, description="reset (TCP RST) after this long, ms")


class Slicer(ToxicBase):
    type: Literal["slicer"]
    average_size: StrictInt = Field(ge=1, le=MAX_SLICE_BYTES, description="bytes per slice")
    size_variation: StrictInt = Field(0, ge=0, le=MAX_SLICE_BYTES, description="bytes")
    delay: StrictInt = Field(
        0, ge=0, le=MAX_SLICE_DELAY_US, description="between slices, microseconds"
    )

    @model_validator(mode="after")
    def _variation(self) -> Slicer:
        if self.size_variation >= self.average_size:
            raise ValueError("size_variation must be smaller than average_size")
        return self


class LimitData(ToxicBase):
    type: Literal["limit_data"]
    bytes: StrictInt = Field(
        ge=1, le=MAX_LIMIT_BYTES, description="close the connection after this many bytes"
    )


Toxic = Annotated[
    Latency | Bandwidth | SlowClose | Timeout | ResetPeer | Slicer | LimitData,
    Field(discriminator="type"),
]


HttpKind = Literal[
    "status", "rate_limit", "stream_cut", "stream_stall", "slow_stream", "corrupt", "empty",
    "error_body",
]  # fmt: skip
# The fields each kind takes beside ``kind`` (``rate`` and ``delay``: every kind but rate_limit).
KIND_FIELDS: dict[str, frozenset[str]] = {
    "status": frozenset({"status", "retry_after", "body"}),
    "rate_limit": frozenset({"requests_per_minute", "tokens_per_minute", "per_header"}),
    "stream_cut": frozenset({"after_events", "after_bytes"}),
    "stream_stall": frozenset({"after_events", "stall"}),
    "slow_stream": frozenset({"gap"}),
    "corrupt": frozenset({"corruption"}),
    "empty": frozenset(),
    "error_body": frozenset({"body"}),
}
COMMON_FIELDS = frozenset({"kind", "rate", "delay"})
HEADER_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")  # RFC 9110 token characters


class HttpFault(Strict):
    """Per request, drawn from a seeded generator: the answer the kind makes instead of (or out
    of) the dependency's own. README "Faults" lists each kind's fields, units and defaults."""

    kind: HttpKind = Field("status", description="what the stage does to a chosen request")
    # Counts are strict: YAML's `true` or "2" is not a number of events.
    status: StrictInt = Field(503, ge=400, le=599, description="status: the error status to answer")
    rate: Fraction = Field(
        1.0, ge=0, le=1, description="share of requests that get the fault: 0 to 1, or 25%"
    )
    retry_after: Duration | None = Field(None, description="status: Retry-After header, seconds")
    body: str | None = Field(
        None, max_length=1_000_000, description="status, error_body: the body to answer"
    )
    delay: Duration = Field(0.0, le=3600, description="wait this long before answering")
    requests_per_minute: StrictInt | None = Field(
        None, ge=1, le=10_000_000, description="rate_limit: requests a minute (token bucket)"
    )
    tokens_per_minute: StrictInt | None = Field(
        None,
        ge=1,
        le=10_000_000_000,
        description="rate_limit: model tokens a minute, counted from the request's messages "
        "and the answer's usage (OpenAI-compatible bodies)",
    )
    per_header: str | None = Field(
        None,
        description="rate_limit: one bucket per value of this request header (e.g. a tenant id)",
    )
    after_events: StrictInt | None = Field(
        None, ge=0, le=1_000_000, description="stream_cut, stream_stall: events passed first"
    )
    after_bytes: StrictInt | None = Field(
        None, ge=0, le=1 << 40, description="stream_cut: bytes of the body passed first"
    )
    stall: Duration | None = Field(
        None, gt=0, le=3600, description="stream_stall: how long the stream is held"
    )
    gap: Duration | None = Field(
        None, gt=0, le=600, description="slow_stream: the least time between two events"
    )
    corruption: Literal["truncate", "invalid_json", "wrong_schema"] = Field(
        "invalid_json", description="corrupt: what is done to the body"
    )

    @field_validator("per_header")
    @classmethod
    def _header(cls, value: str | None) -> str | None:
        if value is not None and not HEADER_TOKEN.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a header name (1 to 100 letters, digits or !#$%&'*+.^_`|~-)"
            )
        return value

    @model_validator(mode="after")
    def _fields_of_kind(self) -> HttpFault:
        allowed = KIND_FIELDS[self.kind] | COMMON_FIELDS
        if self.kind == "rate_limit":
            allowed -= {"rate", "delay"}
        stray = sorted(set(self.model_fields_set) - allowed)
        if stray:
            takes = ", ".join(sorted(allowed - {"kind"})) or "nothing else"
            raise ValueError(
                f"{', '.join(stray)}: not a field of kind {self.kind} (it takes {takes})"
            )
        if self.kind == "rate_limit" and not (self.requests_per_minute or self.tokens_per_minute):
            raise ValueError("rate_limit needs requests_per_minute, tokens_per_minute or both")
        if self.kind == "stream_cut" and (self.after_events is None) == (self.after_bytes is None):
            raise ValueError("stream_cut needs one of after_events or after_bytes")
        if self.kind == "stream_stall" and (self.after_events is None or self.stall is None):
            raise ValueError("stream_stall needs after_events and stall")
        if self.kind == "slow_stream" and self.gap is None:
            raise ValueError("slow_stream needs gap")
        return self

    def summary(self) -> str:
        """One line for ``chaos list`` and the terminal."""
        if self.kind == "status":
            return f"http {self.status} at rate {self.rate:g}"
        if self.kind == "rate_limit":
            quota = [
                f"{self.requests_per_minute} requests/min" if self.requests_per_minute else "",
                f"{self.tokens_per_minute} tokens/min" if self.tokens_per_minute else "",
            ]
            per = f" per {self.per_header}" if self.per_header else ""
            return f"rate_limit {' and '.join(q for q in quota if q)}{per} (429)"
        if self.kind == "stream_cut":
            cut = self.after_events if self.after_events is not None else self.after_bytes
            detail = f"after {cut} {'events' if self.after_events is not None else 'bytes'}"
        elif self.kind == "stream_stall":
            detail = f"{self.stall:g}s after {self.after_events} event(s)"
        elif self.kind == "slow_stream":
            detail = f"gaps of {self.gap:g}s"
        elif self.kind == "corrupt":
            detail = self.corruption
        else:
            detail = "200 with no body" if self.kind == "empty" else "200 with an error object"
        return f"{self.kind} ({detail}) at rate {self.rate:g}"


Fault = ToxicBase | HttpFault | Literal["down"]  # what a window puts in place


class RampStep(Strict):
    """A change of the window's toxic attributes, ``at`` from the window's start."""

    at: PositiveDuration
    toxic: dict[str, Any] | None = Field(None, description="toxic attributes to change")
    http: dict[str, Any] | None = Field(None, description="http stage fields to change")


class Window(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    target: str = Field(description="a dependency's name")
    at: Duration = Field(description="start, from the start of the load")
    for_: Annotated[PositiveDuration, Field(alias="for")]
    toxic: Toxic | None = None
    down: bool = Field(False, description="refuse connections (the proxy is disabled)")
    http: HttpFault | None = None
    ramp: list[RampStep] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_fault(self) -> Window:
        chosen = [k for k in ("toxic", "http") if getattr(self, k) is not None] + (
            ["down"] if self.down else []
        )
        if len(chosen) != 1:
            raise ValueError("a window has exactly one of toxic, down: true, or http")
        for i, step in enumerate(self.ramp):
            if step.at >= self.for_:
                raise ValueError(f"ramp.{i}.at: {step.at:g}s is past the window's end")
            if step.toxic is not None and self.toxic is None:
                raise ValueError(f"ramp.{i}.toxic: the window has no toxic to change")
            if step.http is not None and self.http is None:
                raise ValueError(f"ramp.{i}.http: the window has no http fault to change")
        self._check_steps()
        return self

    def _check_steps(self) -> None:
        """Each ramp step's fault, checked as the window's own would be; an error names the
        step's field (``ramp.<i>.http.<field>: ...``, placed there by the error mapper)."""
        base: Fault = self.toxic or self.http or "down"
        if isinstance(base, str):
            return
        section = "toxic" if self.toxic is not None else "http"
        for i in sorted(range(len(self.ramp)), key=lambda k: self.ramp[k].at):
            step = self.ramp[i]
            try:
                base = type(base).model_validate(
                    {**base.model_dump(exclude_unset=True), **(getattr(step, section) or {})}
                )
            except ValidationError as error:
                first = error.errors()[0]
                where = "".join(f".{p}" for p in first["loc"])
                message = first["msg"].removeprefix("Value error, ")
                raise ValueError(f"ramp.{i}.{section}{where}: {message}") from None

    @property
    def end(self) -> float:
        return self.at + self.for_

    def states(self) -> list[tuple[float, Fault]]:
        """(offset from the load's start, fault) for the window's start and each ramp step."""
        base: Fault = self.toxic or self.http or "down"
        out = [(self.at, base)]
        for step in sorted(self.ramp, key=lambda s: s.at):
            if not isinstance(base, str):
                changes = step.toxic if self.toxic is not None else step.http
                base = type(base).model_validate(
                    {**base.model_dump(exclude_unset=True), **(changes or {})}
                )
            out.append((self.at + step.at, base))
        return out


class Dependency(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    upstream: str = Field(description="host:port the dependency really listens on")
    listen: str = Field(description="host:port the agent is configured to call (< 32768)")
    protocol: Literal["tcp", "http"] = "tcp"
    kind: Literal["llm", "tool", "retrieval"] = Field(
        "tool",
        description="what the dependency is: a failure through it is a tool_error or llm_error",
    )

    @field_validator("upstream", "listen")
    @classmethod
    def _address(cls, value: str) -> str:
        if not ADDRESS.match(value):
            raise ValueError(f"{value!r} is not host:port")
        if not 0 < int(value.rsplit(":", 1)[1]) < 65536:
            raise ValueError(f"{value!r}: a port is a number from 1 to 65535")
        return value

    @model_validator(mode="after")
    def _not_itself(self) -> Dependency:
        if self.upstream == self.listen:
            raise ValueError(
                f"{self.name}: upstream and listen are both {self.listen}; the proxy would "
                "call itself (listen is the new address the agent calls instead of upstream)"
            )
        return self

    @field_validator("listen")
    @classmethod
    def _low_port(cls, value: str) -> str:
        port = int(value.rsplit(":", 1)[1])
        if not 0 < port < 32768:
            # Toxiproxy's listen ports belong below Linux's ephemeral range (32768-60999).
            raise ValueError("a listen port must be between 1 and 32767")
        return value


class Expectation(Strict):
    window: str
    success_rate: ComparisonField | None = None
    degraded_share: ComparisonField | None = None
    events: dict[str, ComparisonField] = Field(default_factory=dict)
    recovery: ComparisonField | None = Field(None, description="e.g. '<= 20s'")
    retry_amplification: ComparisonField | None = Field(
        None, description="the agent's tool attempts per request, during over before the window"
    )
    amplification: ComparisonField | None = Field(
        None,
        description="http windows: requests the dependency got per agent request sent in the "
        "window, as the HTTP stage counted them",
    )
    rate_limited: ComparisonField | None = Field(
        None, description="http windows: 429s a rate_limit answered in the window"
    )
    optional: bool = Field(
        False,
        description="a clause whose data the agent never reports is listed as not measured "
        "without making the run inconclusive",
    )


class FaultProfile(Strict):
    api_version: Literal["agentscale/v1"] = Field(alias="apiVersion")
    kind: Literal["FaultProfile"]
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
    description: str | None = None
    seed: int = Field(0, ge=0, lt=2**63, description="seeds the http stage's per-request draws")
    dependencies: list[Dependency] = Field(default_factory=list)
    windows: list[Window] = Field(
        default_factory=list,
        description="none: the dependencies' proxies carry the traffic, no fault (a baseline "
        "measured through the same path as the fault runs)",
    )
    expect: list[Expectation] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names(self) -> FaultProfile:
        windows = [w.name for w in self.windows]
        if len(set(windows)) != len(windows):
            raise ValueError("window names must be unique")
        deps = [d.name for d in self.dependencies]
        if len(set(deps)) != len(deps):
            raise ValueError("dependency names must be unique")
        listens = [d.listen for d in self.dependencies]
        if len(set(listens)) != len(listens):
            raise ValueError("two dependencies listen on the same address")
        return self

    @property
    def last_end(self) -> float:
        return max((w.end for w in self.windows), default=0.0)
