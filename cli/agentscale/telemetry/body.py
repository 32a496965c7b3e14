"""Reading the agent trace out of a response body (README "The trace").

The default shape is ``{"output", "status", "trace": {"steps", "events"}}``, with an OpenAI-style
``usage`` block read too; a scenario's ``telemetry`` maps any other shape with JMESPath. Every
value goes through ``telemetry.trace``'s checks. A response without a trace still yields a
``Trace`` with nothing but its body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jmespath
import orjson

from agentscale.config.scenario import Telemetry
from agentscale.telemetry.trace import (
    STATUSES,
    TOKEN_ALIASES,
    Step,
    count,
    read_events,
    read_steps,
    text,
)


@dataclass(slots=True)
class Trace:
    """What a response says about itself. Token totals over the steps are ``PriceBook.tally``'s;
    ``input_tokens``/``output_tokens`` here are request-level figures (telemetry or ``usage``)."""

    body: Any = None
    status: str | None = None
    output: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    steps: list[Step] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    has_trace: bool = False
    warnings: list[str] = field(default_factory=list)  # fields the agent sent that were bad


class TraceReader:
    def __init__(self, telemetry: Telemetry | None) -> None:
        self.mapping = {
            name: jmespath.compile(expression)
            for name, expression in (telemetry.model_dump() if telemetry else {}).items()
            if isinstance(expression, str) and expression
        }

    def read(self, content: bytes) -> Trace:
        result = Trace()
        if content[:1] not in (b"{", b"[") and content.lstrip()[:1] not in (b"{", b"["):
            if content:
                result.output = content.decode("utf-8", "replace")
            return result
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            result.output = content.decode("utf-8", "replace")
            return result
        result.body = body
        if not isinstance(body, dict):
            return result
        _read_contract(result, body)
        if self.mapping:
            self._read_mapped(result, body)
        return result

    def _read_mapped(self, result: Trace, body: dict[str, Any]) -> None:
        """The mapping's expressions over the contract's reading: what they find wins."""
        mapped = {name: expr.search(body) for name, expr in self.mapping.items()}
        warnings = result.warnings
        if "steps" in mapped:
            result.steps = read_steps(mapped["steps"], warnings)
            result.has_trace = True
        if "events" in mapped:
            result.events = read_events(mapped["events"], warnings)
        if "status" in mapped:
            status = mapped["status"]
            result.status = status if status in STATUSES else None
        if "output" in mapped:
            output = mapped["output"]
            result.output = output if isinstance(output, str) else None
        if "model" in mapped:
            result.model = text(mapped["model"])
        if "input_tokens" in mapped and mapped["input_tokens"] is not None:
            result.input_tokens = count(mapped["input_tokens"], "input_tokens", warnings)
        if "output_tokens" in mapped and mapped["output_tokens"] is not None:
            result.output_tokens = count(mapped["output_tokens"], "output_tokens", warnings)


def _read_contract(result: Trace, body: dict[str, Any]) -> None:
    warnings = result.warnings
    trace = body.get("trace")
    if isinstance(trace, dict):
        result.steps = read_steps(trace.get("steps"), warnings)
        result.events = read_events(trace.get("events"), warnings)
        result.has_trace = True
    status = body.get("status")
    result.status = status if status in STATUSES else None
    output = body.get("output")
    result.output = output if isinstance(output, str) else None
    usage = body.get("usage")
    if isinstance(usage, dict):  # OpenAI-style responses name their usage at the top
        tokens = {TOKEN_ALIASES.get(k, k): v for k, v in usage.items() if v is not None}
        if "input_tokens" in tokens:
            result.input_tokens = count(tokens["input_tokens"], "usage.input_tokens", warnings)
        if "output_tokens" in tokens:
            result.output_tokens = count(tokens["output_tokens"], "usage.output_tokens", warnings)
        result.model = text(body.get("model"))
